/**
 * Routing, balancing, passive health, failover, admission and prefix mapping through real
 * node:http backends.
 */
import t from 'tap'
import { request } from 'node:http'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { deadPort, freePort } from '../helpers/ports.js'
import { backend, closeServer, get, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

interface Tap { teardown (fn: () => unknown): void }

/** A backend that answers with its own name and records what it saw. */
async function named (t: Tap, name: string, port = 0) {
  const seen: Array<{ url: string, host: string | undefined }> = []
  const be = await backend(t, (req, res) => {
    seen.push({ url: req.url ?? '', host: req.headers.host })
    req.resume()
    req.on('end', () => res.end(name))
  }, port)
  return { ...be, seen, name }
}

t.test('first match wins; host, prefix, extension, glob, regex and methods', async (t) => {
  const [a, b, c, d, e, f, g] = await Promise.all(['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((n) => named(t, n)))
  const { url } = await proxyServer(t, {
    routes: [
      { match: { host: '*.example.com' }, protocol: 'http', backends: [a.address] },
      { match: { host: 'exact.test', prefix: '/api/' }, protocol: 'http', backends: [b.address] },
      { match: { extension: '.php' }, protocol: 'http', backends: [c.address] },
      { match: { glob: '/static/**/*.css' }, protocol: 'http', backends: [d.address] },
      { match: { regex: '^/v[0-9]+/' }, protocol: 'http', backends: [e.address] },
      { match: { methods: ['DELETE'] }, protocol: 'http', backends: [f.address] },
      { match: { prefix: '/' }, protocol: 'http', backends: [g.address] },
    ],
  })
  const cases: Array<[string, Record<string, string>, string, string]> = [
    ['/x', { host: 'www.example.com' }, 'GET', 'a'],
    ['/x', { host: 'example.com' }, 'GET', 'g'],
    ['/api/users', { host: 'exact.test:8080' }, 'GET', 'b'],
    ['/api', { host: 'exact.test' }, 'GET', 'b'],
    ['/apix', { host: 'exact.test' }, 'GET', 'g'],
    ['/index.php/extra', { host: 'h' }, 'GET', 'c'],
    ['/index.phps', { host: 'h' }, 'GET', 'g'],
    ['/static/a/b/site.css', { host: 'h' }, 'GET', 'd'],
    ['/v2/items', { host: 'h' }, 'GET', 'e'],
    ['/anything', { host: 'h' }, 'DELETE', 'f'],
    ['/anything', { host: 'h' }, 'GET', 'g'],
  ]
  for (const [path, headers, method, want] of cases) {
    const r = await get(url + path, { headers, method })
    t.equal(r.body.toString(), want, `${method} ${headers.host}${path} -> ${want}`)
  }
})

t.test('no route -> 404 with a stable code', async (t) => {
  const a = await named(t, 'a')
  const { url } = await proxyServer(t, { routes: [{ match: { prefix: '/only/' }, protocol: 'http', backends: [a.address] }] })
  const r = await get(`${url}/elsewhere`)
  t.equal(r.status, 404)
  t.match(r.body.toString(), /ERR_NO_ROUTE/)
})

t.test('balancers: round-robin spreads, hash and sticky keep keys in place', async (t) => {
  const bes = await Promise.all(['a', 'b', 'c'].map((n) => named(t, n)))
  const addrs = bes.map((b) => b.address)
  const { url } = await proxyServer(t, {
    routes: [
      { match: { prefix: '/rr/' }, protocol: 'http', backends: addrs, balance: 'round-robin' },
      { match: { prefix: '/hash/' }, protocol: 'http', backends: addrs, balance: 'hash' },
      { match: { prefix: '/sticky/' }, protocol: 'http', backends: addrs, balance: 'sticky' },
      { match: { prefix: '/lc/' }, protocol: 'http', backends: addrs },
    ],
  })
  const rr = []
  for (let i = 0; i < 6; i++) rr.push((await get(`${url}/rr/x`)).body.toString())
  t.same(rr.slice(0, 3).sort(), ['a', 'b', 'c'], 'round-robin visits every backend')
  t.same(rr.slice(3), rr.slice(0, 3), 'in a stable order')
  const first = (await get(`${url}/hash/key-1`)).body.toString()
  for (let i = 0; i < 5; i++) t.equal((await get(`${url}/hash/key-1`)).body.toString(), first, 'same URL, same backend')
  const keys = new Set<string>()
  for (let i = 0; i < 30; i++) keys.add((await get(`${url}/hash/key-${i}`)).body.toString())
  t.ok(keys.size > 1, 'different URLs spread')
  const s1 = (await get(`${url}/sticky/a`)).body.toString()
  t.equal((await get(`${url}/sticky/b`)).body.toString(), s1, 'sticky: same client, same backend')
  const lc = new Set<string>()
  for (let i = 0; i < 6; i++) lc.add((await get(`${url}/lc/x`)).body.toString())
  t.equal(lc.size, 3, 'least-connection shares ties')
})

t.test('failover: a refused backend is skipped and disabled; a sole backend is tried every time', async (t) => {
  const a = await named(t, 'a')
  const dead = { address: `127.0.0.1:${await deadPort()}` }
  const { url, proxy } = await proxyServer(t, {
    routes: [
      { match: { prefix: '/mixed/' }, protocol: 'http', backends: [dead.address, a.address], balance: 'round-robin', disableTime: '5s' },
      { match: { prefix: '/down/' }, protocol: 'http', backends: [dead.address], disableTime: '7s' },
    ],
  })
  const events: string[] = []
  proxy.events.on('backend:disabled', (e) => events.push(`disabled ${e.pool} ${e.backend}`))
  proxy.events.on('pool:down', (e) => events.push(`down ${e.pool}`))
  for (let i = 0; i < 4; i++) t.equal((await get(`${url}/mixed/x`)).body.toString(), 'a', 'served by the live backend')
  t.same(events.filter((e) => e.startsWith('disabled 0')), [`disabled 0 ${dead.address}`], 'disabled once, not per request')
  // nginx: a server alone in its group is never considered unavailable. A 503 for disableTime
  // would outlast a 200 ms restart of the backend by seconds.
  for (let i = 0; i < 3; i++) {
    const r = await get(`${url}/down/x`)
    t.equal(r.status, 502, `request ${i + 1}: the connect error itself, not a 503 for disableTime`)
    t.match(r.body.toString(), /ERR_CONNECT_REFUSED/)
  }
  const sole = proxy.routes[1].pool.backends[0]
  t.same([sole.state, sole.failures], ['up', 3], 'never disabled, every failure counted')
  t.same(events.filter((e) => e.endsWith(' 1') || e.includes('disabled 1')), [], 'no backend:disabled, no pool:down for it')
})

t.test('a sole backend that restarts serves again at once, not after disableTime', async (t) => {
  // Stopped, then bound again: a port no listen(0) elsewhere can take in between.
  const b = await named(t, 'b', await freePort())
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [b.address], disableTime: '30s' }] })
  t.equal((await get(`${url}/`)).body.toString(), 'b')
  await closeServer(b.server)
  t.equal((await get(`${url}/`)).status, 502, 'down: the connect error')
  await new Promise<void>((resolve) => b.server.listen(b.port, '127.0.0.1', resolve))
  const back = await get(`${url}/`)
  t.equal(back.status, 200, 'back: served by the next request (it was a 503 for the 30 s disableTime)')
  t.equal(back.body.toString(), 'b')
})

