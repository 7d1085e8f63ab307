/**
 * Every embedding example runs for real: proxied route (GET, HEAD, a JSON POST body, WebSocket),
 * fall-through route (and, for Express and Fastify, a body parser that still serves the app's own
 * routes), and a shutdown that closes the listener and every upstream connection.
 */
import t from 'tap'
import { createServer, type ServerOptions } from 'node:http'
import { connect } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocket, WebSocketServer } from 'ws'
import { guardLeaks, waitFor } from '../test/helpers/leaks.js'
import { Raw } from '../test/helpers/raw-client.js'
import { closeServer, get, listen, rawRequest } from '../test/helpers/servers.js'
import { freePort } from '../test/helpers/ports.js'
import type { RequestEndEvent } from '../src/index.js'
import { start as startNode } from './node-http/server.js'
import { start as startExpress } from './express/server.js'
import { start as startFastify } from './fastify/server.js'

guardLeaks(t, { timeoutMs: 10_000 })
const supported = await probeShouldUpgrade()

interface Tap { teardown (fn: () => unknown): void }

/** An upstream that reports what it saw (method, URL, content-type, body) and echoes WebSocket messages. */
async function upstream (t: Tap): Promise<{ address: string, connections: () => Promise<number> }> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString()
      const text = `upstream saw ${req.method} ${req.url}${body === '' ? '' : ` ${req.headers['content-type']} ${body}`}`
      // An explicit length, so that HEAD's answer is framed too and the connection stays alive.
      res.setHeader('content-length', Buffer.byteLength(text))
      res.end(text)
    })
  })
  server.keepAliveTimeout = 60_000   // the proxy's side (keepAliveTimeout 4 s) decides when idle connections close
  const wss = new WebSocketServer({ server })
  const sockets: WebSocket[] = []
  wss.on('connection', (ws, req) => {
    sockets.push(ws)
    ws.on('message', (data) => ws.send(`ws ${req.url} ${String(data)}`))
  })
  const port = await listen(server)
  t.teardown(async () => { for (const s of sockets) s.terminate(); wss.close(); await closeServer(server) })
  return {
    address: `127.0.0.1:${port}`,
    connections: () => new Promise((resolve, reject) => server.getConnections((err, n) => err ? reject(err) : resolve(n))),
  }
}

/** One message through a WebSocket, with a deadline; the socket is closed either way. */
function wsRoundTrip (url: string, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    const timer = setTimeout(() => { ws.terminate(); reject(new Error(`no WebSocket answer from ${url} within 10 s`)) }, 10_000)
    ws.on('open', () => ws.send(message))
    ws.on('message', (data) => { clearTimeout(timer); ws.close(); resolve(String(data)) })
    ws.on('unexpected-response', (_req, res) => { clearTimeout(timer); ws.terminate(); reject(new Error(`WebSocket refused: ${res.statusCode}`)) })
    ws.on('error', (err) => { clearTimeout(timer); reject(err) })
  })
}

/** Does this node:http take `shouldUpgradeCallback`? A server that refuses every upgrade, and one Upgrade request. */
async function probeShouldUpgrade (): Promise<boolean> {
  let plain = false
  const server = createServer({ shouldUpgradeCallback: () => false } as ServerOptions, (_req, res) => { plain = true; res.end('plain') })
  server.on('upgrade', (_req, socket: Duplex) => { socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n') })
  const port = await listen(server)
  const r = await raw(port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: probe\r\n\r\n')
  await closeServer(server)
  return plain && r.status() === 200
}

/** What curl sends for `curl --http2`: an h2c upgrade (RFC 7540 §3.2). */
const H2C = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n'

/** One request on a raw socket, read until its answer is complete (or 20 s); the socket closed then. */
async function raw (port: number, bytes: string): Promise<Raw> {
  const r = new Raw(port, bytes)
  await r.answered(20_000)
  r.socket.destroy()
  return r
}

/** Whether a TCP connection to `url` is refused (the listener is closed). */
function refused (url: string): Promise<boolean> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve) => {
    const s = connect({ host: hostname, port: Number(port) })
    s.on('connect', () => { s.destroy(); resolve(false) })
    s.on('error', () => resolve(true))
  })
}

