/**
 * Upgrade tunnels (src/core/upgrade.ts) beyond the happy path: the head timeout, a client that
 * leaves before the 101, a plain answer instead of a 101 (backpressure, truncation), half-close in
 * both directions, the tunnel idle timeout, failover on connect failures, waiting for an on-demand
 * spawn, and the request
 * events and route counters. Real `ws` clients and servers and node:http backends where they can
 * show it; raw TCP only for the faults and the byte-level checks a real peer cannot make.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import { WebSocket } from 'ws'
import type { Proxy, RequestEndEvent, RequestStartEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { deadPort } from '../helpers/ports.js'
import { wsBackend } from '../helpers/ws-backend.js'
import { backend, get, proxyServer, rawBackend, upgradeBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

interface Tap { teardown (fn: () => unknown): void }

const UPGRADE = (path: string, protocol = 'websocket'): string =>
  `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\nSec-WebSocket-Version: 13\r\n` +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'
const SWITCHED = 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
  'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n'

/** A raw client: what it got, whether it got a FIN, how its socket ended. */
class RawClient {
  readonly sock: Socket
  private readonly chunks: Buffer[] = []
  bytes = 0
  fin = false
  error: string | null = null
  readonly closed: Promise<void>

  constructor (t: Tap, port: number, first: string, allowHalfOpen = false) {
    this.sock = connect({ host: '127.0.0.1', port, allowHalfOpen })
    this.sock.on('data', (d: Buffer) => { this.chunks.push(d); this.bytes += d.length })
    this.sock.on('end', () => { this.fin = true })
    this.sock.on('error', (e: NodeJS.ErrnoException) => { this.error = e.code ?? e.message })
    this.closed = new Promise((resolve) => this.sock.once('close', () => resolve()))
    this.sock.write(first)
    t.teardown(() => { this.sock.destroy() })
  }

  get text (): string { return Buffer.concat(this.chunks).toString('latin1') }
  /** What came after the response head. */
  get after (): string { const s = this.text; const i = s.indexOf('\r\n\r\n'); return i < 0 ? '' : s.slice(i + 4) }
}

function record (proxy: Proxy): { starts: RequestStartEvent[], ends: RequestEndEvent[] } {
  const starts: RequestStartEvent[] = []
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:start', (e) => starts.push(e))
  proxy.events.on('request:end', (e) => ends.push(e))
  return { starts, ends }
}


function openWs (url: string): Promise<{ ws: WebSocket, first: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.once('message', (d) => resolve({ ws, first: d.toString() }))
    ws.once('error', reject)
  })
}

function closeWs (ws: WebSocket): Promise<void> {
  return new Promise((resolve) => { ws.once('close', () => resolve()); ws.close() })
}

async function deadAddress (): Promise<string> {
  return `127.0.0.1:${await deadPort()}`
}

t.test('a backend that never answers the Upgrade: 504 ERR_HEADERS_TIMEOUT after timeouts.headers, slot and connection released', async (t) => {
  const ended: boolean[] = []
  // Answers plain requests; reads an Upgrade and never answers it.
  const be = await rawBackend(t, (s) => {
    const i = ended.push(false) - 1
    s.on('end', () => { ended[i] = true })
    s.once('data', (d: Buffer) => {
      s.resume()
      if (!/\r\nupgrade:/i.test(d.toString('latin1'))) s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok')
    })
  })
  const { port, url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: 300 }, maxConcurrent: 1, queue: 0 }] })
  const ev = record(proxy)
  const t0 = Date.now()
  const c = new RawClient(t, port, UPGRADE('/ws'))
  await c.closed
  const ms = Date.now() - t0
  t.match(c.text, /^HTTP\/1\.1 504 /, c.text)
  t.ok(ms >= 250 && ms < 3000, `answered after ${ms} ms`)
  t.ok(await waitFor(() => ended[0], 2000), 'the backend connection was closed')
  t.equal(proxy.routes[0].admission.active, 0, 'the admission slot is free')
  t.equal((await get(`${url}/plain`)).status, 200, 'a request on the same route (maxConcurrent 1, queue 0) is served')
  t.match(ev.ends.find((e) => e.url === '/ws'), { status: 504, error: 'ERR_HEADERS_TIMEOUT', backend: be.address, headMs: -1, bytesOut: 0 })
  t.equal(ev.starts.filter((e) => e.url === '/ws').length, 1, 'request:start too')
  const refused = await openWs(`ws://127.0.0.1:${port}/ws`).then(({ ws }) => { ws.terminate(); return 'opened' }, (err: Error) => err.message)
  t.match(refused, /504/, 'a ws client sees the 504')
  t.equal(proxy.routes[0].stats.errors, 2, 'counted as route errors')
})

