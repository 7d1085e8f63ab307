/**
 * proxy.close(graceMs) (src/core/runtime.ts): requests in flight and open Upgrade tunnels get the
 * grace to finish; whatever is left when it ends is ended (a 503 ERR_SHUTTING_DOWN if no head went
 * out, else a cut connection; tunnels destroyed) and every backend connection released — close()
 * resolves soon after the grace whatever the backends do. The gateway's drainTimeout relies on it.
 */
import t, { type Test } from 'tap'
import { request } from 'node:http'
import { WebSocket } from 'ws'
import type { Proxy } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { wsBackend } from '../helpers/ws-backend.js'
import { backend, get, proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t)

/** Resolves true if `p` settles within `ms` (a generous bound: the outcome, not the duration, is asserted). */
function settlesWithin (p: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms)
    p.then(() => { clearTimeout(timer); resolve(true) }, () => { clearTimeout(timer); resolve(true) })
  })
}

async function closeWhileHeld (t: Test, proxy: Proxy, url: string, held: () => boolean): Promise<void> {
  const reply = get(`${url}/held`)
  t.ok(await waitFor(held, 5000), 'the request reached the backend')
  const closed = proxy.close(300)
  if (!await settlesWithin(closed, 10_000)) {
    t.fail('close() resolved after its grace though the backend never answered')
    reply.catch(() => {})
    return
  }
  const r = await reply
  t.equal(r.status, 503, 'the client got a 503')
  t.match(r.body.toString(), /ERR_SHUTTING_DOWN/)
  t.equal(proxy.inflight, 0)
}

t.test('HTTP: a backend holding a request does not hold close() past its grace', async (t) => {
  let seen = 0
  const be = await backend(t, () => { seen++ /* never answers */ })
  const { proxy, url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: '60s' } }] })
  await closeWhileHeld(t, proxy, url, () => seen === 1)
})

t.test('FastCGI: a backend holding a request does not hold close() past its grace', async (t) => {
  // A backend that accepts and reads but never answers: a hung php-fpm worker.
  let bytes = 0
  const be = await rawBackend(t, (s) => { s.on('data', (d: Buffer) => { bytes += d.length }) })
  const { proxy, url } = await proxyServer(t, { routes: [{ protocol: 'fastcgi', backends: [be.address], scriptFilename: '/srv/x.php', timeouts: { headers: '60s' }, options: { discovery: false } }] })
  await closeWhileHeld(t, proxy, url, () => bytes > 0)
})

t.test('a response under way when the grace ends is cut, not completed or padded', async (t) => {
  const be = await backend(t, (_req, res) => { res.writeHead(200, { 'content-length': 1000 }); res.write('x'.repeat(10)) })
  const { proxy, url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { idle: '60s' } }] })
  const outcome = new Promise<{ status: number, bytes: number, error: string }>((resolve) => {
    const req = request(`${url}/partial`, { agent: false }, (res) => {
      let bytes = 0
      res.on('data', (c: Buffer) => { bytes += c.length })
      res.on('error', (e) => resolve({ status: res.statusCode ?? 0, bytes, error: e.message }))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, error: '' }))
    })
    req.on('error', (e) => resolve({ status: 0, bytes: 0, error: e.message }))
    req.end()
  })
  t.ok(await waitFor(() => proxy.inflight === 1), 'in flight')
  t.ok(await settlesWithin(proxy.close(300), 10_000), 'close() resolved')
  const o = await outcome
  t.equal(o.status, 200)
  t.ok(o.error !== '', 'the client saw the response cut')
  t.ok(o.bytes < 1000, 'truncated')
})

t.test('a request that finishes within the grace is answered normally, and close() resolves when it does', async (t) => {
  let release: (() => void) | null = null
  const be = await backend(t, (_req, res) => { release = () => res.end('late but fine') })
  const { proxy, url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const reply = get(`${url}/slow`)
  t.ok(await waitFor(() => release !== null), 'held at the backend')
  const closed = proxy.close(30_000)
  // The backend answers during the drain: the client gets it, and close() needs no more of the grace.
  ;(release as unknown as () => void)()
  const r = await reply
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'late but fine')
  t.ok(await settlesWithin(closed, 10_000), 'close() resolved once the last request ended, long before 30 s')
})


function open (url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })
}

function echo (ws: WebSocket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    ws.once('message', (d) => resolve(d.toString()))
    ws.once('close', () => reject(new Error('closed before the echo')))
    ws.send(text)
  })
}

t.test('an open WebSocket keeps working during the grace and is closed when it ends', async (t) => {
  const be = await wsBackend(t, { greet: false })
  const { proxy, port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ws = await open(`ws://127.0.0.1:${port}/chat`)
  ws.on('error', () => {})
  t.teardown(() => { ws.terminate() })
  const wsClosed = new Promise<void>((resolve) => ws.once('close', () => resolve()))
  t.equal(await echo(ws, 'before'), 'before')
  let resolved = false
  const closed = proxy.close(1500).then(() => { resolved = true })
  t.equal(await echo(ws, 'during the drain'), 'during the drain', 'the tunnel still carries messages after close() began')
  t.notOk(resolved, 'close() waits for the tunnel')
  t.ok(await settlesWithin(closed, 10_000), 'close() resolved at the end of the grace')
  t.ok(await settlesWithin(wsClosed, 5000), 'the tunnel was closed then')
})

t.test('close() resolves as soon as the last tunnel ends by itself', async (t) => {
  const be = await wsBackend(t, { greet: false })
  const { proxy, port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ws = await open(`ws://127.0.0.1:${port}/chat`)
  const closed = proxy.close(60_000)
  t.equal(await echo(ws, 'still here'), 'still here')
  const wsClosed = new Promise<void>((resolve) => ws.once('close', () => resolve()))
  ws.close(1000, 'done')
  await wsClosed
  t.ok(await settlesWithin(closed, 10_000), 'close() resolved long before its 60 s grace')
})
