/**
 * Upgrades that cannot become a tunnel, on an `http` route: a backend that answers the Upgrade with
 * a 101 lacking its Upgrade field, a backend that closes or resets at once, and a client Upgrade
 * request that carries a body. Each gets the client a status and a stable code (in the answer's
 * body, as any refused request, and in `request:end`), never a hang, and no socket is left open on
 * either side. (A plain 200 instead of a 101: test/component/upgrade-tunnel.test.ts.) Raw TCP fakes
 * write what a real backend would not.
 *
 * The server here (proxyServer) is made without `shouldUpgradeCallback`, so node:http hands every
 * Upgrade request to 'upgrade' on every Node version, as Node 20 always does: the refusals before
 * routing and of a body are what such a server answers. With `proxy.shouldUpgrade` wired (Node
 * 22.21+ / 24.9+) those requests are served as plain requests instead:
 * test/component/upgrade-as-plain.test.ts.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

const UPGRADE = (extra = ''): string =>
  'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`

/** Everything the client got until the proxy closed the connection (or 'HANG' past 5 s). */
function exchange (port: number, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port })
    let out = ''
    const deadline = setTimeout(() => { s.destroy(); resolve(`${out}HANG`) }, 5000)
    s.on('data', (d: Buffer) => { out += d.toString('latin1') })
    s.on('error', () => {})
    s.on('close', () => { clearTimeout(deadline); resolve(out) })
    s.write(bytes)
  })
}

interface Case { name: string, request: string, backend: (s: Socket) => void, status: number, code: string }
const cases: Case[] = [
  // RFC 9110 §15.2.2: a 101 must name the protocol it switches to.
  { name: 'a 101 without an Upgrade field', request: UPGRADE(), backend: (s) => s.once('data', () => s.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n')), status: 502, code: 'ERR_UPGRADE_FAILED' },
  { name: 'a bare 101', request: UPGRADE(), backend: (s) => s.once('data', () => s.write('HTTP/1.1 101 Switching Protocols\r\n\r\n')), status: 502, code: 'ERR_UPGRADE_FAILED' },
  // A close before any answer is what it is for a plain request (test/component/upgrade-precise-codes.test.ts).
  { name: 'a backend that closes as it accepts', request: UPGRADE(), backend: (s) => { s.resume(); s.end() }, status: 502, code: 'ERR_BACKEND_CLOSED' },
  { name: 'a backend that closes after reading the Upgrade', request: UPGRADE(), backend: (s) => s.once('data', () => s.end()), status: 502, code: 'ERR_BACKEND_CLOSED' },
]

for (const c of cases) {
  t.test(`${c.name}: ${c.status} ${c.code}, both connections closed`, async (t) => {
    const be = await rawBackend(t, c.backend)
    const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
    const ends: RequestEndEvent[] = []
    proxy.events.on('request:end', (e) => ends.push(e))
    const out = await exchange(port, c.request)
    t.match(out, new RegExp(`^HTTP/1\\.1 ${c.status} [^]*\\r\\nconnection: close\\r\\n[^]*\\r\\n\\r\\n${c.status} [^\\n]*\\n${c.code}\\n$`), 'the status, the code in the body, the connection closed', { out })
    t.match(ends, [{ status: c.status, error: c.code }], 'request:end')
    t.ok(await waitFor(() => be.sockets.length > 0 && be.sockets.every((s) => s.destroyed), 5000), 'the backend connection is closed (nothing kept open behind the refusal)')
  })
}

t.test('without shouldUpgradeCallback, an Upgrade request with a body: 400 ERR_BAD_REQUEST, nothing reaches the backend (node hands over the socket at the head: the body would become tunnel bytes)', async (t) => {
  let seen = 0
  const be = await backend(t, (_req, res) => { seen++; res.end('plain') })
  be.server.on('upgrade', (_req, socket: Socket) => { seen++; socket.destroy() })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  // curl --http2 -d hello sends exactly this shape: a POST upgrading to h2c, with its body.
  const h2c = 'POST /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\nhello'
  for (const request of [UPGRADE('Content-Length: 5\r\n') + 'hello', UPGRADE('Transfer-Encoding: chunked\r\n') + '5\r\nhello\r\n0\r\n\r\n', h2c]) {
    const out = await exchange(port, request)
    t.match(out, /^HTTP\/1\.1 400 Bad Request\r\n[^]*\r\nconnection: close\r\n[^]*\r\n\r\n400 Bad Request\nERR_BAD_REQUEST\n$/, request.split('\r\n')[0], { out })
  }
  t.equal(seen, 0, 'the backend saw none of them')
  t.match(ends, [{ status: 400, error: 'ERR_BAD_REQUEST' }, { status: 400, error: 'ERR_BAD_REQUEST' }, { status: 400, error: 'ERR_BAD_REQUEST' }])
  // Content-Length: 0 is no body: the upgrade goes through (here to a backend that refuses it).
  const empty = await exchange(port, UPGRADE('Content-Length: 0\r\n'))
  t.match(empty, /^HTTP\/1\.1 502 [^]*ERR_BACKEND_CLOSED\n$/, 'Content-Length: 0 is passed on as an upgrade', { empty })
  t.equal(seen, 1, 'that one reached the backend')
})

t.test('without shouldUpgradeCallback, refused before routing: the body names the code too (404 ERR_NO_ROUTE, 400 for a route that cannot carry an upgrade)', async (t) => {
  const be = await backend(t, (_req, res) => { res.end('plain') })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], match: { prefix: '/ws' } }, { protocol: 'static', docroot: '.', match: { prefix: '/files/' } }] })
  const none = await exchange(port, UPGRADE().replace('GET /ws ', 'GET /elsewhere '))
  t.match(none, /^HTTP\/1\.1 404 Not Found\r\n[^]*\r\nconnection: close\r\n[^]*\r\n\r\n404 Not Found\nERR_NO_ROUTE\n$/, 'no route', { none })
  const flat = await exchange(port, UPGRADE().replace('GET /ws ', 'GET /files/x '))
  t.match(flat, /^HTTP\/1\.1 400 Bad Request\r\n[^]*\r\n\r\n400 Bad Request\nERR_BAD_REQUEST\n$/, 'a static route', { flat })
})
