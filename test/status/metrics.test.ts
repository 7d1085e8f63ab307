/**
 * JSON and Prometheus against real traffic: createProxy in front of node:http backends, the status
 * handler in front of the proxy. Counters move with traffic and never go down when a backend dies.
 */
import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { guardLeaks } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { backend, closeServer, get } from '../helpers/servers.js'
import { decreasedCounters, fetchText, scrape, snapshot, statusRig } from './harness.js'

t.test('JSON snapshot and Prometheus follow real traffic; counters survive a dead backend', async (t) => {
  guardLeaks(t)
  const app = (name: string) => (req: IncomingMessage, res: ServerResponse): void => {
    if (req.url?.startsWith('/api/boom')) { res.writeHead(500); res.end('x') } else res.end(name)
  }
  // Stopped mid-test and expected refused: a port no listen(0) elsewhere can take meanwhile.
  const a = await backend(t, app('a'), await freePort())
  const b = await backend(t, app('b'), await freePort())
  const rig = await statusRig(t, {
    routes: [{ name: 'api', match: { prefix: '/api/' }, protocol: 'http', backends: [a.address, b.address], balance: 'round-robin', disableTime: '60s' }],
  })

  const empty = await snapshot(rig)
  t.equal(empty.schema, 1)
  t.match(empty.software, /^proxycore\/\d/)
  t.equal(empty.routes.length, 1)
  t.same(empty.routes[0].latency, { p50Ms: null, p99Ms: null, meanMs: null }, 'no latency before the first request')
  const before = await scrape(rig)
  t.equal(before.values.get('proxycore_route_requests_total{route="api"}'), 0)

  for (let i = 0; i < 10; i++) t.equal((await get(`${rig.url}/api/x${i}`)).status, 200)
  t.equal((await get(`${rig.url}/api/boom`)).status, 500)

  const s1 = await snapshot(rig)
  const r1 = s1.routes[0]
  t.equal(r1.name, 'api')
  t.equal(r1.protocol, 'http')
  t.equal(r1.spawn, null)
  t.equal(r1.requests, 11)
  t.equal(r1.errors, 0, 'a backend 500 is a response, not a proxy error')
  t.same([r1.active, r1.queued, r1.dropped], [0, 0, 0])
  t.same([r1.available, r1.capacity, r1.availPercent], [2, 2, 100])
  t.ok(r1.latency.p50Ms !== null && r1.latency.p99Ms !== null && r1.latency.p99Ms >= r1.latency.p50Ms, 'p50 <= p99')
  t.same(r1.backends.map((x) => x.id).sort(), [a.address, b.address].sort())
  t.equal(r1.backends.reduce((n, x) => n + x.requests, 0), 11, 'per-backend requests add up')
  t.ok(r1.backends.every((x) => x.state === 'up' && x.inflight === 0 && x.failures === 0 && x.lastError === null))

  const m1 = await scrape(rig)
  t.equal(m1.types.get('proxycore_route_requests_total'), 'counter')
  t.equal(m1.types.get('proxycore_route_request_duration_seconds'), 'histogram')
  t.equal(m1.values.get('proxycore_route_requests_total{route="api"}'), 11)
  t.equal(m1.values.get('proxycore_route_request_duration_seconds_count{route="api"}'), 11)
  t.equal(m1.values.get('proxycore_route_request_duration_seconds_bucket{route="api",le="+Inf"}'), 11)
  t.equal(m1.values.get('proxycore_responses_total{route="api",status="200"}'), 10)
  t.equal(m1.values.get('proxycore_responses_total{route="api",status="500"}'), 1)
  t.equal(m1.values.get(`proxycore_backend_up{route="api",backend="${a.address}",source="${a.address}"}`), 1)
  t.equal(m1.values.get('proxycore_route_available_ratio{route="api"}'), 1)
  t.same(decreasedCounters(before, m1), [])

  // Fault: backend a dies. Requests that land on it fail over; its failures count; nothing goes down.
  await closeServer(a.server)
  for (let i = 0; i < 6; i++) t.equal((await get(`${rig.url}/api/y${i}`)).status, 200, 'failover to b')
  const s2 = await snapshot(rig)
  const dead = s2.routes[0].backends.find((x) => x.id === a.address)
  t.equal(dead?.state, 'disabled')
  t.ok((dead?.failures ?? 0) >= 1, 'connect failure counted')
  t.match(dead?.lastError ?? '', /ECONNREFUSED|refused/i, 'last error kept')
  t.same([s2.routes[0].available, s2.routes[0].capacity, s2.routes[0].availPercent], [1, 2, 50])
  const m2 = await scrape(rig)
  t.equal(m2.values.get('proxycore_route_requests_total{route="api"}'), 17)
  t.equal(m2.values.get(`proxycore_backend_up{route="api",backend="${a.address}",source="${a.address}"}`), 0)
  t.ok((m2.values.get(`proxycore_backend_failures_total{route="api",backend="${a.address}",source="${a.address}"}`) ?? 0) >= 1)
  t.same(decreasedCounters(m1, m2), [], 'no counter went down after the fault')

  // Both dead: 502/503 now, counted as errors with their stable codes.
  await closeServer(b.server)
  const failed = await get(`${rig.url}/api/z`)
  t.ok(failed.status === 502 || failed.status === 503, `no backend -> ${failed.status}`)
  const m3 = await scrape(rig)
  t.equal(m3.values.get('proxycore_route_errors_total{route="api"}'), 1)
  const codes = [...m3.values.keys()].filter((k) => k.startsWith('proxycore_request_failures_total{'))
  t.equal(codes.length, 1, 'one failure series')
  t.match(codes[0], /code="ERR_[A-Z_]+"/, 'labelled with the stable error code')
  t.equal(m3.values.get('proxycore_route_available_ratio{route="api"}'), 0)
  t.same(decreasedCounters(m2, m3), [])
  const page = await fetchText(`${rig.url}/server-status`)
  t.equal(page.status, 200)
  t.match(page.body, /DISABLED/, 'state badge on the page')
})

