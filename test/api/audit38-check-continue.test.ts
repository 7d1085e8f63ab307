/**
 * An app with routes of its own beside the proxy's, wired as docs/getting-started.md's node:http
 * snippet: `proxy.handler(req, res, next)` as the request listener and `proxy.checkContinue` as
 * the 'checkContinue' one. node:http hands an `Expect: 100-continue` request (curl sends it for a
 * body over 1 MiB) to the 'checkContinue' listener instead of 'request', so an upload to the app's
 * own route went to the proxy alone and got `404 ERR_NO_ROUTE`. It reaches the app now, as its
 * twin without Expect does, with its 100 once the app reads the body.
 */
import t from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect } from 'node:net'
import { createProxy, silentLogger, type Proxy } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, closeServer, listen } from '../helpers/servers.js'

const DEADLINE_MS = 10_000

interface Tap { teardown (fn: () => void | Promise<void>): void }

/** The app's own routes: /upload counts the body it reads; /private answers 403 without reading it. */
function own (req: IncomingMessage, res: ServerResponse): void {
  if (req.url === '/private') { res.writeHead(403).end('own: forbidden\n'); return }
  let n = 0
  req.on('data', (c: Buffer) => { n += c.length })
  req.on('end', () => res.end(`own: ${req.method} ${req.url} ${n} bytes\n`))
}

/** An upstream that counts the body, a proxy with one `/api/` route, and the app's server around it. */
async function app (t: Tap, wire: (server: ReturnType<typeof createServer>, proxy: Proxy) => void): Promise<number> {
  const up = await backend(t, (req, res) => {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => res.end(`upstream: ${req.url} ${n} bytes\n`))
  })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ match: { prefix: '/api/' }, protocol: 'http', backends: [up.address] }] })
  const server = createServer((req, res) => { proxy.handler(req, res, () => own(req, res)) })
  wire(server, proxy)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  return port
}

interface Talk { raw: string, sentBody: boolean }

/** A client that sends `body` only after a 100 (curl without its 1 s give-up); what it got until the server closed. */
function expectContinue (port: number, path: string, body: Buffer): Promise<Talk> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port })
    let raw = ''
    let sentBody = false
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`no complete answer within ${DEADLINE_MS} ms: ${JSON.stringify(raw)}`)) }, DEADLINE_MS)
    s.on('data', (d: Buffer) => {
      raw += d.toString('latin1')
      if (!sentBody && raw.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) { sentBody = true; s.write(body) }
    })
    s.on('error', () => {})
    s.on('close', () => { clearTimeout(timer); resolve({ raw, sentBody }) })
    s.write(`POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`)
  })
}

const BODY = Buffer.alloc(2 * 1024 * 1024, 7)

t.test('the documented wiring, server.on(\'checkContinue\', proxy.checkContinue): an upload to the app\'s own route reaches it', async (t) => {
  guardLeaks(t)
  const port = await app(t, (server, proxy) => server.on('checkContinue', proxy.checkContinue))

  const mine = await expectContinue(port, '/upload', BODY)
  t.ok(mine.sentBody, 'a 100 once the app reads the body')
  t.match(mine.raw, /\r\n\r\nHTTP\/1\.1 200 OK\r\n/, '200 from the app')
  t.match(mine.raw, new RegExp(`own: POST /upload ${BODY.length} bytes\n$`), 'the app read the whole body')

  const refused = await expectContinue(port, '/private', BODY)
  t.notOk(refused.sentBody, 'no 100 when the app answers without reading the body')
  t.match(refused.raw, /^HTTP\/1\.1 403 /, 'the app\'s own 403')

  const proxied = await expectContinue(port, '/api/x', BODY)
  t.ok(proxied.sentBody, 'a proxied upload still gets its 100')
  t.match(proxied.raw, new RegExp(`upstream: /api/x ${BODY.length} bytes\n$`), 'and reaches the upstream whole')
})

t.test('checkContinue(req, res, next): an unmatched Expect request calls next', async (t) => {
  guardLeaks(t)
  let calls = 0
  const port = await app(t, (server, proxy) => server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    proxy.checkContinue(req, res, () => { calls++; own(req, res) })
  }))
  const mine = await expectContinue(port, '/upload', BODY)
  t.equal(calls, 1, 'next called once')
  t.ok(mine.sentBody, 'a 100 once the app reads the body')
  t.match(mine.raw, new RegExp(`own: POST /upload ${BODY.length} bytes\n$`))
})

t.test('a server whose request listener is proxy.handler alone: still 404 ERR_NO_ROUTE, no 100', async (t) => {
  guardLeaks(t)
  const proxy = await createProxy({ logger: silentLogger, routes: [{ match: { prefix: '/api/' }, protocol: 'http', backends: ['127.0.0.1:1'] }] })
  const server = createServer(proxy.handler)
  server.on('checkContinue', proxy.checkContinue)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const none = await expectContinue(port, '/upload', BODY)
  t.notOk(none.sentBody, 'no 100')
  t.match(none.raw, /^HTTP\/1\.1 404 [^]*ERR_NO_ROUTE\n$/, '404 ERR_NO_ROUTE')
})
