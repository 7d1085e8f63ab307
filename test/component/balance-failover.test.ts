/**
 * Balancing and failover through a real proxy: least-connection follows the load, round-robin
 * shares evenly, a refused backend is skipped for disableTime and comes back, a pool with every
 * backend down answers 503 ERR_NO_BACKEND + Retry-After, and a request whose body went to one
 * backend is never sent to another.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { deadPort, freePort } from '../helpers/ports.js'
import { backend, closeServer, get, proxyServer, type Got } from '../helpers/servers.js'
import { startFake, respond } from '../fastcgi/helpers/fake.js'
import { rec, endBody } from '../fastcgi/helpers/records.js'
import { tempDir } from '../fastcgi/helpers/peers.js'
import { fnv1a } from '../../src/core/balancers.js'

guardLeaks(t)

interface Tap { teardown (fn: () => unknown): void }

async function named (t: Tap, name: string, delayMs = 0, port = 0) {
  const seen: string[] = []
  const bodies: string[] = []
  const be = await backend(t, (req, res) => {
    seen.push(req.url ?? '')
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => { body += c })
    req.on('end', () => {
      bodies.push(body)
      if (delayMs === 0) res.end(name)
      else setTimeout(() => res.end(name), delayMs)
    })
  }, port)
  return { ...be, seen, bodies, name }
}

/** A loopback port nothing listens on (not one a closed listen(0) gave back: see helpers/ports.ts). */
async function deadAddress (): Promise<string> {
  return `127.0.0.1:${await deadPort()}`
}

t.test('least-connection sends most of a concurrent load to the fast backend', async (t) => {
  const slow = await named(t, 'slow', 400)
  const fast = await named(t, 'fast')
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [slow.address, fast.address], balance: 'least-connection' }] })
  // Two waves of 10 concurrent requests: the slow backend keeps the ones it took in flight.
  const all: Got[] = []
  for (let w = 0; w < 2; w++) {
    const wave: Array<Promise<Got>> = []
    for (let i = 0; i < 10; i++) {
      wave.push(get(`${url}/${w}-${i}`))
      // One at a time, so each pick sees the in-flight counts of the previous ones.
      await waitFor(() => slow.seen.length + fast.seen.length === w * 10 + i + 1, 5000)
    }
    all.push(...await Promise.all(wave))
  }
  t.ok(all.every((r) => r.status === 200))
  t.ok(fast.seen.length > slow.seen.length, `fast ${fast.seen.length} > slow ${slow.seen.length}`)
})

t.test('round-robin shares evenly', async (t) => {
  const bs = await Promise.all(['a', 'b', 'c'].map((n) => named(t, n)))
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: bs.map((b) => b.address), balance: 'round-robin' }] })
  const got: string[] = []
  for (let i = 0; i < 9; i++) got.push((await get(`${url}/${i}`)).body.toString())
  t.same(got, ['a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c'])
})

t.test('a refused backend is skipped for disableTime, then tried again; all down -> 503 ERR_NO_BACKEND + Retry-After', async (t) => {
  const dead = await deadAddress()
  const live = await named(t, 'live')
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [dead, live.address], balance: 'round-robin', disableTime: '500ms' }] })
  const r1 = await get(`${url}/1`)
  t.equal(r1.status, 200, 'failed over to the live backend')
  const pool = proxy.routes[0].pool
  const deadB = pool.backends.find((b) => b.endpoint.id === dead)!
  t.equal(deadB.state, 'disabled')
  const failures = deadB.failures
  for (let i = 0; i < 4; i++) t.equal((await get(`${url}/x${i}`)).status, 200)
  t.equal(deadB.failures, failures, 'not tried while disabled')
  t.ok(await waitFor(() => Date.now() >= deadB.disabledUntil, 5000))
  t.equal((await get(`${url}/again`)).status, 200)
  t.ok(deadB.failures > failures, 'tried again once disableTime passed')

  // Every backend refused: the last real error, then 503 ERR_NO_BACKEND with Retry-After.
  const dead2 = await deadAddress()
  const { url: url2 } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [dead, dead2], disableTime: '30s' }] })
  const first = await get(`${url2}/a`)
  t.equal(first.status, 502)
  t.match(first.body.toString(), /ERR_CONNECT_REFUSED/)
  const second = await get(`${url2}/b`)
  t.equal(second.status, 503)
  t.match(second.body.toString(), /ERR_NO_BACKEND/)
  const ra = Number(second.headers['retry-after'])
  t.ok(ra >= 1 && ra <= 30, `Retry-After ${ra} within disableTime`)
})