t.test('a client that leaves before the 101 is noticed at once: backend connection closed, slot released, a late 101 makes no tunnel', async (t) => {
  for (const how of ['FIN', 'close'] as const) {
    let backendSawFin = false
    let late = false
    const be = await rawBackend(t, (s) => {
      s.once('data', () => {
        s.on('end', () => { backendSawFin = true })
        s.resume()
        // 2 s late: the FIN gets 1.5 s (it had 300 ms, which a loaded 2-core machine can exceed).
        setTimeout(() => { late = true; if (!s.destroyed) s.write(SWITCHED) }, 2000)
      })
    })
    const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 0 }] })
    const ev = record(proxy)
    const c = new RawClient(t, port, UPGRADE('/ws'), true)
    t.ok(await waitFor(() => be.sockets.length === 1, 2000), 'the backend got the upgrade')
    if (how === 'FIN') c.sock.end()
    else c.sock.destroy()
    t.ok(await waitFor(() => backendSawFin, 1500), `${how}: the backend connection is closed at once`)
    t.notOk(late, 'before the backend answered')
    t.equal(proxy.routes[0].admission.active, 0, `${how}: the slot is free`)
    t.match(ev.ends, [{ url: '/ws', status: 499, error: 'ERR_CLIENT_ABORTED', backend: be.address }])
    await waitFor(() => late, 4000)
    await new Promise((resolve) => setTimeout(resolve, 50))
    t.equal(ev.ends.length, 1, 'the late 101 makes no tunnel')
    t.notMatch(c.text, /101/)
  }
})