t.test('content negotiation, methods and paths', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('ok'))
  const rig = await statusRig(t, { routes: [{ name: 'all', protocol: 'http', backends: [be.address] }] }, { path: '/__status/', metricsPath: '/__metrics' })
  const json = await fetchText(`${rig.url}/__status`, { headers: { accept: 'application/json' } })
  t.equal(json.status, 200)
  t.match(json.headers['content-type'], /^application\/json/)
  t.equal(JSON.parse(json.body).routes[0].name, 'all')
  const html = await fetchText(`${rig.url}/__status/`, { headers: { accept: 'text/html,application/json;q=0.9' } })
  t.match(html.headers['content-type'], /^text\/html/)
  t.match(html.headers['content-security-policy'], /script-src 'nonce-/)
  t.equal(html.headers['cache-control'], 'no-store')
  t.match(html.body, /^<!doctype html>/)
  t.notMatch(html.body, /<(link|img)\b|src="http/, 'no external assets')
  const forced = await fetchText(`${rig.url}/__status?format=json`, { headers: { accept: 'text/html' } })
  t.match(forced.headers['content-type'], /^application\/json/, '?format=json wins over Accept')
  const head = await fetchText(`${rig.url}/__status`, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.body, '')
  t.equal((await fetchText(`${rig.url}/__status`, { method: 'POST' })).status, 405)
  t.equal((await fetchText(`${rig.url}/__status/live`)).status, 426, 'live view needs a WebSocket upgrade')
  t.equal((await fetchText(`${rig.url}/__metrics`)).status, 200)
  t.equal((await fetchText(`${rig.url}/metrics`)).body, 'ok', 'the default metrics path is moved, so it reaches the backend')
  t.equal((await fetchText(`${rig.url}/__statusx`)).body, 'ok', 'only the exact path is status')
})
