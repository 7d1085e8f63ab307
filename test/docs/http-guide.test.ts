/**
 * The behaviour docs/guides/http-and-websockets.md describes, checked against real loopback
 * servers: prefix stripping with Location/Set-Cookie rewriting, Host handling, forwarding headers,
 * balancing and failover, admission, timeouts, and what a hostile backend gets the client.
 */
import t from 'tap'
import { WebSocket, WebSocketServer } from 'ws'
import { guardLeaks } from '../helpers/leaks.js'
import { deadPort } from '../helpers/ports.js'
import { backend, get, proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t)

const echoHeaders = (name: string) => async (t: Tap) => backend(t, (req, res) => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ name, url: req.url, headers: req.headers }))
})
interface Tap { teardown (fn: () => unknown): void }

t.test('stripPrefix: the backend sees /, Location and Set-Cookie are mapped back', async (t) => {
  const be = await backend(t, (req, res) => {
    if (req.url === '/login') {
      res.writeHead(302, { location: '/home', 'set-cookie': 'sid=1; Path=/; HttpOnly' }).end()
      return
    }
    res.end(`backend saw ${req.url}`)
  })
  const { url } = await proxyServer(t, { routes: [{ match: { prefix: '/app/' }, protocol: 'http', backends: [be.address], stripPrefix: true }] })
  t.equal((await get(`${url}/app/users?id=7`)).body.toString(), 'backend saw /users?id=7')
  const r = await get(`${url}/app/login`)
  t.equal(r.status, 302)
  t.equal(r.headers.location, '/app/home')
  t.same(r.headers['set-cookie'], ['sid=1; Path=/app/; HttpOnly'])
  const dom = await backend(t, (_req, res) => res.writeHead(200, { 'set-cookie': 'a=1; Path=/; Domain=127.0.0.1' }).end())
  const p3 = await proxyServer(t, { routes: [{ match: { prefix: '/app/' }, protocol: 'http', backends: [dom.address], stripPrefix: true }] })
  t.same((await get(`${p3.url}/app/`, { headers: { host: 'www.example.com' } })).headers['set-cookie'], ['a=1; Path=/app/; Domain=www.example.com'], 'a Domain naming the backend becomes the client\'s host')
  const abs = await backend(t, (req, res) => res.writeHead(301, { location: `http://${req.headers.host}/x` }).end())
  const p2 = await proxyServer(t, { routes: [{ match: { prefix: '/app/' }, protocol: 'http', backends: [abs.address], stripPrefix: true, hostHeader: 'backend' }] })
  t.equal((await get(`${p2.url}/app/`)).headers.location, '/app/x', 'absolute Location to the backend itself becomes a path')
})

t.test('hostHeader and forwarding headers', async (t) => {
  const be = await echoHeaders('a')(t)
  const routes = (extra: object) => [{ protocol: 'http', backends: [be.address], ...extra }]
  const h = async (extra: object, headers: Record<string, string> = {}, cfg: object = {}) => {
    const { url } = await proxyServer(t, { routes: routes(extra), ...cfg })
    return JSON.parse((await get(`${url}/`, { headers: { host: 'www.example.com', ...headers } })).body.toString()).headers as Record<string, string>
  }
  const preserve = await h({})
  t.equal(preserve.host, 'www.example.com', 'preserve (default): the client Host')
  t.equal(preserve['x-forwarded-for'], '127.0.0.1')
  t.equal(preserve['x-forwarded-proto'], 'http')
  t.equal(preserve['x-forwarded-host'], 'www.example.com')
  t.equal((await h({ hostHeader: 'backend' })).host, be.address, 'backend: the backend address')
  t.equal((await h({ hostHeader: 'internal.example' })).host, 'internal.example', 'a literal host')
  const spoof = await h({}, { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https' })
  t.equal(spoof['x-forwarded-for'], '6.6.6.6, 127.0.0.1', 'the client list is kept, the peer appended')
  t.equal(spoof['x-forwarded-proto'], 'http', 'an untrusted peer cannot set X-Forwarded-Proto')
  const trusted = await h({}, { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https' }, { trustedProxies: ['127.0.0.1'] })
  t.equal(trusted['x-forwarded-proto'], 'https', 'a trusted peer\'s X-Forwarded-Proto is kept')
  const fwd = await h({ forwarded: true, xForwarded: false, via: 'proxycore' })
  t.equal(fwd.forwarded, 'for=127.0.0.1;proto=http;host=www.example.com')
  t.equal(fwd['x-forwarded-for'], undefined)
  t.equal(fwd.via, '1.1 proxycore')
})

t.test('round-robin spreads, a dead backend is skipped and disabled', async (t) => {
  const a = await echoHeaders('a')(t)
  const b = await echoHeaders('b')(t)
  const deadAddr = `127.0.0.1:${await deadPort()}`
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [a.address, b.address], balance: 'round-robin' }] })
  const names: string[] = []
  for (let i = 0; i < 4; i++) names.push(JSON.parse((await get(`${url}/`)).body.toString()).name)
  t.same(names.sort(), ['a', 'a', 'b', 'b'])
  await proxy.close()
  const p2 = await proxyServer(t, { routes: [{ protocol: 'http', backends: [deadAddr, a.address], balance: 'round-robin', disableTime: '30s' }] })
  for (let i = 0; i < 4; i++) t.equal((await get(`${p2.url}/`)).status, 200, 'failover to the live backend')
  const only = await proxyServer(t, { routes: [{ protocol: 'http', backends: [deadAddr], retries: 0 }] })
  const r = await get(`${only.url}/`)
  t.equal(r.status, 502)
  t.match(r.body.toString(), /ERR_CONNECT_REFUSED/)
  const again = await get(`${only.url}/`)
  t.equal(again.status, 502, 'a sole backend is tried again, not skipped for disableTime')
  t.match(again.body.toString(), /ERR_CONNECT_REFUSED/)
})