t.test('admission: maxConcurrent with a bounded queue; beyond it 503, counted as dropped', async (t) => {
  const release: Array<() => void> = []
  let arrived = 0
  const slow = await backend(t, (_req, res) => { arrived++; release.push(() => res.end('done')) })
  const { url, proxy } = await proxyServer(t, {
    routes: [{ protocol: 'http', backends: [slow.address], maxConcurrent: 2, queue: 1, queueTimeout: '5s' }],
  })
  const pending = [get(`${url}/1`), get(`${url}/2`), get(`${url}/3`)]
  t.ok(await waitFor(() => arrived === 2 && proxy.routes[0].admission.queued === 1, 3000), 'two in flight, one queued')
  const dropped = await get(`${url}/4`)
  t.equal(dropped.status, 503)
  t.match(dropped.body.toString(), /ERR_QUEUE_FULL/)
  t.ok(dropped.headers['retry-after'], 'Retry-After on 503')
  t.equal(proxy.routes[0].stats.dropped, 1, 'counted as dropped')
  while (release.length > 0 || arrived < 3) {
    const next = release.shift()
    if (next) next()
    else await waitFor(() => release.length > 0, 2000)
  }
  const all = await Promise.all(pending)
  t.same(all.map((r) => r.status), [200, 200, 200], 'queued request served once a slot freed')
  t.equal(proxy.routes[0].admission.active, 0, 'every slot released')
})

