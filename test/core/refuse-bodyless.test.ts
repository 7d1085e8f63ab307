/**
 * A request the proxy refuses before any exchange (src/core/runtime.ts refuse) gets its unread
 * body discarded within bounds and its socket's destroySoon replaced by the lingering one
 * (src/core/body-pump.ts discardBody, lingerOnClose). A request with no body to read (no
 * Content-Length or `Content-Length: 0`, no Transfer-Encoding) got that set-up too: node:http
 * emits 'request' before it marks a bodyless request complete, so `req.complete` was false in
 * refuse(). Measured before the fix: every refused GET replaced its socket's destroySoon and
 * scheduled one setImmediate (20 000 refused GETs on one connection: 20 000 setImmediate calls);
 * after it, none.
 *
 * Observables: the server-side socket keeps node's own destroySoon, the setImmediate calls during
 * a burst of refused GETs, and the keep-alive connection answering its next request at once. The
 * refused requests WITH a body keep the set-up (their body is dropped, the socket lingers) and the
 * connection goes on after them; the bounds themselves are tested in audit-linger.test.ts.
 */
import t, { type Test } from 'tap'
import type { Socket } from 'node:net'
import type { Server } from 'node:http'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { proxyServer } from '../helpers/servers.js'
import { Raw } from '../helpers/raw-client.js'
import { tempDir } from '../cgi/harness.js'

guardLeaks(t, { timeoutMs: 10_000 })

/** A proxy with one static route under /app/ (anything else is a 404 before any exchange), and its accepted sockets. */
async function proxy (t: Test): Promise<{ port: number, server: Server, sockets: Socket[] }> {
  const root = tempDir(t, 'pc-refuse-')
  const { server, port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root, match: { prefix: '/app/' } }] })
  const sockets: Socket[] = []
  server.on('connection', (s: Socket) => sockets.push(s))
  return { port, server, sockets }
}

/** Node's own destroySoon (net.Socket.prototype), not the lingering one lingerOnClose installs. */
const lingers = (s: Socket): boolean => Object.hasOwn(s, 'destroySoon')

const count = (raw: string, status: number): number => raw.split(`HTTP/1.1 ${status} `).length - 1

/** Let the refuse() set-up run (it schedules discardBody for the next turn). */
const turn = async (): Promise<void> => { await new Promise((resolve) => setImmediate(resolve)) }

const BODYLESS: Array<[string, string]> = [
  ['GET without Content-Length', 'GET /nope HTTP/1.1\r\nHost: h\r\n\r\n'],
  ['POST with Content-Length: 0', 'POST /nope HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n'],
  ['HEAD', 'HEAD /nope HTTP/1.1\r\nHost: h\r\n\r\n'],
  ['OPTIONS *', 'OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n'],
]

for (const [name, head] of BODYLESS) {
  t.test(`a refused ${name}: no discard/linger set-up, the connection answers its next request`, async (t) => {
    const { port, sockets } = await proxy(t)
    const c = new Raw(port, head)
    t.teardown(() => { c.socket.destroy() })
    t.ok(await waitFor(() => /\r\n\r\n/.test(c.raw), 10_000), 'answered', { raw: c.raw })
    t.ok(c.status() >= 400, `refused (${c.status()})`)
    await turn()
    t.equal(sockets.length, 1)
    t.notOk(lingers(sockets[0]!), 'the socket keeps node\'s own destroySoon')
    c.socket.write('GET /nope2 HTTP/1.1\r\nHost: h\r\n\r\n')
    t.ok(await waitFor(() => count(c.raw, 404) + count(c.raw, 400) >= 2, 10_000), 'the next request on the kept-alive connection is answered', { raw: c.raw })
    t.notOk(c.closed, 'the connection is still open (kept alive, as nginx does for a 404)')
    t.equal(sockets.length, 1, 'on the same connection')
  })
}

t.test('a burst of refused GETs on one connection schedules no discard per request', async (t) => {
  const { port, sockets } = await proxy(t)
  const c = new Raw(port, '')
  t.teardown(() => { c.socket.destroy() })
  const N = 500
  let immediates = 0
  const real = globalThis.setImmediate
  const counting = ((...args: Parameters<typeof setImmediate>) => { immediates++; return real(...args) }) as typeof setImmediate
  globalThis.setImmediate = counting
  t.teardown(() => { globalThis.setImmediate = real })
  c.socket.write('GET /nope HTTP/1.1\r\nHost: h\r\n\r\n'.repeat(N))
  const ok = await waitFor(() => count(c.raw, 404) >= N, 20_000)
  globalThis.setImmediate = real
  t.ok(ok, `${N} answers`, { got: count(c.raw, 404) })
  t.comment(`setImmediate calls during ${N} refused GETs: ${immediates}`)
  t.ok(immediates < N / 10, `not one set-up per refused GET (${immediates} setImmediate calls for ${N} requests)`)
  t.notOk(lingers(sockets[0]!), 'the socket keeps node\'s own destroySoon')
  t.notOk(c.closed, 'the connection is kept alive')
})

t.test('a refused bodyless GET with Connection: close: answered, then closed at once', async (t) => {
  const { port } = await proxy(t)
  const c = new Raw(port, 'GET /nope HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
  t.teardown(() => { c.socket.destroy() })
  t.ok(await waitFor(() => c.closed, 10_000), 'the proxy closed the connection', { raw: c.raw })
  t.equal(c.status(), 404)
  t.not(c.body(), null, 'the whole answer was read')
})

const BODIES: Array<[string, string, string]> = [
  ['Content-Length', 'POST /nope HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n', 'x'.repeat(100_000)],
  ['chunked', 'POST /nope HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n', `${(100_000).toString(16)}\r\n${'x'.repeat(100_000)}\r\n0\r\n\r\n`],
]

for (const [name, head, body] of BODIES) {
  t.test(`a refused POST with a ${name} body after a refused bodyless GET: its body is dropped, the socket lingers, the connection goes on`, async (t) => {
    const { port, sockets } = await proxy(t)
    const c = new Raw(port, 'GET /nope HTTP/1.1\r\nHost: h\r\n\r\n')
    t.teardown(() => { c.socket.destroy() })
    t.ok(await waitFor(() => count(c.raw, 404) === 1, 10_000), 'the GET is answered')
    await turn()
    t.notOk(lingers(sockets[0]!), 'no set-up for the GET')
    c.socket.write(head)
    t.ok(await waitFor(() => count(c.raw, 404) === 2, 10_000), 'the POST is answered before its body is sent')
    await turn()
    t.ok(lingers(sockets[0]!), 'the POST with a body sets the lingering destroySoon up')
    await c.send(Buffer.from(body))
    c.socket.write('GET /nope3 HTTP/1.1\r\nHost: h\r\n\r\n')
    t.ok(await waitFor(() => count(c.raw, 404) === 3, 10_000), 'the body was dropped and the next request answered', { raw: c.raw.slice(-400) })
    t.equal(count(c.raw, 400), 0, 'no body byte was parsed as a request')
    t.notOk(c.closed, 'the connection is kept alive')
    t.equal(sockets.length, 1, 'on the same connection')
  })
}