t.test('what the client sends before the 101 reaches the backend after it, in order, behind node\'s head', async (t) => {
  const be = await upgradeBackend(t, (_req, socket) => {
    setTimeout(() => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n')
      socket.on('data', (d: Buffer) => socket.write(d))
      socket.on('end', () => socket.end())
    }, 200)
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const c = new RawClient(t, port, `${UPGRADE('/echo', 'echo')}A`)
  setTimeout(() => c.sock.write('B'), 50)
  setTimeout(() => c.sock.write('C'), 100)
  t.ok(await waitFor(() => c.after === 'ABC', 3000), `echoed: ${JSON.stringify(c.after)}`)
  t.match(c.text, /^HTTP\/1\.1 101 /)
  c.sock.write('D')
  t.ok(await waitFor(() => c.after === 'ABCD', 2000), 'and the tunnel goes on')
})

t.test('a plain answer instead of a 101: passed on whole, with its Content-Length, the connection closed', async (t) => {
  const be = await backend(t, (_req, res) => res.end('plain')) // no 'upgrade' listener: node answers it as a request
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ev = record(proxy)
  const c = new RawClient(t, port, UPGRADE('/x'))
  await c.closed
  t.match(c.text, /^HTTP\/1\.1 200 OK\r\n/)
  t.match(c.text, /\r\ncontent-length: 5\r\n/i)
  t.match(c.text, /\r\nconnection: close\r\n/i)
  t.notMatch(c.text, /\r\nupgrade:/i)
  t.equal(c.after, 'plain')
  t.ok(c.fin, 'ended cleanly')
  t.match(ev.ends, [{ status: 200, error: null, bytesOut: 5, backend: be.address }])
  t.ok(ev.ends[0].headMs >= 0)
  const refused = await openWs(`ws://127.0.0.1:${port}/x`).then(({ ws }) => { ws.terminate(); return 'opened' }, (err: Error) => err.message)
  t.match(refused, /200/, 'a ws client is refused with it')
})

t.test('a plain answer to a client that does not read is bounded: the backend is paused, then the body arrives whole', async (t) => {
  const TOTAL = 64 * 1024 * 1024
  let written = 0
  const be = await backend(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': TOTAL })
    const chunk = Buffer.alloc(64 * 1024, 'x')
    const pump = (): void => {
      while (written < TOTAL) {
        written += chunk.length
        if (!res.write(chunk)) { res.once('drain', pump); return }
      }
      res.end()
    }
    pump()
  })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ev = record(proxy)
  const c = new RawClient(t, port, UPGRADE('/big'))
  c.sock.pause()
  let last = -1
  // Wait until the backend is stuck (nothing more written for 300 ms).
  for (let i = 0; i < 50 && written !== last; i++) { last = written; await new Promise((resolve) => setTimeout(resolve, 300)) }
  t.ok(written < TOTAL / 2, `the backend wrote ${(written / 2 ** 20).toFixed(1)} MiB of ${TOTAL / 2 ** 20} while the client read nothing`)
  c.sock.resume()
  await c.closed
  const text = c.text
  t.match(text, /^HTTP\/1\.1 200 OK\r\n[^]*\r\ncontent-length: 67108864\r\n/i)
  t.equal(c.bytes - (text.indexOf('\r\n\r\n') + 4), TOTAL, 'the whole body once the client reads')
  t.match(ev.ends, [{ status: 200, error: null, bytesOut: TOTAL }])
})

t.test('the status line and fields of an upgrade answer: backend bytes passed as they came, a control character refused', async (t) => {
  // Raw bytes a real server may send: a latin1 field value (obs-text) and a UTF-8 reason phrase.
  const be = await rawBackend(t, (s) => {
    let got = ''
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1')
      if (!got.includes('\r\n\r\n')) return
      if (got.startsWith('GET /ctl')) s.end(Buffer.from('HTTP/1.1 401 Unauth\x01orized\r\nContent-Length: 0\r\n\r\n', 'latin1'))
      else if (got.startsWith('GET /plain')) s.end(Buffer.concat([Buffer.from('HTTP/1.1 403 '), Buffer.from('Verboten – nein', 'utf8'), Buffer.from('\r\nX-Name: caf\xe9\r\nContent-Length: 2\r\n\r\nno', 'latin1')]))
      else s.write(Buffer.from('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Name: caf\xe9\r\n\r\n', 'latin1'))
    })
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })

  const tunnel = new RawClient(t, port, UPGRADE('/up', 'echo'))
  t.ok(await waitFor(() => tunnel.text.includes('\r\n\r\n'), 3000))
  t.match(tunnel.text, /^HTTP\/1\.1 101 [^]*\r\nX-Name: caf\xe9\r\n/i, '101: the latin1 byte as it came, not UTF-8-encoded')

  const plain = new RawClient(t, port, UPGRADE('/plain', 'echo'))
  await plain.closed
  const utf8 = Buffer.from('Verboten – nein', 'utf8').toString('latin1')
  t.ok(plain.text.startsWith(`HTTP/1.1 403 ${utf8}\r\n`), 'a plain answer: the reason phrase\'s bytes as they came')
  t.match(plain.text, /\r\nX-Name: caf\xe9\r\n/i, 'and its fields\' bytes')

  const ctl = new RawClient(t, port, UPGRADE('/ctl', 'echo'))
  await ctl.closed
  t.match(ctl.text, /^HTTP\/1\.1 502 /, 'a control character in the reason phrase: 502, never written to the client')
  t.notMatch(ctl.text, /\x01/)
})