t.test('retries bounds the failover: retries 1 tries two backends of three', async (t) => {
  const deads = [await deadAddress(), await deadAddress()]
  const live = await named(t, 'live')
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [...deads, live.address], balance: 'round-robin', retries: 1 }] })
  const r = await get(`${url}/x`)
  t.equal(r.status, 502, 'gave up after one retry')
  t.equal(live.seen.length, 0)
  t.same(proxy.routes[0].pool.backends.map((b) => b.failures), [1, 1, 0])
})

t.test('an HTTP POST the backend took is never sent to another backend', async (t) => {
  let aGot = 0
  const a = await backend(t, (req) => {
    req.on('data', () => {})
    req.on('end', () => { aGot++; req.socket.destroy() })
  })
  const b = await named(t, 'b')
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [a.address, b.address], balance: 'round-robin', retries: 2 }] })
  const r = await get(`${url}/p`, { method: 'POST', body: 'payload' })
  t.equal(r.status, 502)
  t.equal(aGot, 1)
  t.equal(b.seen.length, 0, 'not sent again')
})

t.test('FastCGI OVERLOADED: a bodiless GET fails over; a POST whose streamed body was sent is not sent again', async (t) => {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'x.php'), '')
  const seen: string[] = []
  const overloaded = await startFake(t as never, dir, { tcp: true, onRequest: (req) => { seen.push(`A ${req.stdin.length}`); req.sock.write(rec(3, req.id, endBody(0, 2))) } })
  const good = await startFake(t as never, dir, { tcp: true, onRequest: (req) => { seen.push(`B ${req.stdin.length}`); respond(req, `got ${req.stdin.length}`) } })
  const { url } = await proxyServer(t, {
    routes: [{ protocol: 'fastcgi', backends: [overloaded.endpoint.id, good.endpoint.id], balance: 'round-robin', docroot: dir }],
  })
  const r = await get(`${url}/x.php`)
  t.equal(r.status, 200)
  t.same(seen, ['A 0', 'B 0'], 'rejected unprocessed: tried on the other backend')

  seen.length = 0
  // Streamed: a buffered body is sent whole to the next backend instead (test/fastcgi/overloaded-replay.test.ts).
  const { url: url2 } = await proxyServer(t, {
    routes: [{ protocol: 'fastcgi', backends: [overloaded.endpoint.id, good.endpoint.id], balance: 'round-robin', docroot: dir, requestBuffering: false }],
  })
  const p = await get(`${url2}/x.php`, { method: 'POST', body: 'x'.repeat(5000) })
  t.equal(p.status, 503)
  t.match(p.body.toString(), /ERR_BACKEND_OVERLOADED/)
  t.same(seen, ['A 5000'], 'the body went to one backend only')
})

t.test('FastCGI OVERLOADED: the busy backend is skipped briefly (as for EAGAIN), not for the whole disableTime', async (t) => {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'x.php'), '')
  let n = 0
  const fake = await startFake(t as never, dir, { tcp: true, onRequest: (req) => { if (n++ === 0) req.sock.write(rec(3, req.id, endBody(0, 2))); else respond(req, 'served') } })
  // A second backend: one alone in its route is never skipped at all.
  const other = await startFake(t as never, dir, { tcp: true, onRequest: (req) => { respond(req, 'other') } })
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'fastcgi', backends: [fake.endpoint.id, other.endpoint.id], balance: 'round-robin', docroot: dir, disableTime: '60s' }] })
  const first = await get(`${url}/x.php`)
  t.equal(first.status, 200, 'the bodiless GET the busy backend refused went to the other one')
  t.match(first.body.toString(), /other/)
  const b = proxy.routes[0].pool.backends[0]
  t.equal(b.state, 'disabled', 'skipped for a while')
  t.ok(b.disabledUntil - Date.now() <= 1000, `skipped at most 1 s, not disableTime (${b.disabledUntil - Date.now()} ms left)`)
  let served = false
  for (const deadline = Date.now() + 20_000; !served && Date.now() < deadline;) {
    const r = await get(`${url}/x.php`)
    t.equal(r.status, 200)
    if (r.body.toString().includes('served')) served = true
    else await waitFor(() => Date.now() >= b.disabledUntil, 20_000)
  }
  t.ok(served, 'served by the busy backend again long before disableTime ends')
})

