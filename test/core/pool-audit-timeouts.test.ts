/**
 * Audit (H7): timeouts through a real proxy, and that each leaves nothing behind.
 *
 * - timeouts.headers: a backend that takes the request and never answers gets 504
 *   ERR_HEADERS_TIMEOUT; a GET is not sent to another backend (it may be running there);
 * - timeouts.headers while the backend stops reading a streamed upload (backpressure): 504, not a
 *   hang (the head deadline counts from the last upload byte, and the client is held back);
 * - timeouts.idle: a backend that stops inside its response body: the client's response is cut
 *   (no complete body, the connection ends), the backend connection dropped;
 * - timeouts.clientIdle: a client that stops sending its body: 408 ERR_REQUEST_TIMEOUT;
 * - after a head timeout, a queue timeout, a queue refusal and a client leaving the queue, the
 *   counters are 0 and no timer that holds the event loop is left (process.getActiveResourcesInfo
 *   lists ref'd Timeouts only), nor any socket or fd (guardLeaks).
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { counters, settled, ZERO } from '../helpers/counters.js'
import { backend, get, proxyServer, rawBackend, rawRequest, type Got } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

const code = (r: Got): string => /ERR_[A-Z_]+/.exec(r.body.toString())?.[0] ?? ''
const timers = (): number => process.getActiveResourcesInfo().filter((x) => x === 'Timeout').length

t.test('headers timeout: 504 ERR_HEADERS_TIMEOUT, the GET not sent to the other backend', async (t) => {
  const got: string[] = []
  const mute = async () => rawBackend(t, (s: Socket) => { s.on('data', (d: Buffer) => { if (d.includes('\r\n\r\n')) got.push(d.toString('latin1').split(' ')[1] ?? '') }) })
  const b1 = await mute()
  const b2 = await mute()
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [b1.address, b2.address], timeouts: { headers: '400ms' } }] })
  const started = Date.now()
  const r = await get(`${url}/slow`)
  t.equal(r.status, 504)
  t.equal(code(r), 'ERR_HEADERS_TIMEOUT')
  t.ok(Date.now() - started >= 350, 'after the headers timeout')
  t.same(got, ['/slow'], 'sent to one backend only')
  t.ok(await settled(proxy))
  t.same(proxy.routes[0].pool.backends.map((b) => b.state), ['up', 'up'], 'a slow answer disables no backend')
})

t.test('headers timeout while the backend stops reading a streamed upload: 504, no hang', async (t) => {
  const be = await backend(t, (req) => { req.pause() })
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: '500ms' } }] })
  const r = await get(`${url}/up`, { method: 'POST', body: Buffer.alloc(16 * 1024 * 1024) }).catch((err: Error) => err)
  if (r instanceof Error) {
    // The proxy may close before it read the whole upload: the client then sees the reset.
    t.match(r.message, /EPIPE|ECONNRESET|socket hang up/, `client saw ${r.message}`)
  } else {
    t.equal(r.status, 504)
    t.equal(code(r), 'ERR_HEADERS_TIMEOUT')
  }
  t.ok(await settled(proxy))
})

t.test('idle timeout inside the response body: the client response is cut, counters back to 0', async (t) => {
  const be = await rawBackend(t, (s: Socket) => {
    s.once('data', () => { s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf') })
  })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { idle: '400ms' } }] })
  const out = await rawRequest(port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n')
  t.match(out, /^HTTP\/1\.1 200 /, 'the head went out')
  t.match(out, /Content-Length: 100\r\n/i)
  t.ok(out.endsWith('\r\n\r\nhalf'), 'the body stops where the backend stopped, and the connection ends')
  t.ok(await settled(proxy))
  t.ok(await waitFor(() => be.sockets.every((s) => s.destroyed || s.readableEnded), 10_000), 'the backend connection is dropped')
})

t.test('clientIdle: a client that stops sending its body gets 408 ERR_REQUEST_TIMEOUT', async (t) => {
  const seen: number[] = []
  const be = await backend(t, (req, res) => { let n = 0; req.on('data', (c: Buffer) => { n += c.length }); req.on('end', () => { seen.push(n); res.end('x') }) })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { clientIdle: '400ms' } }] })
  const out = await new Promise<string>((resolve) => {
    const s = connect({ host: '127.0.0.1', port })
    let buf = ''
    s.on('data', (d: Buffer) => { buf += d.toString('latin1') })
    s.on('error', () => {})
    s.on('close', () => resolve(buf))
    s.write('POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly-part')
  })
  t.match(out, /^HTTP\/1\.1 408 /)
  t.match(out, /ERR_REQUEST_TIMEOUT/)
  t.same(seen, [], 'the backend never saw a complete body')
  t.ok(await settled(proxy))
})

t.test('no timer is left behind by timeouts, refusals and aborts', async (t) => {
  const held: Array<() => void> = []
  const be = await backend(t, (req, res) => {
    req.resume()
    if (req.url === '/qhold') held.push(() => res.end('x'))
    else if (req.url !== '/mute') res.end('ok')
  })
  // Route 0 (the one counters() reads) queues; route 1 times out heads.
  const { url, port, proxy } = await proxyServer(t, {
    routes: [
      { protocol: 'http', match: { prefix: '/q' }, backends: [be.address], maxConcurrent: 1, queue: 1, queueTimeout: '1500ms' },
      { protocol: 'http', backends: [be.address], timeouts: { headers: '300ms' } },
    ],
  })
  t.equal((await get(`${url}/plain`)).status, 200)
  t.equal((await get(`${url}/qplain`)).status, 200)
  t.ok(await settled(proxy))
  const base = timers()
  // A head timeout.
  const mute = await get(`${url}/mute`)
  t.equal(mute.status, 504)
  t.equal(code(mute), 'ERR_HEADERS_TIMEOUT')
  // A queue timeout and a queue full, behind a held request.
  const hold = get(`${url}/qhold`)
  t.ok(await waitFor(() => held.length === 1, 10_000))
  const queuedOut = get(`${url}/q1`)
  t.ok(await waitFor(() => counters(proxy).queued === 1, 10_000))
  const full = await get(`${url}/q2`)
  t.equal(code(full), 'ERR_QUEUE_FULL')
  t.equal(code(await queuedOut), 'ERR_QUEUE_TIMEOUT')
  // A client that leaves while queued.
  const s = connect({ host: '127.0.0.1', port })
  s.on('error', () => {})
  s.write('GET /q3 HTTP/1.1\r\nHost: a\r\n\r\n')
  t.ok(await waitFor(() => counters(proxy).queued === 1, 10_000))
  s.destroy()
  t.ok(await waitFor(() => counters(proxy).queued === 0, 10_000))
  held.shift()!()
  t.equal((await hold).status, 200)
  t.ok(await settled(proxy))
  t.same(counters(proxy), ZERO)
  t.ok(await waitFor(() => timers() <= base, 10_000), `Timeout handles back to ${base} (now ${timers()})`)
})
