/**
 * Counters across a config reload. The gateway's reload builds a new proxy (route and
 * backend counters from zero) and a new status for it; handed the old status as `previous`, the new
 * one carries every counter total over, so `rate()`/`increase()` see no reset: route requests, the
 * latency histogram, backend requests and the event-fed responses/failures keep growing.
 * Scraped with a strict exposition-format check (one TYPE per family, no duplicate series).
 */
import t from 'tap'
import { createServer, type Server } from 'node:http'
import { createProxy, silentLogger, type CreateProxyOptions, type Proxy } from '../../src/index.js'
import { createStatus, type StatusHandler } from '../../src/status/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { deadPort } from '../helpers/ports.js'
import { backend, closeServer, get, listen } from '../helpers/servers.js'
import { decreasedCounters, fetchText, parseProm, type Scrape } from './harness.js'

/** Families declared once, no series twice. */
function strict (text: string): string[] {
  const errs: string[] = []
  const types = new Set<string>()
  const series = new Set<string>()
  for (const line of text.split('\n')) {
    const m = /^# TYPE (\S+) /.exec(line)
    if (m !== null) { if (types.has(m[1])) errs.push(`TYPE twice: ${m[1]}`); types.add(m[1]); continue }
    if (line === '' || line.startsWith('#')) continue
    const key = line.slice(0, line.lastIndexOf(' '))
    if (series.has(key)) errs.push(`series twice: ${key}`)
    series.add(key)
  }
  return errs
}

t.test('a reload (new proxy, new status with previous) lowers no counter', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (req, res) => { res.writeHead(req.url === '/api/teapot' ? 418 : 200); res.end('ok') })
  const dead = { address: `127.0.0.1:${await deadPort()}` }
  const config: CreateProxyOptions = {
    logger: silentLogger,
    routes: [
      { name: 'api', match: { prefix: '/api/' }, protocol: 'http', backends: [be.address] },
      { name: 'down', match: { prefix: '/down/' }, protocol: 'http', backends: [dead.address], retries: 0 },
    ],
  }
  // The gateway's shape: one listener, a generation pointer swapped by the reload.
  let gen: { proxy: Proxy, status: StatusHandler } | undefined
  const server: Server = createServer((req, res) => { if (gen !== undefined && !gen.status.handler(req, res)) gen.proxy.handler(req, res) })
  const port = await listen(server)
  const url = `http://127.0.0.1:${port}`
  const gens: Array<{ proxy: Proxy, status: StatusHandler }> = []
  t.teardown(async () => {
    for (const g of gens) await g.status.close()
    await closeServer(server)
    for (const g of gens) await g.proxy.close(1000)
  })
  const build = async (previous?: StatusHandler): Promise<void> => {
    const proxy = await createProxy(config)
    gen = { proxy, status: createStatus(proxy, previous !== undefined ? { previous } : {}) }
    gens.push(gen)
  }
  const scrape = async (): Promise<Scrape> => {
    const r = await fetchText(`${url}/metrics`)
    t.equal(r.status, 200)
    t.same(strict(r.body), [], 'strict exposition')
    return parseProm(r.body)
  }
  const traffic = async (): Promise<void> => {
    for (let i = 0; i < 4; i++) t.equal((await get(`${url}/api/x${i}`)).status, 200)
    t.equal((await get(`${url}/api/teapot`)).status, 418)
    t.equal((await get(`${url}/down/x`)).status, 502)
  }

  await build()
  await traffic()
  const before = await scrape()
  const v = (s: Scrape, k: string): number | undefined => s.values.get(k)
  const keys = [
    'proxycore_route_requests_total{route="api"}',
    'proxycore_route_errors_total{route="down"}',
    'proxycore_route_request_duration_seconds_count{route="api"}',
    'proxycore_route_request_duration_seconds_bucket{route="api",le="+Inf"}',
    `proxycore_backend_requests_total{route="api",backend="${be.address}",source="${be.address}"}`,
    'proxycore_responses_total{route="api",status="200"}',
    'proxycore_responses_total{route="api",status="418"}',
    'proxycore_request_failures_total{route="down",code="ERR_CONNECT_REFUSED"}',
  ]
  t.same(keys.map((k) => v(before, k)), [5, 1, 5, 5, 5, 4, 1, 1], 'first generation counted')

  // Reload: the same config again, a new proxy, its status handed the old one.
  const old = gen!
  await build(old.status)
  await old.status.close()
  const right = await scrape()
  t.same(decreasedCounters(before, right), [], 'no counter went down at the reload')
  t.same(keys.map((k) => v(right, k)), [5, 1, 5, 5, 5, 4, 1, 1], 'totals carried over')

  await traffic()
  const after = await scrape()
  t.same(decreasedCounters(right, after), [])
  t.same(keys.map((k) => v(after, k)), [10, 2, 10, 10, 10, 8, 2, 2], 'and keep counting on the new proxy')
  t.ok((v(after, 'proxycore_route_request_duration_seconds_sum{route="api"}') ?? 0) >= (v(before, 'proxycore_route_request_duration_seconds_sum{route="api"}') ?? 0))
})