t.test('a plain answer cut by the backend: the client connection is reset, never padded with a second response', async (t) => {
  const cases: Array<[string, (s: Socket) => void, string]> = [
    ['reset after 10 of 100 bytes', (s) => {
      s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n0123456789')
      setTimeout(() => s.resetAndDestroy(), 100)
    }, 'ERR_BACKEND_RESET'],
    ['chunked, FIN inside a chunk', (s) => {
      s.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n64\r\nabc')
    }, 'ERR_BACKEND_CLOSED'],
  ]
  for (const [name, answer, code] of cases) {
    const be = await rawBackend(t, (s) => { s.once('data', () => answer(s)) })
    const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
    const ev = record(proxy)
    const c = new RawClient(t, port, UPGRADE('/x'))
    await c.closed
    t.equal(c.text.match(/HTTP\/1\.1 /g)?.length, 1, `${name}: one status line`)
    t.match(c.after, /^0123456789/, `${name}: what the backend sent`)
    t.notMatch(c.after, /HTTP/, `${name}: nothing of the proxy's own`)
    t.equal(c.error, 'ECONNRESET', `${name}: the client sees a reset, not a clean end (the body ends with the connection)`)
    t.notOk(c.fin)
    t.match(ev.ends, [{ status: 200, error: code }], name)
  }
})

t.test('the tunnel carries a half-close in both directions (a generic Upgrade protocol)', async (t) => {
  const got: string[] = []
  let mode: 'A' | 'B' = 'A'
  const be = await upgradeBackend(t, (_req, socket) => {
    let data = ''
    socket.on('data', (d: Buffer) => { data += d.toString() })
    socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n')
    if (mode === 'A') {
      setTimeout(() => socket.end('bye'), 100) // FIN first, still reading
      socket.on('end', () => got.push(data))
    } else {
      socket.on('end', () => { got.push(data); socket.end(`resp:${data}`) })
    }
  })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ev = record(proxy)

  // A: the backend ends first; the client still talks, then ends.
  const a = new RawClient(t, port, UPGRADE('/a', 'echo'), true)
  t.ok(await waitFor(() => a.fin, 2000), 'A: the backend FIN reaches the client')
  t.equal(a.after, 'bye')
  a.sock.end('late')
  await a.closed
  t.ok(await waitFor(() => got.length === 1, 2000))
  t.equal(got[0], 'late', 'A: the client→backend direction still flowed after the backend FIN')
  t.ok(await waitFor(() => ev.ends.length === 1, 2000), 'A: the tunnel ends once both sides closed')
  t.match(ev.ends[0], { url: '/a', status: 101, error: null, bytesOut: 3 })

  // B: the client ends first; the backend answers after seeing it.
  mode = 'B'
  const b = new RawClient(t, port, UPGRADE('/b', 'echo'), true)
  t.ok(await waitFor(() => b.text.includes('\r\n\r\n'), 2000))
  b.sock.end('req')
  await b.closed
  t.equal(b.after, 'resp:req', 'B: the answer to a half-closed client arrives')
  t.ok(b.fin)
  t.ok(await waitFor(() => ev.ends.length === 2, 2000))
  t.match(ev.ends[1], { url: '/b', status: 101, error: null, bytesOut: 8 })
  t.equal(proxy.routes[0].admission.active, 0)
})

t.test('a half-closed tunnel whose other side never ends is closed after timeouts.idle without a byte', async (t) => {
  let backendSawFin = false
  const be = await upgradeBackend(t, (_req, socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n')
    socket.on('end', () => { backendSawFin = true }) // and never ends its own side
    socket.resume()
  })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { idle: 300 } }] })
  const ev = record(proxy)
  const c = new RawClient(t, port, UPGRADE('/i', 'echo'), true)
  t.ok(await waitFor(() => c.text.includes('\r\n\r\n'), 2000))
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.equal(ev.ends.length, 0, 'an open tunnel has no idle timeout')
  const t0 = Date.now()
  c.sock.end()
  t.ok(await waitFor(() => backendSawFin, 1000), 'the FIN reaches the backend')
  t.ok(await waitFor(() => ev.ends.length === 1, 3000), 'the tunnel is closed')
  const ms = Date.now() - t0
  t.ok(ms >= 250, `after ${ms} ms`)
  t.match(ev.ends[0], { status: 101, error: null })
  await c.closed
  t.equal(proxy.routes[0].admission.active, 0)
})

