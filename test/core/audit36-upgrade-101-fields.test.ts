/**
 * The fields of a backend's 101 on their way to the client (src/core/upgrade.ts): a proxy is a
 * hop, so the 101 loses what is the backend connection's own (RFC 9110 §7.6.1: the fields its
 * Connection lists, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding), keeps Upgrade and
 * every end-to-end field (Sec-WebSocket-*), and names the upgrade in a Connection of the proxy's
 * own, which RFC 6455 §4.1 clients require. A node:http backend
 * writes the 101 on its 'upgrade' socket (any bytes a real server may send), then echoes the tunnel.
 */
import t from 'tap'
import { connect } from 'node:net'
import type { Duplex } from 'node:stream'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { proxyServer, upgradeBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

interface Tap { teardown (fn: () => unknown): void }

/** A raw client that sent `head`; `text` is everything it received (latin1). */
function client (t: Tap, port: number, head: string): { text: () => string, write: (s: string) => void, close: () => void } {
  const c = connect({ port, host: '127.0.0.1' })
  let text = ''
  c.on('data', (d: Buffer) => { text += d.toString('latin1') })
  c.on('error', () => {})
  c.write(head)
  t.teardown(() => { c.destroy() })
  return { text: () => text, write: (s) => { c.write(s) }, close: () => { c.destroy() } }
}

/** The response head's fields as [lower-case name, value] pairs. */
function fields (text: string): Array<[string, string]> {
  const head = text.slice(0, text.indexOf('\r\n\r\n'))
  return head.split('\r\n').slice(1).map((l) => {
    const i = l.indexOf(':')
    return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()] as [string, string]
  })
}

const HANDSHAKE = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'

const ANSWERS: Record<string, string> = {
  '/listed': 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Backend-Secret\r\nUpgrade: websocket\r\n' +
    'X-Backend-Secret: s3cr3t\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n' +
    'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\nX-End-To-End: kept\r\n\r\n',
}

t.test('a 101 loses the backend connection\'s own fields, keeps Upgrade and Sec-WebSocket-*, and says Connection: Upgrade', async (t) => {
  const be = await upgradeBackend(t, (req, socket: Duplex) => {
    socket.write(ANSWERS[req.url ?? ''] ?? 'HTTP/1.1 500 No\r\n\r\n')
    socket.on('data', (d: Buffer) => socket.write(d))
    socket.on('end', () => socket.end())
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })

  const c = client(t, port, HANDSHAKE('/listed'))
  t.ok(await waitFor(() => c.text().includes('\r\n\r\n'), 5000), 'the 101 head arrived')
  t.match(c.text(), /^HTTP\/1\.1 101 /)
  const got = fields(c.text())
  const names = got.map(([n]) => n)
  for (const gone of ['x-backend-secret', 'keep-alive', 'proxy-connection', 'te', 'trailer']) {
    t.notOk(names.includes(gone), `${gone}: not passed on`)
  }
  t.same(got.filter(([n]) => n === 'connection'), [['connection', 'Upgrade']], 'one Connection, of the proxy\'s own: Upgrade')
  t.same(got.filter(([n]) => n === 'upgrade'), [['upgrade', 'websocket']], 'Upgrade kept')
  t.same(got.filter(([n]) => n.startsWith('sec-websocket-')), [['sec-websocket-accept', 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='], ['sec-websocket-protocol', 'chat']], 'Sec-WebSocket-* kept')
  t.ok(names.includes('x-end-to-end'), 'an end-to-end field kept')
  // The tunnel works behind that head.
  const headLen = c.text().indexOf('\r\n\r\n') + 4
  c.write('ping-through')
  t.ok(await waitFor(() => c.text().slice(headLen) === 'ping-through', 5000), 'tunnel echoes')
  c.close()

})