t.test('admission: maxConcurrent + queue, 503 with Retry-After', async (t) => {
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  let arrived = 0
  const be = await backend(t, (_req, res) => { arrived++; void held.then(() => res.end('done')) })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 1 }] })
  const first = get(`${url}/1`)
  const second = get(`${url}/2`)
  const { waitFor } = await import('../helpers/leaks.js')
  t.ok(await waitFor(() => arrived === 1, 2000), 'the first is at the backend')
  const third = await get(`${url}/3`)
  t.equal(third.status, 503)
  t.match(third.body.toString(), /ERR_QUEUE_FULL/)
  t.ok(third.headers['retry-after'] !== undefined, 'Retry-After')
  release()
  t.equal((await first).status, 200)
  t.equal((await second).status, 200, 'the queued one ran after')
})

t.test('timeouts.headers: 504', async (t) => {
  const be = await rawBackend(t, () => {})
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: 200 } }] })
  const r = await get(`${url}/`)
  t.equal(r.status, 504)
  t.match(r.body.toString(), /ERR_HEADERS_TIMEOUT/)
})

t.test('hostile backends: what the client gets', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['status 999', 'HTTP/1.1 999 Nope\r\nContent-Length: 0\r\n\r\n', /^502 .*ERR_BAD_RESPONSE/],
    ['garbage', 'hello\r\n\r\n', /^502 .*ERR_PROTOCOL/],
    ['close before a head', '', /^502 .*ERR_BACKEND_CLOSED/],
    ['CL and TE together', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n', /^502 .*ERR_BAD_RESPONSE/],
  ]
  for (const [name, bytes, expect] of cases) {
    const be = await rawBackend(t, (s) => { s.once('data', () => { s.end(bytes) }) })
    const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
    const r = await get(`${url}/`)
    t.match(`${r.status} ${r.body.toString().replace(/\n/g, ' ')}`, expect, `${name}: ${r.status} ${r.body.toString().split('\n')[1] ?? ''}`)
  }
})

t.test('WebSocket through the upgrade listener', async (t) => {
  const be = await backend(t, (_req, res) => res.end('plain'))
  const wss = new WebSocketServer({ server: be.server })
  wss.on('connection', (ws, req) => { ws.on('message', (m) => ws.send(`${req.url}: ${m.toString()}`)) })
  t.teardown(() => { for (const c of wss.clients) c.terminate(); wss.close() })
  const { port } = await proxyServer(t, { routes: [{ match: { prefix: '/ws/' }, protocol: 'http', backends: [be.address], stripPrefix: true }] })
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`)
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  const reply = new Promise<string>((resolve) => ws.once('message', (m) => resolve(m.toString())))
  ws.send('hi')
  t.equal(await reply, '/chat: hi')
  const closed = new Promise((resolve) => ws.once('close', resolve))
  ws.close()
  await closed
})

t.test('a backend that dies mid-body: the client connection is cut, never ended cleanly', async (t) => {
  const be = await rawBackend(t, (s) => { s.once('data', () => { s.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc') }) })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const outcome = await get(`${url}/`).then((r) => `complete ${r.status} ${r.body.length}`, (err: Error) => `error ${err.message}`)
  t.match(outcome, /^error /, `client saw: ${outcome}`)
})
