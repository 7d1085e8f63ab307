/**
 * A backend leaves the pool (a spawn recycles a process, a reload drops it: BackendPool.sync drains
 * it) while requests are in flight on it and others wait in the route's queue: the ones in flight
 * finish on it, the queued ones go to what is left, nothing is lost or hangs, and the drained
 * backend's connections close once it is idle. Also: one flooded route does not hold up another.
 */
import t from 'tap'
import { fileURLToPath } from 'node:url'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, get, proxyServer, type Got } from '../helpers/servers.js'
import type { BackendSource, SourceEndpoint } from '../../src/core/types.js'
import type { RouteConfig } from '../../src/config/schema.js'

guardLeaks(t, { timeoutMs: 10_000 })

interface Tap { teardown (fn: () => unknown): void }

async function holding (t: Tap, name: string) {
  const seen: string[] = []
  const held: Array<() => void> = []
  const be = await backend(t, (req, res) => {
    seen.push(req.url ?? '')
    req.resume()
    held.push(() => res.end(`${name} ${req.url}`))
  })
  return { ...be, seen, held, name }
}

/** An embedder's source whose list the test changes, as a spawn's changes when it recycles. */
class MovingSource implements BackendSource {
  readonly name = 'moving'
  private eps: SourceEndpoint[] = []
  private readonly subs = new Set<() => void>()
  private waiters: Array<() => void> = []
  list (): readonly SourceEndpoint[] { return this.eps }
  subscribe (fn: () => void): () => void { this.subs.add(fn); return () => { this.subs.delete(fn) } }
  ensure (signal: AbortSignal): Promise<void> {
    if (this.eps.length > 0) return Promise.resolve()
    return new Promise((resolve) => {
      const done = (): void => { signal.removeEventListener('abort', done); resolve() }
      signal.addEventListener('abort', done, { once: true })
      this.waiters.push(done)
    })
  }

  set (addresses: string[]): void {
    this.eps = addresses.map((a) => ({ id: a, address: a }))
    for (const f of this.subs) f()
    if (this.eps.length > 0) { const w = this.waiters; this.waiters = []; for (const f of w) f() }
  }
}


/** A proxy whose one route follows a MovingSource that starts at `first`. */
async function movingProxy (t: Parameters<typeof proxyServer>[0], first: string, route: Partial<RouteConfig> = {}) {
  const src = new MovingSource()
  src.set([first])
  const { url, proxy } = await proxyServer(t, { sources: { moving: src }, routes: [{ protocol: 'http', spawn: 'moving', ...route }] })
  return { url, proxy, src }
}
t.test('a backend drained with requests in flight on it and more queued: nothing lost, nothing hangs', async (t) => {
  const a = await holding(t, 'a')
  const b = await holding(t, 'b')
  const { url, proxy, src } = await movingProxy(t, a.address, { maxConcurrent: 2, queue: 10, queueTimeout: '60s' })
  const route = proxy.routes[0]
  const pending: Array<Promise<Got>> = []
  for (let i = 0; i < 4; i++) pending.push(get(`${url}/${i}`))
  t.ok(await waitFor(() => a.seen.length === 2 && route.admission.queued === 2, 5000), 'two on a, two queued')
  src.set([b.address])
  const drained = route.pool.draining.size
  t.equal(drained, 1, 'a is draining')
  for (const f of a.held.splice(0)) f()
  t.ok(await waitFor(() => b.seen.length === 2, 5000), 'the queued requests went to b')
  t.equal(route.pool.draining.size, 0, 'a reaped once idle')
  for (const f of b.held.splice(0)) f()
  const all = await Promise.all(pending)
  t.same(all.map((r) => r.body.toString()), ['a /0', 'a /1', 'b /2', 'b /3'])
  t.ok(await waitFor(() => route.admission.active === 0 && route.pool.inflight === 0, 5000), 'counters back to 0')
})

t.test('every backend gone while requests wait: they wait for the next one, then are served', async (t) => {
  const a = await holding(t, 'a')
  const c = await holding(t, 'c')
  const { url, proxy, src } = await movingProxy(t, a.address, { maxConcurrent: 1, queue: 10, queueTimeout: '60s', timeouts: { headers: '30s' } })
  const route = proxy.routes[0]
  const first = get(`${url}/first`)
  t.ok(await waitFor(() => a.seen.length === 1, 5000))
  const queued = [get(`${url}/q1`), get(`${url}/q2`)]
  t.ok(await waitFor(() => route.admission.queued === 2, 5000))
  src.set([])
  a.held.shift()!()
  t.equal((await first).body.toString(), 'a /first', 'the one in flight finished on the drained backend')
  t.equal(route.admission.active, 1, 'the slot passed to a queued request, which waits for a backend')
  src.set([c.address])
  t.ok(await waitFor(() => c.seen.length === 1, 5000))
  c.held.shift()!()
  t.ok(await waitFor(() => c.seen.length === 2, 5000))
  c.held.shift()!()
  t.same((await Promise.all(queued)).map((r) => r.body.toString()), ['c /q1', 'c /q2'])
  t.ok(await waitFor(() => route.admission.active === 0 && route.admission.queued === 0 && route.pool.inflight === 0 && route.pool.draining.size === 0, 5000))
})