t.test('node-http: checkContinue, clientError and connect are wired', async (t) => {
  const up = await upstream(t)
  const app = await startNode(up.address)
  t.teardown(app.close)
  const ends: RequestEndEvent[] = []
  app.proxy.events.on('request:end', (e) => ends.push(e))
  const port = Number(new URL(app.url).port)

  // Expect: 100-continue: proxy.checkContinue sends the 100, and the body still reaches the upstream.
  const continued = await rawRequest(port, 'POST /api/up HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhello')
  t.match(continued, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /, '100 Continue, then the answer')
  t.match(continued, /upstream saw POST \/up text\/plain hello$/)
  // One that matches no route reaches the server's own callback (next), as its twin without Expect does.
  const own = await rawRequest(port, 'POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhello')
  t.match(own, /^(?:HTTP\/1\.1 100 Continue\r\n\r\n)?HTTP\/1\.1 200 [^]*served by node:http itself\n$/, 'an Expect upload to the server\'s own route: its answer, not 404')

  // A request node's parser refuses: 400, and (proxy.clientError) a request:end event for the access log.
  const bad = await rawRequest(port, 'GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n')
  t.match(bad, /^HTTP\/1\.1 400 /)
  t.ok(await waitFor(() => ends.some((e) => e.status === 400 && e.error === 'ERR_BAD_REQUEST'), 10_000), 'the refused request is in the events')

  // CONNECT (proxy.connect): 501 with its code, not a socket closed unanswered.
  const tunnel = await rawRequest(port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', /ERR_CONNECT_METHOD\n/)
  t.match(tunnel, /^HTTP\/1\.1 501 Not Implemented\r\n[^]*ERR_CONNECT_METHOD\n$/)
})

for (const [name, start, home, prefixKept] of [
  ['node-http', startNode, /served by node:http itself/, false],
  ['express', startExpress, /express home/, true],
  ['fastify', startFastify, /"from":"fastify"/, true],
] as const) {
  t.test(name, async (t) => {
    const up = await upstream(t)
    // A port no listen(0) elsewhere can take after close(): the test checks it is refused then.
    const app = await start(up.address, await freePort())
    let closed = false
    t.teardown(async () => { if (!closed) await app.close() })
    const path = (p: string): string => prefixKept ? `/api${p}` : p

    const proxied = await get(`${app.url}/api/users?id=7`)
    t.equal(proxied.status, 200)
    t.equal(proxied.body.toString(), `upstream saw GET ${path('/users?id=7')}`)

    const head = await get(`${app.url}/api/users`, { method: 'HEAD' })
    t.equal(head.status, 200, 'HEAD is proxied')
    t.equal(head.body.length, 0, 'and answered without a body')
    t.equal(head.headers['content-length'], String(Buffer.byteLength(`upstream saw HEAD ${path('/users')}`)), 'with the length a GET would have')

    const json = '{"a":[1,2,3]}'
    const posted = await get(`${app.url}/api/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: json })
    t.equal(posted.status, 200, 'a JSON POST is proxied')
    t.equal(posted.body.toString(), `upstream saw POST ${path('/echo')} application/json ${json}`, 'its body reaches the upstream untouched')

    t.equal(await wsRoundTrip(`${app.url.replace('http:', 'ws:')}/api/chat`, 'hi'), `ws ${path('/chat')} hi`, 'WebSocket through the server')

    const local = await get(`${app.url}/`)
    t.match(local.body.toString(), home, 'unmatched requests fall through')

    // `curl --http2`'s h2c upgrade: with shouldUpgradeCallback (Node >= 22.21 / 24.9) a plain
    // request to the framework's own route, and a POST whose body reaches the upstream; on Node 20
    // the old refusals (404 for no route, 400 for a body).
    const port = Number(new URL(app.url).port)
    const h2c = await raw(port, `GET / HTTP/1.1\r\nHost: a\r\n${H2C}\r\n`)
    if (supported) t.match(`${h2c.status()} ${h2c.body() ?? ''}`, new RegExp(`^200 [^]*${home.source}`), 'an h2c GET reaches the framework as a plain GET')
    else t.equal(h2c.status(), 404, 'an h2c GET to no proxy route: 404 (Node without shouldUpgradeCallback)')
    const h2cPost = await raw(port, `POST /api/echo HTTP/1.1\r\nHost: a\r\n${H2C}Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello`)
    if (supported) t.equal(`${h2cPost.status()} ${h2cPost.body() ?? ''}`, `200 upstream saw POST ${path('/echo')} text/plain hello`, 'an h2c POST: a plain POST, its body at the upstream')
    else t.equal(h2cPost.status(), 400, 'an h2c POST: 400 (Node without shouldUpgradeCallback)')
    if (name !== 'node-http') {
      const own = await get(`${app.url}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: json })
      t.equal(own.status, 200)
      t.same(JSON.parse(own.body.toString()), { parsed: { a: [1, 2, 3] } }, 'the framework still parses bodies for its own routes')
    }

    // (undici closes the connection after a HEAD; a GET leaves one open in the pool.)
    t.equal((await get(`${app.url}/api/last`)).status, 200)
    t.ok(await up.connections() > 0, 'the proxy keeps upstream connections alive')
    closed = true
    const closing = Date.now()
    await app.close()
    t.ok(await refused(app.url), 'close() closes the listener')
    await waitFor(async () => await up.connections() === 0, 10_000)
    t.equal(await up.connections(), 0, 'no upstream connection is left')
    // An idle pooled connection closes by itself only 4 s (the route's keepAliveTimeout) after the
    // GET above; closed well before that, it was proxy.close() that closed it.
    const took = Date.now() - closing
    t.ok(took < 3000, `close() closed the upstream connections itself (proxy.close()), after ${took} ms`)
  })
}
