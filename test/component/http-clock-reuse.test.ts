/**
 * The exchange's clock (src/core/exchange.ts, ProxyRuntime.now), a guard for any cheaper clock (a
 * value reused within a call or cached per loop turn, as nginx's ngx_time): a request that waited
 * in the admission queue is dispatched in a later turn, so its head deadline must count from that
 * dispatch, never from its arrival, and its logged times from its arrival; a request admitted at
 * once never times out before its whole head timeout. Checked to fail when the first dispatch takes
 * its time from startedAt whatever the turn. Real node:http backend; the sweep runs every headers/4 ms.
 */
import t from 'tap'
import type { RequestEndEvent } from '../../src/core/events.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { ZERO, counters, settled } from '../helpers/counters.js'
import { backend, get, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

const HEADERS_MS = 3000
/** How long the backend takes to answer the queued request: under HEADERS_MS, over one sweep (HEADERS_MS / 4). */
const B_DELAY_MS = 1500

t.test('a queued request gets its whole head timeout from its dispatch, not from its arrival', async (t) => {
  const timers = new Set<NodeJS.Timeout>()
  t.teardown(() => { for (const x of timers) clearTimeout(x) })
  const arrived: string[] = []
  const be = await backend(t, (req, res) => {
    arrived.push(req.url ?? '')
    req.resume()
    // `/a` is never answered: its head timeout frees the only slot for `/b`.
    if (req.url === '/a') { res.on('close', () => {}); return }
    const x = setTimeout(() => { timers.delete(x); res.end('b') }, B_DELAY_MS)
    timers.add(x)
  })
  const { url, proxy } = await proxyServer(t, {
    routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 5, queueTimeout: '60s', timeouts: { headers: `${HEADERS_MS}ms` } }],
  })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const a = get(`${url}/a`)
  t.ok(await waitFor(() => arrived.length === 1, 10_000), '/a reached the backend')
  const started = Date.now()
  const b = get(`${url}/b`)
  t.ok(await waitFor(() => counters(proxy).queued === 1, 10_000), '/b waits for the slot')
  const [ra, rb] = await Promise.all([a, b])
  const elapsed = Date.now() - started
  t.equal(ra.status, 504, '/a: head timeout')
  t.equal(rb.status, 200, '/b: answered within its own head timeout, counted from its dispatch')
  t.equal(rb.body.toString(), 'b')
  t.same(arrived, ['/a', '/b'])
  const eb = ends.find((e) => e.url === '/b')
  t.ok(eb !== undefined, '/b logged')
  if (eb !== undefined) {
    // /b waited for /a's timeout (HEADERS_MS at least after /a's arrival, which came before /b's),
    // then B_DELAY_MS for its head: its logged times count from its own arrival.
    t.ok(eb.headMs >= B_DELAY_MS, `headMs ${eb.headMs} >= ${B_DELAY_MS}`)
    t.ok(eb.totalMs >= eb.headMs, `totalMs ${eb.totalMs} >= headMs ${eb.headMs}`)
    t.ok(eb.totalMs <= elapsed + 50, `totalMs ${eb.totalMs} within the ${elapsed} ms the client saw`)
  }
  t.ok(await settled(proxy))
  t.same(counters(proxy), ZERO)
})

t.test('a request admitted at once: the head deadline from the same clock read as its start', async (t) => {
  const be = await backend(t, (req, res) => { req.resume(); if (req.url !== '/never') res.end('ok') })
  const { url, proxy } = await proxyServer(t, {
    routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: '400ms' } }],
  })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const t0 = Date.now()
  const r = await get(`${url}/never`)
  const elapsed = Date.now() - t0
  t.equal(r.status, 504)
  // Never early: not before the whole timeout has passed since the request arrived.
  t.ok(elapsed >= 400, `504 after ${elapsed} ms, not before 400`)
  t.equal(ends.length, 1)
  t.ok(ends[0].totalMs >= 400, `totalMs ${ends[0].totalMs} >= 400`)
  t.equal(ends[0].error, 'ERR_HEADERS_TIMEOUT')
  t.equal((await get(`${url}/ok`)).status, 200)
  t.ok(await settled(proxy))
})
