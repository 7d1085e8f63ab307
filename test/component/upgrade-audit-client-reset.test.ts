/**
 * How a WebSocket tunnel's end is reported (src/core/upgrade.ts): a client that resets its
 * connection mid-tunnel is a client abort (`ERR_CLIENT_ABORTED`, 499 in `request:end` and so in the
 * access log, not a route error), as a plain request's client that goes away mid-response is; a
 * backend reset stays ERR_BACKEND_RESET; a clean close by either side is error-free. A real `ws`
 * backend; the client is raw TCP, since a reset is the client's fault to make.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import type { Proxy, RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { wsBackend } from '../helpers/ws-backend.js'
import { proxyServer } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

interface Tap { teardown (fn: () => unknown): void }

const UPGRADE = (path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n` +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'

function ends (proxy: Proxy): RequestEndEvent[] {
  const out: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => out.push(e))
  return out
}

/** A raw WebSocket client past its 101 and the backend's greeting (`hello <path>`, an unmasked text frame). */
async function opened (t: Tap, port: number, path: string): Promise<{ sock: Socket, text: () => string, closed: Promise<void> }> {
  const sock = connect({ host: '127.0.0.1', port })
  const chunks: Buffer[] = []
  sock.on('data', (d: Buffer) => chunks.push(d))
  sock.on('error', () => {})
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()))
  t.teardown(() => { sock.destroy() })
  sock.write(UPGRADE(path))
  const text = (): string => Buffer.concat(chunks).toString('latin1')
  await waitFor(() => text().includes(`hello ${path}`), 5000)
  return { sock, text, closed }
}

/** A masked client close frame (code 1000), as RFC 6455 §5.5.1 wants from a client. */
function closeFrame (): Buffer {
  const mask = Buffer.from([1, 2, 3, 4])
  const payload = Buffer.from([0x03, 0xe8])
  for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4]
  return Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, payload])
}

t.test('a client reset mid-tunnel is ERR_CLIENT_ABORTED (499), not a route error; the backend connection goes too', async (t) => {
  const be = await wsBackend(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ev = ends(proxy)
  const c = await opened(t, port, '/r')
  t.match(c.text(), /^HTTP\/1\.1 101 /, 'the tunnel is up')
  const backendClosed = new Promise<number>((resolve) => be.sockets[0].once('close', (code) => resolve(code)))
  c.sock.resetAndDestroy()
  t.ok(await waitFor(() => ev.length === 1, 5000), 'request:end')
  t.match(ev[0], { url: '/r', status: 499, error: 'ERR_CLIENT_ABORTED', backend: be.address })
  t.equal(await backendClosed, 1006, 'the backend connection is closed (abnormally: no close frame)')
  t.equal(proxy.routes[0].stats.errors, 0, 'a client abort is not a route error (as for a plain request)')
  t.equal(proxy.routes[0].admission.active, 0, 'the slot is free')
})

t.test('a clean close stays error-free: the client closing (close frame + FIN), and the backend closing', async (t) => {
  const be = await wsBackend(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ev = ends(proxy)

  const a = await opened(t, port, '/a')
  a.sock.end(closeFrame())
  await a.closed
  t.ok(await waitFor(() => ev.length === 1, 5000), 'request:end after the client closed')
  t.match(ev[0], { url: '/a', status: 101, error: null })

  const b = await opened(t, port, '/b')
  be.sockets[1].close(1000)
  // The backend's close frame (0x88), answered with the client's, as a WebSocket client does.
  t.ok(await waitFor(() => b.text().includes('\x88'), 5000), 'the backend\'s close frame came through')
  b.sock.end(closeFrame())
  await b.closed
  t.ok(await waitFor(() => ev.length === 2, 5000), 'request:end after the backend closed')
  t.match(ev[1], { url: '/b', status: 101, error: null })
  t.equal(proxy.routes[0].stats.errors, 0)
})

t.test('a backend reset mid-tunnel stays ERR_BACKEND_RESET', async (t) => {
  const be = await wsBackend(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ev = ends(proxy)
  const c = await opened(t, port, '/x')
  ;(be.sockets[0] as unknown as { _socket: Socket })._socket.resetAndDestroy()
  await c.closed
  t.ok(await waitFor(() => ev.length === 1, 5000), 'request:end')
  t.match(ev[0], { url: '/x', status: 101, error: 'ERR_BACKEND_RESET' })
  t.equal(proxy.routes[0].stats.errors, 1)
})