t.test('a tunnel that carries no byte either way for timeouts.tunnel is closed; one in use stays open', async (t) => {
  const be = await wsBackend(t, { greet: false })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { tunnel: 1000 } }] })
  const ev = record(proxy)
  const ws = new WebSocket(`ws://127.0.0.1:${port}/t`)
  ws.on('error', () => {})
  t.teardown(() => { ws.terminate() })
  await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
  // A message each 100 ms (in one direction or the other, the echo), for five times the timeout:
  // a pause must be 10x that long to reach the timeout (at 400 ms, a loaded machine's 4x could).
  for (let i = 0; i < 50; i++) {
    ws.send(`m${i}`)
    await new Promise<void>((resolve) => ws.once('message', () => resolve()))
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.equal(ev.ends.length, 0, 'a tunnel in use is not closed')
  t.equal(ws.readyState, WebSocket.OPEN)
  // Then silence: both sides are closed (no close frame: the proxy does not speak WebSocket).
  t.equal(await closed, 1006, 'the client connection was closed')
  t.ok(await waitFor(() => ev.ends.length === 1, 3000), 'request:end')
  t.match(ev.ends[0], { url: '/t', status: 101, error: null })
  t.ok(await waitFor(() => be.sockets[0]?.readyState === WebSocket.CLOSED, 3000), 'the backend connection was closed too')
  t.equal(proxy.routes[0].admission.active, 0, 'its slot is free')
})

t.test('WebSocket close codes and resets still propagate through the half-closing tunnel', async (t) => {
  const be = await wsBackend(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ev = record(proxy)
  const { ws, first } = await openWs(`ws://127.0.0.1:${port}/c`)
  t.equal(first, 'hello /c')
  await closeWs(ws)
  t.ok(await waitFor(() => ev.ends.length === 1, 2000), 'a closed WebSocket ends its tunnel')
  t.match(ev.ends[0], { status: 101, error: null, backend: be.address })
  t.ok(ev.ends[0].bytesOut >= 'hello /c'.length + 2, `bytesOut ${ev.ends[0].bytesOut}: the frames the backend sent`)

  const second = await openWs(`ws://127.0.0.1:${port}/d`)
  const closed = new Promise<number>((resolve) => second.ws.once('close', (code) => resolve(code)))
  ;(be.sockets[1] as unknown as { _socket: Socket })._socket.resetAndDestroy()
  t.equal(await closed, 1006, 'a backend reset closes the client abnormally')
  t.ok(await waitFor(() => ev.ends.length === 2, 2000))
  t.match(ev.ends[1], { status: 101, error: 'ERR_BACKEND_RESET' })
  t.equal(proxy.routes[0].admission.active, 0)
})

t.test('failover: a connect failure is retried on an untried backend, up to retries', async (t) => {
  const live = await wsBackend(t)
  const dead = await deadAddress()
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [dead, live.address], balance: 'round-robin', retries: 2, disableTime: '30s' }] })
  const ev = record(proxy)
  const { ws, first } = await openWs(`ws://127.0.0.1:${port}/f`)
  t.equal(first, 'hello /f', 'tunnelled to the live backend')
  t.equal(proxy.routes[0].pool.backends.find((b) => b.endpoint.id === dead)?.state, 'disabled', 'the dead backend is disabled')
  await closeWs(ws)
  t.ok(await waitFor(() => ev.ends.length === 1, 2000))
  t.match(ev.ends[0], { status: 101, backend: live.address, error: null })

  const only = await proxyServer(t, { routes: [{ protocol: 'http', backends: [dead], retries: 0 }] })
  const ev2 = record(only.proxy)
  const c = new RawClient(t, only.port, UPGRADE('/g'))
  await c.closed
  t.match(c.text, /^HTTP\/1\.1 502 /, 'the only backend refuses: 502')
  t.match(ev2.ends, [{ status: 502, error: 'ERR_CONNECT_REFUSED', backend: dead }])
  const again = new RawClient(t, only.port, UPGRADE('/g'))
  await again.closed
  t.match(again.text, /^HTTP\/1\.1 502 /, 'a sole backend is tried again, not skipped for disableTime')
  t.match(ev2.ends[1], { status: 502, error: 'ERR_CONNECT_REFUSED' })
})