t.test('no false pool:down while a backend whose disableTime is over is still marked disabled', async (t) => {
  // Both are stopped mid-test and a listens again: ports no listen(0) elsewhere can take meanwhile.
  const a = await named(t, 'a', 0, await freePort())
  const b = await named(t, 'b', 0, await freePort())
  const aPort = a.port
  // Keys that hash to a (index 0) and to b (index 1).
  const keys = Array.from({ length: 64 }, (_, i) => `/k${i}`)
  const toA = keys.find((k) => fnv1a(k) % 2 === 0)!
  const toB = keys.find((k) => fnv1a(k) % 2 === 1)!
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [a.address, b.address], balance: 'hash', disableTime: '300ms' }] })
  const events: string[] = []
  proxy.events.on('pool:down', () => events.push('down'))
  proxy.events.on('pool:up', () => events.push('up'))
  await closeServer(a.server)
  t.equal((await get(`${url}${toA}`)).body.toString(), 'b', 'a refused: failed over to b')
  const pool = proxy.routes[0].pool
  const aB = pool.backends[0]
  t.equal(aB.state, 'disabled')
  // a comes back; its disableTime ends; nothing asks for it, so it is still marked disabled.
  await new Promise<void>((resolve) => a.server.listen(aPort, '127.0.0.1', resolve))
  t.ok(await waitFor(() => Date.now() >= aB.disabledUntil, 5000))
  t.equal(aB.state, 'disabled', 'still marked disabled (re-enabled when next asked)')
  await closeServer(b.server)
  const r = await get(`${url}${toB}`)
  t.equal(r.body.toString(), 'a', 'b refused: a took it')
  t.same(events, [], 'the pool was never down: a was usable all along')
})

t.test('an exchange that tried every backend does not mark a pool of usable backends down', async (t) => {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'x.php'), '')
  let n = 0
  const fake = await startFake(t as never, dir, { tcp: true, onRequest: (req) => { if (n++ === 0) req.sock.write(rec(3, req.id, endBody(0, 2))); else respond(req, 'served') } })
  // disableTime 0: a busy backend is never skipped, only not asked twice by one exchange.
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'fastcgi', backends: [fake.endpoint.id], docroot: dir, disableTime: 0 }] })
  const events: string[] = []
  proxy.events.on('pool:down', () => events.push('down'))
  proxy.events.on('pool:up', () => events.push('up'))
  const first = await get(`${url}/x.php`)
  t.equal(first.status, 503)
  t.match(first.body.toString(), /ERR_BACKEND_OVERLOADED/)
  const next = await get(`${url}/x.php`)
  t.equal(next.status, 200, 'the backend was usable for the next request')
  t.same(events, [], 'no pool:down / pool:up pair for one exchange out of tries')
})

t.test('a POST refused at connect goes to the next backend with its whole body, once', async (t) => {
  const dead = await deadAddress()
  const live = await named(t, 'live')
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [dead, live.address], balance: 'round-robin' }] })
  const big = Buffer.alloc(1024 * 1024, 'y')
  const r = await get(`${url}/p`, { method: 'POST', body: big })
  t.equal(r.status, 200)
  t.equal(live.bodies.length, 1, 'sent once')
  t.equal(live.bodies[0].length, big.length, 'the whole body')
})