t.test('a flooded route does not hold up another route', async (t) => {
  const slow = await holding(t, 'slow')
  const fast = await backend(t, (_req, res) => { res.end('fast') })
  const { url, proxy } = await proxyServer(t, {
    routes: [
      { match: { prefix: '/a/' }, protocol: 'http', backends: [slow.address], maxConcurrent: 2, queue: 5, queueTimeout: '60s' },
      { match: { prefix: '/b/' }, protocol: 'http', backends: [fast.address], maxConcurrent: 2, queue: 5, queueTimeout: '60s' },
    ],
  })
  const flood = Array.from({ length: 10 }, (_, i) => get(`${url}/a/${i}`))
  t.ok(await waitFor(() => slow.seen.length === 2 && proxy.routes[0].admission.queued === 5, 5000), 'a is full')
  t.ok(await waitFor(() => proxy.routes[0].stats.dropped === 3, 5000), 'a drops what its queue cannot hold')
  for (let i = 0; i < 5; i++) {
    const r = await get(`${url}/b/${i}`)
    t.equal(r.body.toString(), 'fast', 'b is served at once')
  }
  t.equal(proxy.routes[1].stats.dropped, 0)
  for (let i = 0; i < 7; i++) {
    t.ok(await waitFor(() => slow.held.length > 0, 5000))
    slow.held.shift()!()
  }
  const statuses = (await Promise.all(flood)).map((r) => r.status).sort()
  t.same(statuses, [200, 200, 200, 200, 200, 200, 200, 503, 503, 503])
})

t.test('requests waiting in a drained backend\'s own connection queue finish there', async (t) => {
  const a = await holding(t, 'a')
  const b = await holding(t, 'b')
  const { url, proxy, src } = await movingProxy(t, a.address, { options: { connections: 1 } })
  const pool = proxy.routes[0].pool
  const pending = [0, 1, 2].map((i) => get(`${url}/${i}`))
  t.ok(await waitFor(() => a.seen.length === 1 && pool.inflight === 3, 5000), 'one on the wire, two waiting for the connection')
  src.set([b.address])
  const later = get(`${url}/later`)
  t.ok(await waitFor(() => b.seen.length === 1, 5000), 'a new request goes to b')
  for (let i = 0; i < 3; i++) {
    t.ok(await waitFor(() => a.held.length > 0, 5000), `a got request ${i}`)
    a.held.shift()!()
  }
  b.held.shift()!()
  t.same((await Promise.all(pending)).map((r) => r.body.toString()), ['a /0', 'a /1', 'a /2'])
  t.equal((await later).body.toString(), 'b /later')
  t.ok(await waitFor(() => pool.draining.size === 0 && pool.inflight === 0, 5000), 'a reaped once idle')
})

t.test('a real spawn recycling (maxRequests) under a queued load: every request served, counters to 0', async (t) => {
  const script = fileURLToPath(new URL('../spawn/fixtures/backend.mjs', import.meta.url))
  const { url, proxy } = await proxyServer(t, {
    spawns: { app: { binPath: [process.execPath, script], socketName: '127.0.0.1:0', handoff: 'self', maxRequests: 3, maxProcs: 2, stopTimeout: '2s' } },
    routes: [{ protocol: 'http', spawn: 'app', maxConcurrent: 4, queue: 100, queueTimeout: '60s' }],
  })
  const route = proxy.routes[0]
  const all = await Promise.all(Array.from({ length: 40 }, () => get(`${url}/?delay=2`).catch((err: Error) => err)))
  const bad = all.filter((r) => r instanceof Error || r.status !== 200)
  t.equal(bad.length, 0, `no request failed ${JSON.stringify(bad.map((r) => r instanceof Error ? r.message : `${r.status} ${r.body.toString()}`))}`)
  t.ok(new Set(all.map((r) => (r as Got).body.toString())).size >= 40 / 3 / 2, 'processes were recycled')
  t.ok(await waitFor(() => route.admission.active === 0 && route.admission.queued === 0 && route.pool.inflight === 0, 10_000), 'counters back to 0')
  await proxy.close(5000)
})