t.test('queue timeout -> 503 ERR_QUEUE_TIMEOUT', async (t) => {
  let hold: (() => void) | null = null
  const slow = await backend(t, (_req, res) => { hold = () => res.end('x') })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [slow.address], maxConcurrent: 1, queue: 5, queueTimeout: '100ms' }] })
  const first = get(`${url}/a`)
  await waitFor(() => hold !== null, 2000)
  const second = await get(`${url}/b`)
  t.equal(second.status, 503)
  t.match(second.body.toString(), /ERR_QUEUE_TIMEOUT/)
  ;(hold as unknown as () => void)()
  t.equal((await first).status, 200)
})

t.test('prefix mapping: stripPrefix, Location and Set-Cookie rewritten back, Host per route', async (t) => {
  const app = await backend(t, (req, res) => {
    if (req.url === '/login') {
      res.writeHead(302, { location: `http://${req.headers.host}/home`, 'set-cookie': 'sid=1; Path=/; HttpOnly' })
      res.end()
      return
    }
    res.setHeader('location', '/relative/next')
    res.end(`${req.url} host=${req.headers.host}`)
  })
  const { url } = await proxyServer(t, {
    routes: [
      { match: { prefix: '/app/' }, protocol: 'http', backends: [app.address], stripPrefix: true, hostHeader: 'backend' },
      { match: { prefix: '/lit/' }, protocol: 'http', backends: [app.address], hostHeader: 'internal.example' },
      { match: { prefix: '/' }, protocol: 'http', backends: [app.address] },
    ],
  })
  const r = await get(`${url}/app/page?q=1`, { headers: { host: 'public.example' } })
  t.match(r.body.toString(), /^\/page\?q=1 host=127\.0\.0\.1:\d+$/, 'prefix stripped, Host = backend address')
  t.equal(r.headers.location, '/app/relative/next', 'relative Location mapped back under the prefix')
  const login = await get(`${url}/app/login`)
  t.equal(login.headers.location, '/app/home', 'absolute Location pointing at the backend mapped back')
  t.match(String(login.headers['set-cookie']), /Path=\/app\//, 'cookie path mapped back')
  t.match((await get(`${url}/lit/x`)).body.toString(), /host=internal\.example$/, 'literal Host')
  t.match((await get(`${url}/x`, { headers: { host: 'keep.example' } })).body.toString(), /host=keep\.example$/, 'Host preserved by default')
})

t.test('trusted proxies: X-Forwarded-For walked right to left (lighttpd extforward cases)', async (t) => {
  let xff = ''
  const be = await backend(t, (req, res) => { xff = String(req.headers['x-forwarded-for']); res.end() })
  const { url } = await proxyServer(t, { trustedProxies: ['127.0.0.1', '127.0.30.1'], routes: [{ protocol: 'http', backends: [be.address], forwarded: true }] })
  await get(url, { headers: { 'x-forwarded-for': '127.0.10.1, 127.0.20.1' } })
  t.equal(xff, '127.0.10.1, 127.0.20.1, 127.0.0.1', 'outbound always appends the peer')
})

t.test('middleware form: an unmatched request falls through to next()', async (t) => {
  const a = await named(t, 'a')
  const { proxy } = await proxyServer(t, { routes: [{ match: { prefix: '/p/' }, protocol: 'http', backends: [a.address] }] })
  let fell = false
  await new Promise<void>((resolve) => {
    const fakeRes = { once () {}, on () {} } as never
    proxy.handler({ method: 'GET', url: '/other', headers: { host: 'h' }, rawHeaders: ['Host', 'h'], httpVersion: '1.1', httpVersionMajor: 1, httpVersionMinor: 1, socket: {} } as never, fakeRes, () => { fell = true; resolve() })
  })
  t.ok(fell)
})

t.test('a slow client pauses the backend (backpressure), and nothing is buffered whole', async (t) => {
  const chunk = Buffer.alloc(256 * 1024, 1)
  let written = 0
  const be = await backend(t, (_req, res) => {
    const pump = (): void => {
      while (written < 64 * 1024 * 1024) {
        written += chunk.length
        if (!res.write(chunk)) { res.once('drain', pump); return }
      }
      res.end()
    }
    pump()
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  await new Promise<void>((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', path: '/big', agent: false }, (res) => {
      res.pause()
      // While the client reads nothing, the backend must stall far below the 64 MiB it wants to send.
      void waitFor(() => false, 300).then(() => {
        t.ok(written < 16 * 1024 * 1024, `backend paused after ${written} bytes`)
        res.destroy()
        resolve()
      })
    })
    req.on('error', reject)
    req.end()
  })
})
