/**
 * 1002 mixed requests through createProxy + createStatus + the access log: GETs, HEADs, 304s,
 * backends that drop the connection (502 after a retry), clients that abort mid-body (499) and
 * upgrades (101, a tunnel the backend closes). Afterwards nothing is in flight anywhere, the route,
 * response and failure counters add up to what the clients saw, and the access log has one line
 * per request with the right fields for each kind (the status JSON and /metrics requests of the test
 * itself are logged and counted too, under route=status and route=metrics).
 */
import t from 'tap'
import { connect } from 'node:net'
import { request, type ServerResponse } from 'node:http'
import { PassThrough } from 'node:stream'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend } from '../helpers/servers.js'
import { scrape, snapshot, statusRig } from './harness.js'
import { createAccessLog } from '../../src/status/access-log.js'

t.test('counters and access log after 1002 mixed requests: in flight back to 0, totals match', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const held = new Set<ServerResponse>()
  const be = await backend(t, (req, res) => {
    const u = req.url ?? ''
    if (u === '/app/304') { res.writeHead(304, { etag: '"x"' }); res.end(); return }
    if (u === '/app/kill') { req.socket.destroy(); return }
    if (u === '/app/slow') { res.writeHead(200, { 'content-type': 'text/plain' }); res.write('part'); held.add(res); res.on('close', () => held.delete(res)); return }
    res.end('hello world')
  })
  be.server.on('upgrade', (_req, sock) => { sock.on('error', () => {}); sock.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n'); sock.end('bye') })
  t.teardown(() => { for (const r of held) r.destroy() })
  const rig = await statusRig(t, { routes: [{ name: 'app', match: { prefix: '/app/' }, protocol: 'http', backends: [be.address] }] })
  const combined = new PassThrough()
  const json = new PassThrough()
  let clog = ''
  let jlog = ''
  combined.on('data', (c: Buffer) => { clog += String(c) })
  json.on('data', (c: Buffer) => { jlog += String(c) })
  const logs = [createAccessLog(rig.proxy.events, { stream: combined }), createAccessLog(rig.proxy.events, { stream: json, format: 'json' })]
  t.teardown(() => { for (const l of logs) l.close() })

  const kinds = ['get', 'head', '304', 'kill', 'abort', 'upgrade'] as const
  const one = (kind: typeof kinds[number]): Promise<string> => new Promise((resolve) => {
    if (kind === 'upgrade') {
      const s = connect(rig.port, '127.0.0.1')
      let got = ''
      s.on('data', (d: Buffer) => { got += d.toString('latin1') })
      s.on('error', () => {})
      s.on('close', () => resolve(/^HTTP\/1\.1 101 /.test(got) && got.endsWith('bye') ? '101' : `upgrade? ${JSON.stringify(got)}`))
      s.write('GET /app/up HTTP/1.1\r\nhost: x\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n')
      return
    }
    const path = { get: '/app/ok', head: '/app/ok', 304: '/app/304', kill: '/app/kill', abort: '/app/slow' }[kind]
    const req = request(`${rig.url}${path}`, { method: kind === 'head' ? 'HEAD' : 'GET', agent: false }, (res) => {
      if (kind === 'abort') { res.once('data', () => req.destroy()); res.on('error', () => {}); res.on('close', () => resolve('aborted')); return }
      res.resume()
      res.on('end', () => resolve(String(res.statusCode)))
    })
    req.on('error', () => { if (kind !== 'abort') resolve('error') })
    req.end()
  })
  const N = 1002
  const seen = new Map<string, number>()
  for (let i = 0; i < N; i += 30) {
    const batch = await Promise.all(Array.from({ length: Math.min(30, N - i) }, (_, j) => one(kinds[(i + j) % kinds.length])))
    for (const r of batch) seen.set(r, (seen.get(r) ?? 0) + 1)
  }
  const each = N / kinds.length
  t.same(Object.fromEntries(seen), { 200: 2 * each, 304: each, 502: each, aborted: each, 101: each }, 'what the clients saw')

  const lines = (s: string): string[] => s.split('\n').filter((l) => l !== '')
  t.ok(await waitFor(() => rig.proxy.inflight === 0 && lines(clog).length === N && lines(jlog).length === N, 20_000), 'every request ended and logged')
  t.equal(rig.proxy.inflight, 0, 'proxy in flight 0')
  t.equal(lines(clog).length, N, 'one combined line per request')
  t.same(logs.map((l) => [l.written, l.dropped]), [[N, 0], [N, 0]])

  const s = await snapshot(rig)
  const r = s.routes[0]
  t.equal(s.inflight, 0)
  t.same([r.requests, r.errors, r.active, r.queued, r.dropped], [N, each, 0, 0, 0], 'route: requests, errors (aborts excluded), nothing held')
  t.same(r.backends.map((b) => b.inflight), [0], 'backend in flight 0')
  const m = await scrape(rig)
  const v = (k: string): number | undefined => m.values.get(k)
  t.equal(v('proxycore_inflight'), 0)
  t.equal(v('proxycore_route_requests_total{route="app"}'), N)
  t.equal(v('proxycore_route_request_duration_seconds_count{route="app"}'), N)
  t.equal(v(`proxycore_backend_inflight{route="app",backend="${be.address}",source="${be.address}"}`), 0)
  t.same(
    [200, 304, 499, 502, 101].map((st) => v(`proxycore_responses_total{route="app",status="${st}"}`)),
    [2 * each, each, each, each, each], 'responses per status')
  t.equal([...m.values].filter(([k]) => k.startsWith('proxycore_responses_total{route="app",')).reduce((n, [, x]) => n + x, 0), N, 'responses add up to the requests')
  // The status JSON read above counts too, under its own route; this scrape is counted after it is sent.
  t.same([...m.values].filter(([k]) => k.startsWith('proxycore_responses_total') && !k.includes('route="app"')), [['proxycore_responses_total{route="status",status="200"}', 1]], 'plus the status request')
  t.equal(v('proxycore_request_failures_total{route="app",code="ERR_CLIENT_ABORTED"}'), each)
  t.equal(v('proxycore_request_failures_total{route="app",code="ERR_BACKEND_CLOSED"}'), each)

  // Fields per kind, from the JSON lines (the combined ones say the same).
  const byUrl = new Map<string, Array<Record<string, unknown>>>()
  for (const l of lines(jlog)) {
    const o = JSON.parse(l) as Record<string, unknown>
    const k = `${String(o.method)} ${String(o.url)}`
    byUrl.set(k, [...(byUrl.get(k) ?? []), o])
  }
  const all = (k: string, pick: (o: Record<string, unknown>) => unknown): unknown[] => [...new Set((byUrl.get(k) ?? []).map((o) => JSON.stringify(pick(o))))].map((x) => JSON.parse(x) as unknown)
  t.same(all('HEAD /app/ok', (o) => [o.status, o.bytes, o.upstreamStatus, o.error]), [[200, 0, 200, null]], 'HEAD: 200, no body bytes')
  t.same(all('GET /app/304', (o) => [o.status, o.bytes, o.upstreamStatus, o.error]), [[304, 0, 304, null]], '304: no body bytes')
  t.same(all('GET /app/kill', (o) => [o.status, o.upstreamStatus, o.headMs, o.error]), [[502, null, null, 'ERR_BACKEND_CLOSED']], 'dropped connection: 502, no head')
  t.same(all('GET /app/slow', (o) => [o.status, o.bytes, o.error, typeof o.headMs]), [[499, 4, 'ERR_CLIENT_ABORTED', 'number']], 'abort after the head: 499, the bytes sent')
  t.same(all('GET /app/up', (o) => [o.status, o.bytes, o.upstreamStatus, o.error]), [[101, 3, 101, null]], 'upgrade: 101, the tunnel bytes')
  t.same(all('GET /app/slow', (o) => o.upstreamStatus), [200], 'abort after the backend answered 200: upstream status 200')
  // The status JSON and the scrape above have lines too (route=status, route=metrics).
  t.match(lines(clog).find((l) => l.includes('"GET /server-status?format=json HTTP/1.1"')), / 200 \d+ "-" "-" route=status upstream=- /, 'the status request is logged')
  const combinedKinds = new Set(lines(clog).filter((l) => l.includes(' route=app ')).map((l) => /"(\S+ \S+) HTTP\/1\.1" (\d+) (\S+) .* upstream_status=(\S+) rt=\S+ uht=\S+ code=(\S+)$/.exec(l)?.slice(1).join(' ') ?? l))
  t.same([...combinedKinds].sort(), [
    'GET /app/304 304 - 304 -',
    'GET /app/kill 502 - - ERR_BACKEND_CLOSED',
    'GET /app/ok 200 11 200 -',
    'GET /app/slow 499 4 200 ERR_CLIENT_ABORTED',
    'GET /app/up 101 3 101 -',
    'HEAD /app/ok 200 - 200 -',
  ], 'combined lines per kind')
})
