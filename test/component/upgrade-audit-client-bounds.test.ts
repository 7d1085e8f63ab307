/**
 * Upgrade requests that do not become a tunnel (src/core/upgrade.ts), against a client that holds
 * on: one that stops reading a backend's plain answer (a 200 instead of a 101) is cut after
 * `timeouts.clientIdle` (ERR_CLIENT_TIMEOUT), as any response's client is, and the backend
 * connection and the route's slot are released; one that reads slowly is served whole. A client
 * that keeps its side open after a refusal (the proxy's FIN read, its own never sent) has its
 * connection closed after `timeouts.clientIdle`. Real node:http backends; the client is raw TCP,
 * since the fault is the client's.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import type { Server } from 'node:http'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { deadPort } from '../helpers/ports.js'
import { backend, proxyServer } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

interface Tap { teardown (fn: () => unknown): void }

const UPGRADE = (path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n` +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'

function client (t: Tap, port: number, allowHalfOpen = false): { sock: Socket, bytes: () => number, text: () => string, fin: () => boolean, closed: Promise<void> } {
  const sock = connect({ host: '127.0.0.1', port, allowHalfOpen })
  const chunks: Buffer[] = []
  let bytes = 0
  let fin = false
  sock.on('data', (d: Buffer) => { chunks.push(d); bytes += d.length })
  sock.on('end', () => { fin = true })
  sock.on('error', () => {})
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()))
  t.teardown(() => { sock.destroy() })
  return { sock, bytes: () => bytes, text: () => Buffer.concat(chunks).toString('latin1'), fin: () => fin, closed }
}

function connections (server: Server): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((err, n) => err !== null ? reject(err) : resolve(n)))
}

/** A node:http backend that answers every request (an Upgrade included) with a `total`-byte 200. */
async function bigAnswer (t: Tap, total: number) {
  const state = { written: 0, closed: 0 }
  const be = await backend(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total })
    res.on('close', () => { state.closed++ })
    const chunk = Buffer.alloc(64 * 1024, 'x')
    const pump = (): void => {
      while (state.written < total) {
        state.written += chunk.length
        if (!res.write(chunk)) { res.once('drain', pump); return }
      }
      res.end()
    }
    pump()
  })
  return { ...be, state }
}

t.test('a plain answer to an Upgrade, to a client that reads nothing: cut after timeouts.clientIdle, backend and slot released', async (t) => {
  const be = await bigAnswer(t, 64 << 20)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 1, timeouts: { clientIdle: 300 } }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const c = client(t, port)
  c.sock.pause()
  c.sock.write(UPGRADE('/big'))
  // 300 ms without a byte read; 5 s is the margin of a loaded machine.
  t.ok(await waitFor(() => ends.length === 1, 5000), 'the exchange ends while the client still reads nothing')
  t.match(ends, [{ status: 200, error: 'ERR_CLIENT_TIMEOUT' }], 'request:end names the client timeout')
  t.ok(await waitFor(() => be.state.closed === 1, 5000), 'the backend connection is closed')
  t.ok(be.state.written < 32 << 20, `the backend was held back meanwhile (${(be.state.written / 2 ** 20).toFixed(1)} MiB written)`)
  c.sock.resume()
  await c.closed
  // Cut with a reset; the client's kernel, holding unread bytes, may report it as an end: the
  // Content-Length tells the client its body is short.
  t.ok(c.bytes() < 64 << 20, 'the client never got a complete body: the connection was cut')
  // The slot is free: a second upgrade on this maxConcurrent 1 route gets its answer.
  const d = client(t, port)
  d.sock.write(UPGRADE('/again'))
  t.ok(await waitFor(() => /^HTTP\/1\.1 200 /.test(d.text()), 5000), 'the route slot was released')
})

t.test('a plain answer to an Upgrade, to a client that reads slowly but steadily: served whole, never cut', async (t) => {
  const TOTAL = 16 << 20
  const be = await bigAnswer(t, TOTAL)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { clientIdle: 1000 } }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const c = client(t, port)
  // A pause of 20 ms after every 256 KiB: slower than the backend (the proxy holds it back), and
  // never near 1 s without a byte read (the kernel's buffers lag what the client reads by well
  // under that at this pace).
  let step = 0
  const timers = new Set<NodeJS.Timeout>()
  c.sock.on('data', (d: Buffer) => {
    step += d.length
    if (step < 256 << 10) return
    step = 0
    c.sock.pause()
    const timer = setTimeout(() => { timers.delete(timer); c.sock.resume() }, 20)
    timers.add(timer)
  })
  t.teardown(() => { for (const timer of timers) clearTimeout(timer) })
  c.sock.write(UPGRADE('/slow'))
  await c.closed
  const text = c.text()
  t.equal(c.bytes() - (text.indexOf('\r\n\r\n') + 4), TOTAL, 'the whole body')
  t.ok(c.fin, 'ended cleanly')
  t.match(ends, [{ status: 200, error: null, bytesOut: TOTAL }])
})

t.test('a client that keeps its side open after a refusal has its connection closed after timeouts.clientIdle', async (t) => {
  const { port, server, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [`127.0.0.1:${await deadPort()}`], retries: 0, timeouts: { clientIdle: 300 } }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  // allowHalfOpen: the client reads the answer and the proxy's FIN, and never closes its own side.
  const c = client(t, port, true)
  c.sock.write(UPGRADE('/x'))
  t.ok(await waitFor(() => c.fin(), 5000), 'the refusal and the proxy FIN arrived')
  t.match(c.text(), /^HTTP\/1\.1 502 Bad Gateway\r\n[^]*\r\n\r\n502 Bad Gateway\nERR_CONNECT_REFUSED\n$/, 'the whole refusal, with its code')
  t.match(ends, [{ status: 502, error: 'ERR_CONNECT_REFUSED' }])
  t.ok(await waitFor(async () => await connections(server) === 0, 5000), 'the proxy closed the connection the client kept open')
})
