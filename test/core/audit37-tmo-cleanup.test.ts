/**
 * Audit 37: what timeouts leave behind, and how they count.
 *
 * - 200 requests each ended by a timeout (a silent HTTP backend: ERR_HEADERS_TIMEOUT; one that
 *   stalls in its body: ERR_BODY_TIMEOUT, the response cut; a CGI script that never answers): no
 *   timer, socket, fd or child left, the counters at 0; once the proxy and the servers are closed
 *   the handles and timers are those from before (the event loop would empty);
 * - a headers timeout counts against its backend (passive health, `maxFails`), is not sent to the
 *   other backend (GET or POST: `retries` covers resets and closes before any byte, not a late head);
 * - a connect timeout (a loopback listener whose accept queue is full: the SYN is dropped, a fault
 *   no real peer produces on purpose) is 504 ERR_CONNECT_TIMEOUT alone, and retried on the other
 *   backend when there is one;
 * - 0 turns headers and idle off: a silent or stalled backend is still waited for after 5x the
 *   other route's timeout.
 */
import t, { type Test } from 'tap'
import { connect, type Socket } from 'node:net'
import { spawn } from 'node:child_process'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { settled } from '../helpers/counters.js'
import { backend, closeServer, get, proxyServer, rawBackend } from '../helpers/servers.js'
import { captureLogger, fetchRaw, scriptsProxy } from '../cgi/harness.js'

const N = 200
const BATCH = 20

/** Resources the event loop holds, by kind (ref'd timers, sockets, servers, pipes). */
function handles (): Record<string, number> {
  const out: Record<string, number> = {}
  for (const k of process.getActiveResourcesInfo()) if (k !== 'FSReqCallback') out[k] = (out[k] ?? 0) + 1
  return out
}

async function inBatches (n: number, fn: (i: number) => Promise<void>): Promise<void> {
  for (let i = 0; i < n; i += BATCH) await Promise.all(Array.from({ length: Math.min(BATCH, n - i) }, (_, j) => fn(i + j)))
}

t.test('200 head timeouts and 200 body timeouts on HTTP: nothing left, handles back to before', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const before = handles()
  const be = await rawBackend(t, (s: Socket) => {
    s.on('data', (d: Buffer) => {
      if (d.includes('GET /stall ')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf')
    })
  })
  const { logger, lines } = captureLogger()
  const { url, proxy, server } = await proxyServer(t, { logger, routes: [{ protocol: 'http', backends: [be.address], maxFails: 0, timeouts: { headers: '200ms', idle: '200ms' } }] })
  const statuses: number[] = []
  await inBatches(N, async () => { statuses.push((await fetchRaw(`${url}/silent`)).status) })
  t.same([...new Set(statuses)], [504], '504 each')
  const cut: boolean[] = []
  await inBatches(N, async () => { const r = await fetchRaw(`${url}/stall`); cut.push(r.status === 200 && !r.complete && r.body.toString() === 'half') })
  t.equal(cut.filter(Boolean).length, N, 'each body cut after its 4 bytes')
  t.equal(lines.filter((l) => l.obj.code === 'ERR_HEADERS_TIMEOUT').length, N, 'each head timeout logged')
  t.equal(lines.filter((l) => l.obj.code === 'ERR_BODY_TIMEOUT').length, N, 'each body timeout logged')
  t.ok(await settled(proxy), 'counters at 0')
  t.ok(await waitFor(() => be.sockets.every((s) => s.destroyed), 10_000), 'every backend connection closed')
  await closeServer(server)
  await proxy.close(1000)
  await closeServer(be.server)
  let now: Record<string, number> = {}
  const same = await waitFor(() => { now = handles(); return JSON.stringify(Object.entries(now).sort()) === JSON.stringify(Object.entries(before).sort()) }, 10_000)
  t.ok(same, 'the same handles and timers as before', { before, now })
})

t.test('200 CGI scripts that never answer: 504 each, no process, fd or timer left', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const p = await scriptsProxy(t, { 'mute.sh': '#!/bin/sh\nexec sleep 60\n' }, { timeouts: { headers: '300ms' } })
  const statuses: number[] = []
  await inBatches(N, async () => { statuses.push((await fetchRaw(`${p.url}/c/mute.sh`)).status) })
  t.same([...new Set(statuses)], [504], '504 each')
  t.equal(p.lines.filter((l) => l.obj.code === 'ERR_HEADERS_TIMEOUT').length, N, 'each logged')
  t.ok(await waitFor(() => p.manager.status().every((s) => (s as { running?: number }).running === undefined || (s as { running?: number }).running === 0), 15_000), 'no script still running')
})

async function mute (t: Test, got: string[]) {
  return rawBackend(t, (s: Socket) => { s.on('data', (d: Buffer) => { if (d.includes('\r\n\r\n')) got.push(`${s.localPort} ${d.toString('latin1').split(' ')[0]}`) }) })
}

