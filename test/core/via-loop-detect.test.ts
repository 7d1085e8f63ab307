/**
 * Loop detection by Via (RFC 9110 §7.6.3; nginx/Squid style): every proxy instance (createProxy
 * call) adds its own Via element, `<protocol> <pseudonym>`, to what it forwards; the pseudonym is
 * the route's `via` or, without one, a random one per instance. A request whose Via already
 * carries this instance's pseudonym came back to it: 508 ERR_LOOP_DETECTED (RFC 5842 §7.2), at
 * once, instead of a connection per hop until timeouts.headers. Two instances in a chain are two
 * pseudonyms, never a loop.
 */
import { createServer } from 'node:http'
import t from 'tap'
import { createProxy, type Proxy } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, closeServer, get, listen, proxyServer, rawRequest } from '../helpers/servers.js'
import { captureLogger } from '../cgi/harness.js'

guardLeaks(t)

t.test('a route pointing at the proxy itself: 508 ERR_LOOP_DETECTED at once, one backend hop, logged once', async (t) => {
  const { logger, lines: logged } = captureLogger()
  let proxy: Proxy | null = null
  let arrivals = 0
  const server = createServer((req, res) => { arrivals++; proxy?.handler(req, res) })
  const port = await listen(server)
  proxy = await createProxy({
    logger,
    // A long head timeout: the loop must be cut by Via, never by this.
    routes: [{ protocol: 'http', backends: [`127.0.0.1:${port}`], timeouts: { headers: '20s' } }],
  })
  const codes: Array<string | null> = []
  proxy.events.on('request:end', (e) => { codes.push(e.error) })
  t.teardown(async () => { await closeServer(server); await proxy?.close(1000) })
  const started = Date.now()
  const r = await get(`http://127.0.0.1:${port}/x`)
  t.equal(r.status, 508, 'Loop Detected')
  t.ok(Date.now() - started < 10_000, 'well before timeouts.headers')
  t.equal(arrivals, 2, 'the client request and one looped hop, no more')
  t.same(codes.filter((c) => c === 'ERR_LOOP_DETECTED').length, 1, 'one exchange ended ERR_LOOP_DETECTED')
  const lines = logged.filter((l) => l.obj.code === 'ERR_LOOP_DETECTED')
  t.equal(lines.length, 1, 'logged once')
  t.equal(lines[0]?.level, 'error')
})

t.test('an upgrade (WebSocket) request on a route pointing at the proxy itself: 508 at the second hop', async (t) => {
  const { logger, lines: logged } = captureLogger()
  let proxy: Proxy | null = null
  let arrivals = 0
  const server = createServer((_req, res) => { res.statusCode = 500; res.end() })
  server.on('upgrade', (req, socket, head) => { arrivals++; proxy?.upgrade(req, socket, head) })
  const port = await listen(server)
  proxy = await createProxy({ logger, routes: [{ protocol: 'http', backends: [`127.0.0.1:${port}`], timeouts: { headers: '20s' } }] })
  const codes: Array<string | null> = []
  proxy.events.on('request:end', (e) => { codes.push(e.error) })
  t.teardown(async () => { await closeServer(server); await proxy?.close(1000) })
  const answer = await rawRequest(port, 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', /ERR_LOOP_DETECTED/)
  t.match(answer, /^HTTP\/1\.1 508 /, `the looped hop's refusal reaches the client: ${JSON.stringify(answer.slice(0, 40))}`)
  t.match(answer, /ERR_LOOP_DETECTED/)
  t.equal(arrivals, 2, 'the client request and one looped hop, no more')
  // Refused before an exchange exists, as any refused upgrade: reported (request:end, the access
  // log), not an error line; the first hop passed the 508 on as the backend's answer.
  t.ok(await waitFor(() => codes.length === 2, 5000), `both hops reported: ${JSON.stringify(codes)}`)
  t.equal(codes.filter((c) => c === 'ERR_LOOP_DETECTED').length, 1, 'the looped hop ended ERR_LOOP_DETECTED')
  t.equal(logged.filter((l) => l.obj.code === 'ERR_LOOP_DETECTED').length, 0)
})

t.test('two proxycore instances in a chain are not a loop; each adds its own Via element', async (t) => {
  const seen: Array<string | undefined> = []
  const b = await backend(t, (req, res) => { seen.push(req.headers.via); res.end('ok') })
  const inner = await proxyServer(t, { routes: [{ protocol: 'http', backends: [b.address] }] })
  const outer = await proxyServer(t, { routes: [{ protocol: 'http', backends: [`127.0.0.1:${inner.port}`] }] })
  const r = await get(`${outer.url}/y`, { headers: { via: '1.0 front' } })
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'ok')
  const via = seen[0] ?? ''
  const elements = via.split(',').map((s) => s.trim())
  t.equal(elements.length, 3, `the client's element and one per instance: ${via}`)
  t.equal(elements[0], '1.0 front')
  t.match(elements[1], /^1\.1 \S+$/)
  t.match(elements[2], /^1\.1 \S+$/)
  t.not(elements[1], elements[2], 'two instances, two pseudonyms')
  // Two createProxy calls with the very same config are two instances too.
  const cfg = { routes: [{ protocol: 'http', backends: [b.address] }] }
  const p1 = await proxyServer(t, cfg)
  const p2 = await proxyServer(t, cfg)
  seen.length = 0
  t.equal((await get(`${p1.url}/`)).status, 200)
  t.equal((await get(`${p2.url}/`)).status, 200)
  t.not(seen[0], seen[1], 'a pseudonym per createProxy call')
})

t.test('an operator-set via is the pseudonym: a request already carrying it is refused', async (t) => {
  let reached = 0
  const b = await backend(t, (_req, res) => { reached++; res.end('ok') })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [b.address], via: 'edge-1' }] })
  t.equal((await get(`${url}/`, { headers: { via: '1.1 edge-1' } })).status, 508, 'its own pseudonym')
  t.equal((await get(`${url}/`, { headers: { via: '1.0 a, HTTP/1.1 edge-1 (proxycore)' } })).status, 508, 'further down the list, with a comment')
  t.equal(reached, 0)
  t.equal((await get(`${url}/`, { headers: { via: '1.1 edge-10, 1.1 edge-1x, 1.1 xedge-1' } })).status, 200, 'a name it only resembles')
  t.equal((await get(`${url}/`, { headers: { via: '1.1 other (edge-1)' } })).status, 200, 'in a comment only')
  t.equal(reached, 2)
})

t.test('Via stays bounded: one element of ours added to a large incoming Via', async (t) => {
  let got = ''
  const b = await backend(t, (req, res) => { got = req.headers.via ?? ''; res.end('ok') })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [b.address] }] })
  const big = Array.from({ length: 400 }, (_, i) => `1.1 hop${i}`).join(', ')
  const r = await get(`${url}/`, { headers: { via: big } })
  t.equal(r.status, 200)
  t.ok(got.startsWith(`${big}, 1.1 `), 'the incoming list kept as is')
  t.ok(got.length - big.length < 64, `one short element added (${got.length - big.length} bytes)`)
})
