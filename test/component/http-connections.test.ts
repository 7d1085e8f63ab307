/**
 * The HTTP adapter's connections to one backend (src/protocols/http/client.ts, on undici's Pool):
 * at most `connections` of them, the requests beyond wait their turn, a connection whose connect
 * failed is replaced, and close() / destroy() settle every request, sent or waiting. Real
 * node:http backends; the adapter is driven directly where the core would hide the outcome.
 */
import t, { type Test } from 'tap'
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { httpAdapter } from '../../src/protocols/http/index.js'
import { connectEndpoint } from '../../src/core/connect.js'
import { parseEndpoint } from '../../src/core/endpoint.js'
import { silentLogger, type BackendClient, type Exchange, type FlowControl, type ProxyError, type RawHeaders } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, closeServer, get, proxyServer } from '../helpers/servers.js'
import { deadPort } from '../helpers/ports.js'

guardLeaks(t)

/** A backend that holds every response until the test lets it go, and counts what it sees. */
async function gated (t: Parameters<typeof backend>[0]) {
  const held: Array<{ req: IncomingMessage, res: ServerResponse }> = []
  let connections = 0
  let inFlight = 0
  let maxInFlight = 0
  const be = await backend(t, (req, res) => {
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    res.on('finish', () => { inFlight-- })
    held.push({ req, res })
  })
  be.server.on('connection', () => { connections++ })
  return {
    ...be,
    held,
    get connections () { return connections },
    get maxInFlight () { return maxInFlight },
    /** Answer the oldest held request with its own URL. */
    releaseOne () {
      const h = held.shift()
      h?.req.resume()
      h?.res.end(h.req.url)
    },
  }
}

t.test('connections caps the connections to a backend; the requests beyond wait and all complete', async (t) => {
  const be = await gated(t)
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], options: { connections: 2 } }] })
  const replies = Array.from({ length: 8 }, (_, i) => get(`${url}/r${i}`))
  t.ok(await waitFor(() => be.held.length === 2), 'two requests reach the backend')
  let released = 0
  while (released < 8) {
    // Each answer frees a connection, which carries the next waiting request.
    t.ok(await waitFor(() => be.held.length > 0), `request ${released + 1} reached the backend`)
    be.releaseOne()
    released++
  }
  const got = await Promise.all(replies)
  t.same(got.map((r) => [r.status, r.body.toString()]), Array.from({ length: 8 }, (_, i) => [200, `/r${i}`]), 'every request answered, each with its own response')
  t.equal(be.maxInFlight, 2, 'never more than 2 at the backend at once')
  t.equal(be.connections, 2, 'over 2 kept-alive connections')
})

// --- the adapter on its own ------------------------------------------------------------------------

interface Outcome { status?: number, body: string, error?: ProxyError, ended: boolean, calls: number }

function client (address: string, connections: number): BackendClient {
  const endpoint = parseEndpoint(address)
  return httpAdapter.createClient(endpoint, { connections, keepAliveTimeout: 4000 }, {
    log: silentLogger,
    connect: (e) => connectEndpoint(e, 2000),
    limits: { maxResponseHeadSize: 16384 },
  })
}

let nextId = 0
function exchange (path: string): Exchange {
  return {
    id: ++nextId,
    method: 'GET',
    url: path,
    path,
    query: '',
    httpVersion: '1.1',
    requestHeaders: { host: 'test' },
    headers: ['host', 'test'],
    env: null,
    script: null,
    body: null,
    contentLength: null,
    client: { address: '127.0.0.1', port: 1, secure: false },
    signal: new AbortController().signal,
    role: 'responder',
    options: {},
    route: 'test',
  } as unknown as Exchange
}

/** Dispatch one exchange; resolves with its outcome once the handler got its last call. */
function send (c: BackendClient, path: string): Promise<Outcome> {
  const outcome: Outcome = { body: '', ended: false, calls: 0 }
  return new Promise<Outcome>((resolve) => {
    c.dispatch(exchange(path), {
      onHead (status: number, _headers: RawHeaders, _flow: FlowControl) { outcome.status = status },
      onData (chunk: Buffer) { outcome.body += chunk.toString(); return true },
      onEnd () { outcome.ended = true; outcome.calls++; resolve(outcome) },
      onError (err: ProxyError) { outcome.error = err; outcome.calls++; resolve(outcome) },
    })
  })
}

t.test('a connection whose connect failed is replaced: the backend, once up, gets the next request', async (t) => {
  const port = await deadPort()
  const c = client(`127.0.0.1:${port}`, 1)
  t.teardown(() => c.close())
  const first = await send(c, '/a')
  t.equal(first.error?.code, 'ERR_CONNECT_REFUSED', 'nothing listens: the connect error')
  t.equal(c.inflight, 0)
  // The same port, now with a backend on it.
  const up = createHttpServer((req, res) => { res.end(`up ${req.url}`) })
  await new Promise<void>((resolve, reject) => { up.once('error', reject); up.listen(port, '127.0.0.1', resolve) })
  t.teardown(() => closeServer(up))
  const second = await send(c, '/b')
  t.same([second.status, second.body, second.error], [200, 'up /b', undefined], 'answered by the backend that came up')
  t.equal(c.inflight, 0)
})

/** One connection allowed: the first of three requests held at the backend, two waiting. */
async function oneSentTwoWaiting (t: Test) {
  const be = await gated(t)
  const c = client(be.address, 1)
  const sent = ['/1', '/2', '/3'].map((p) => send(c, p))
  t.ok(await waitFor(() => be.held.length === 1), 'one request at the backend, two waiting')
  return { be, c, sent }
}

t.test('close() sends the waiting requests and resolves once all are answered; later ones fail', async (t) => {
  const { be, c, sent } = await oneSentTwoWaiting(t)
  let closed = false
  const closing = c.close().then(() => { closed = true })
  const late = await send(c, '/late')
  t.equal(late.error?.code, 'ERR_BACKEND_CLOSED', 'a request after close() is refused')
  for (let i = 0; i < 3; i++) {
    t.ok(await waitFor(() => be.held.length === 1), `request ${i + 1} at the backend`)
    t.notOk(closed, 'close() still waits')
    be.releaseOne()
  }
  await closing
  const got = await Promise.all(sent)
  t.same(got.map((o) => [o.status, o.body, o.ended, o.calls]), [[200, '/1', true, 1], [200, '/2', true, 1], [200, '/3', true, 1]])
  t.equal(be.connections, 1, 'all three over one connection')
  t.equal(c.inflight, 0)
})

t.test('destroy() fails the request in flight and the waiting ones, each once', async (t) => {
  const { be, c, sent } = await oneSentTwoWaiting(t)
  c.destroy()
  const got = await Promise.all(sent)
  t.same(got.map((o) => [o.ended, o.calls, typeof o.error?.code]), [[false, 1, 'string'], [false, 1, 'string'], [false, 1, 'string']], 'every request failed once')
  t.equal(c.inflight, 0)
  // The backend still holds the first request's response; let it go so its server closes.
  be.releaseOne()
})