t.test('a headers timeout counts against the backend, GET and POST go to one backend only', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const got: string[] = []
  const b1 = await mute(t, got)
  const b2 = await mute(t, got)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [b1.address, b2.address], maxFails: 2, disableTime: '60s', timeouts: { headers: '300ms' } }] })
  for (const method of ['GET', 'POST', 'GET', 'POST']) {
    const r = await get(`${url}/x`, method === 'POST' ? { method, body: 'abc' } : {})
    t.equal(r.status, 504, `${method}: 504`)
  }
  t.equal(got.length, 4, 'each request sent once', { got })
  t.ok(await settled(proxy))
  const states = proxy.routes[0].pool.backends.map((b) => b.state).sort()
  t.same(states, ['disabled', 'up'], 'the backend with 2 timeouts is skipped (never the last one)', { got })
})

/** A loopback listener that never accepts, its accept queue filled: connects to it hang. */
async function fullBacklog (t: Test): Promise<number> {
  const py = spawn('python3', ['-c', 'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()'], { stdio: ['pipe', 'pipe', 'inherit'] })
  const exited = new Promise<void>((resolve) => py.once('exit', () => resolve()))
  t.teardown(async () => { py.stdin.end(); await exited })
  const port = await new Promise<number>((resolve) => py.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))))
  // Fill the queue: these connect (the kernel completes them), later ones wait for a SYN-ACK.
  const fillers: Socket[] = []
  t.teardown(() => { for (const s of fillers) s.destroy() })
  for (let i = 0; i < 4; i++) {
    const s = connect({ host: '127.0.0.1', port })
    s.on('error', () => {})
    fillers.push(s)
  }
  await waitFor(() => fillers.filter((s) => !s.connecting).length >= 1, 5000)
  return port
}

t.test('connect timeout: 504 ERR_CONNECT_TIMEOUT, and retried on another backend', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const port = await fullBacklog(t)
  const { logger, lines } = captureLogger()
  const alone = await proxyServer(t, { logger, routes: [{ protocol: 'http', backends: [`127.0.0.1:${port}`], timeouts: { connect: '300ms' } }] })
  const started = Date.now()
  const r = await get(`${alone.url}/x`)
  t.equal(r.status, 504)
  t.match(r.body.toString(), /ERR_CONNECT_TIMEOUT/)
  t.ok(Date.now() - started >= 250, 'after the connect timeout')
  t.ok(lines.some((l) => l.obj.code === 'ERR_CONNECT_TIMEOUT'), 'logged')
  const good = await backend(t, (_req, res) => { res.end('good') })
  const two = await proxyServer(t, { routes: [{ protocol: 'http', backends: [`127.0.0.1:${port}`, good.address], balance: 'round-robin', timeouts: { connect: '300ms' } }] })
  for (let i = 0; i < 2; i++) {
    const r2 = await get(`${two.url}/x`)
    t.equal(r2.status, 200, 'answered by the other backend')
    t.equal(r2.body.toString(), 'good')
  }
})

t.test('0 turns headers and idle off', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const be = await rawBackend(t, (s: Socket) => {
    s.on('data', (d: Buffer) => { if (d.includes('/stall')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf') })
  })
  const { url, port, proxy } = await proxyServer(t, {
    routes: [
      { match: { prefix: '/short' }, protocol: 'http', backends: [be.address], timeouts: { headers: '200ms', idle: '200ms' } },
      { match: { prefix: '/off' }, protocol: 'http', backends: [be.address], timeouts: { headers: 0, idle: '0s' } },
    ],
  })
  // Raw clients: what they got so far is readable, and they leave at the end.
  const clients = ['/off/silent', '/off/stall'].map((path) => {
    const s = connect({ host: '127.0.0.1', port })
    const c = { raw: '', closed: false, s }
    s.on('data', (d: Buffer) => { c.raw += d.toString('latin1') })
    s.on('error', () => {})
    s.on('close', () => { c.closed = true })
    s.write(`GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`)
    return c
  })
  t.ok(await waitFor(() => proxy.routes[1].pool.inflight === 2 && clients[1].raw.includes('half'), 10_000), 'both sent, the stalled body started')
  // The short route's timeouts fire meanwhile (the sweep runs), five times over.
  for (let i = 0; i < 5; i++) {
    t.equal((await fetchRaw(`${url}/short/silent`)).status, 504)
    t.notOk((await fetchRaw(`${url}/short/stall`)).complete)
  }
  t.equal(clients[0].raw, '', 'the silent backend is still waited for')
  t.ok(clients[1].raw.endsWith('\r\n\r\nhalf') && !clients[1].closed, 'the stalled body is not cut')
  t.equal(proxy.routes[1].pool.inflight, 2, 'both exchanges still with their backend')
  for (const c of clients) c.s.destroy()
  t.ok(await settled(proxy), 'freed once the clients leave')
})