t.test('failover: an upgrade that reached a backend is never sent to another', async (t) => {
  // Reads the request and closes without an answer: not a connect failure.
  const closer = await rawBackend(t, (s) => { s.once('data', () => s.destroy()) })
  const live = await wsBackend(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [closer.address, live.address], balance: 'round-robin', retries: 2 }] })
  const ev = record(proxy)
  const c = new RawClient(t, port, UPGRADE('/h'))
  await c.closed
  t.match(c.text, /^HTTP\/1\.1 502 /, c.text)
  t.equal(live.sockets.length, 0, 'the other backend never saw it')
  t.match(ev.ends, [{ status: 502, error: 'ERR_BACKEND_CLOSED', backend: closer.address }])
})

t.test('an upgrade to a spawn that starts on demand waits for it, as a request does', async (t) => {
  const fixture = fileURLToPath(new URL('../spawn/fixtures/backend.mjs', import.meta.url))
  const { port, proxy } = await proxyServer(t, {
    spawns: { app: { binPath: [process.execPath, fixture], socketName: '127.0.0.1:0', handoff: 'self', minProcs: 0, stopTimeout: '2s' } },
    routes: [{ protocol: 'http', spawn: 'app', timeouts: { headers: '10s' } }],
  })
  t.equal(proxy.routes[0].pool.backends.length, 0, 'no process yet')
  // The fixture has no 'upgrade' listener: node answers the upgrade as a request, with its pid.
  const c = new RawClient(t, port, UPGRADE('/'))
  await c.closed
  t.match(c.text, /^HTTP\/1\.1 200 /, c.text.split('\r\n')[0])
  t.match(c.after, /^\d+$/, 'from the spawned process')
})

t.test('request events and route counters: a tunnel, a refusal in the queue', async (t) => {
  const be = await wsBackend(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ name: 'ws', protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 0 }] })
  const ev = record(proxy)
  const stats = proxy.routes[0].stats
  const { ws } = await openWs(`ws://127.0.0.1:${port}/e?x=1`)
  t.match(ev.starts, [{ route: 'ws', method: 'GET', url: '/e?x=1', client: '127.0.0.1' }], 'request:start when the upgrade arrives')
  t.equal(ev.ends.length, 0, 'no request:end while the tunnel is open')
  const c = new RawClient(t, port, UPGRADE('/full'))
  await c.closed
  t.match(c.text, /^HTTP\/1\.1 503 [^]*\r\nretry-after: \d+\r\n/i, 'the slot is taken: 503')
  t.match(ev.ends, [{ url: '/full', status: 503, error: 'ERR_QUEUE_FULL', backend: '', headMs: -1 }])
  await closeWs(ws)
  t.ok(await waitFor(() => ev.ends.length === 2, 2000))
  const end = ev.ends[1]
  t.match(end, { id: ev.starts[0].id, route: 'ws', url: '/e?x=1', status: 101, backend: be.address, error: null })
  t.ok(end.headMs >= 0 && end.headMs <= end.totalMs, `headMs ${end.headMs} (to the 101) <= totalMs ${end.totalMs}`)
  t.equal(stats.requests, 2)
  t.equal(stats.dropped, 1)
  t.equal(stats.errors, 1, 'the refusal is an error, the tunnel is not')
  t.equal(stats.latency.reduce((a, b) => a + b, 0), 2, 'both observed (a tunnel by its time to the 101)')
})
