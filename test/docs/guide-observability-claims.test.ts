/**
 * docs/guides/observability.md as an operator walks it, on the real CLI (`proxycore serve`) with
 * php-cgi spawned as FastCGI: the guide's own `curl | jq` commands are run (its port swapped for the
 * test's), every metric name and label its PromQL queries use is in the real /metrics output, the
 * counters equal the requests sent, and they keep every request across a SIGHUP reload (one still
 * in flight at the reload included: that subtest fails until src/gateway/server.ts retire() closes
 * the old status after the old proxy's drain). The embedded snippets (status, access log,
 * diagnostics_channel) are run as written; the error log's lines for a dead pool are counted.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import diagnostics from 'node:diagnostics_channel'
import * as nodeFs from 'node:fs'
import * as http from 'node:http'
import { createServer, type Server } from 'node:http'
import { WebSocket } from 'ws'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { createAccessLog, createProxy, createStatus, silentLogger } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { deadPort as freeDeadPort } from '../helpers/ports.js'
import { closeServer, get, listen, proxyServer, rawRequest } from '../helpers/servers.js'
import { havePeer, PHP_CGI, tempDir } from '../fastcgi/helpers/peers.js'
import { phpSiteYaml } from './snippets.js'
import { root, serveKilled } from '../cli/run.js'

const guide = readFileSync(join(root, 'docs/guides/observability.md'), 'utf8')

function blocks (lang: string): string[] {
  const re = new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```', 'gm')
  return [...guide.matchAll(re)].map((m) => m[1])
}

/** The guide's `status:` config line (section 1). */
const statusLine = blocks('yaml').flatMap((b) => b.split('\n')).find((l) => l.startsWith('status:'))

interface Series { name: string, labels: Record<string, string>, value: number }

function parseMetrics (text: string): Series[] {
  const out: Series[] = []
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) continue
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2]
    out.push({ name: m[1], labels, value: Number(m[3]) })
  }
  return out
}

const value = (series: Series[], name: string, labels: Record<string, string>): number | undefined =>
  series.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value

async function scrape (url: string): Promise<Series[]> {
  const r = await get(`${url}/metrics`)
  return parseMetrics(r.body.toString())
}

function sh (cmd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('/bin/sh', ['-c', cmd], { timeout: 20_000 }, (err, stdout, stderr) => { if (err !== null) reject(new Error(`${cmd}: ${err.message}\n${stderr}`)); else resolve(stdout) })
  })
}

/** Put the spawned processes' pids in `seen`, so the teardown kills their groups even if the test fails. */
async function track (url: string, seen: number[]): Promise<void> {
  const j = JSON.parse((await get(`${url}/server-status?format=json`)).body.toString()) as { spawns: Array<{ processes: Array<{ pid: number | null }> }> }
  for (const sp of j.spawns) for (const p of sp.processes) if (p.pid !== null) seen.push(p.pid)
}

const PHP = '<?php header("Content-Type: text/plain"); echo "hi from ", PHP_SAPI, "\\n";\n'

function site (t: Parameters<typeof tempDir>[0]): { dir: string, file: string } {
  const dir = tempDir(t, 'pc-doc-obs-')
  writeFileSync(join(dir, 'i.php'), PHP)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, phpSiteYaml(PHP_CGI, dir, statusLine ?? '', `  - name: dead
    match: { prefix: /dead/ }
    protocol: http
    backends: [127.0.0.1:1]
`))
  return { dir, file }
}

t.test('observability.md section 1: the guide status config, its curl | jq commands', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  t.equal(statusLine, 'status: { path: /server-status, allow: [127.0.0.1, "10.0.0.0/8"] }', 'the guide has its status line')
  // The unix-listener behaviour itself is tested in test/cli/status-unix.test.ts.
  t.match(guide, /answers 403 unless `allow` lists the entry `unix:`/, 'the guide names the unix: entry')
  const { file } = site(t)
  const { s, seen } = await serveKilled(t, file)
  t.equal((await get(`${s.url}/i.php`)).status, 200, 'php-cgi answers')
  await track(s.url, seen)
  const cmds = blocks('sh').flatMap((b) => b.split('\n')).filter((l) => l.startsWith('curl '))
  const jq = await sh('command -v jq && command -v curl').then(() => true, () => false)
  if (!jq) { t.comment('jq or curl is not installed: the guide\'s commands are not run'); return }
  t.equal(cmds.length, 2, 'two curl commands in the guide')
  const hostPort = s.url.replace(/^http:\/\//, '')
  const spawns = await sh(cmds[0].replace('127.0.0.1:8080', hostPort))
  t.same(JSON.parse(spawns), { name: 'php', state: 'running', reason: null }, `jq '.spawns[] | {name, state, reason}': ${spawns.trim()}`)
  const avail = await sh(cmds[1].replace('127.0.0.1:8080', hostPort))
  t.same(avail.trim().split('\n').map(Number), [100, 100], 'Accept: application/json gives the JSON; availPercent per route')
})

t.test('observability.md section 2: every metric and label the PromQL queries use exists; counters equal the requests sent', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  const { file } = site(t)
  const { s, seen } = await serveKilled(t, file)
  const N = 7
  for (let i = 0; i < N; i++) t.equal((await get(`${s.url}/i.php`)).status, 200)
  await track(s.url, seen)
  for (let i = 0; i < 3; i++) t.equal((await get(`${s.url}/dead/x`)).status, 502)
  const series = await scrape(s.url)

  const promql = blocks('promql')[0]
  t.ok(promql !== undefined, 'the guide has its PromQL block')
  const used = [...new Set([...(promql ?? '').matchAll(/proxycore_[a-z_]+/g)].map((m) => m[0]))]
  t.ok(used.length >= 7, `${used.length} metric names in the queries`)
  // A labelled counter with no series yet (no crash restart so far) is still declared (# TYPE).
  const declared = await get(`${s.url}/metrics`).then((r) => r.body.toString())
  for (const name of used) t.ok(series.some((x) => x.name === name) || declared.includes(`# TYPE ${name} `), `${name} is in /metrics`)
  // `by (labels)` and `{label="value"}` in each query name labels of the metrics it reads.
  for (const q of (promql ?? '').split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'))) {
    const names = [...q.matchAll(/proxycore_[a-z_]+/g)].map((m) => m[0])
    const by = [...q.matchAll(/by \(([^)]*)\)/g)].flatMap((m) => m[1].split(',').map((x) => x.trim()))
    for (const name of names) {
      for (const label of by) t.ok(series.some((x) => x.name === name && label in x.labels), `${name} has label ${label}`)
      for (const m of q.matchAll(new RegExp(`${name}\\{([a-z_]+)="([^"]*)"\\}`, 'g'))) {
        t.ok(series.some((x) => x.name === name && x.labels[m[1]] === m[2]), `${name}{${m[1]}="${m[2]}"} is a series`)
      }
    }
  }

  // Compared with what was sent.
  t.equal(value(series, 'proxycore_route_requests_total', { route: 'php' }), N, 'route_requests_total = requests sent')
  t.equal(value(series, 'proxycore_responses_total', { route: 'php', status: '200' }), N)
  t.equal(value(series, 'proxycore_route_request_duration_seconds_count', { route: 'php' }), N)
  t.equal(value(series, 'proxycore_route_request_duration_seconds_bucket', { route: 'php', le: '+Inf' }), N)
  t.equal(value(series, 'proxycore_route_errors_total', { route: 'dead' }), 3, 'each refused connect is an error')
  t.equal(value(series, 'proxycore_request_failures_total', { route: 'dead', code: 'ERR_CONNECT_REFUSED' }), 3, 'failures by stable code')
  t.equal(value(series, 'proxycore_route_available_ratio', { route: 'php' }), 1)
  t.equal(value(series, 'proxycore_spawn_state', { spawn: 'php', state: 'running' }), 1)
  t.equal(value(series, 'proxycore_spawn_state', { spawn: 'php', state: 'failed' }), 0)
  const json = JSON.parse((await get(`${s.url}/server-status?format=json`)).body.toString()) as { routes: Array<{ name: string, requests: number, errors: number }>, spawns: Array<{ processes: Array<{ requests: number }> }> }
  t.same(json.routes.map((r) => [r.name, r.requests, r.errors]), [['php', N, 0], ['dead', 3, 3]], 'the JSON status agrees')
  t.equal(json.spawns[0].processes.reduce((n, p) => n + p.requests, 0), N, 'the php-cgi process served each request')
})

// "Counters never go down ... so rate() and increase() stay correct across proxycore serve's
// reloads". A scoped counter (route, backend, latency) is read when /metrics is scraped; a reload's
// hand-over must read it once more, or what a generation counted after the last scrape is lost
// (it was: 3 of 8 before src/status/metrics.ts handOver() took a last reading).
t.test('observability.md section 2: counters keep every request across a SIGHUP reload', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  const { file } = site(t)
  const { s, seen } = await serveKilled(t, file)
  t.equal((await get(`${s.url}/i.php`)).status, 200)
  await track(s.url, seen)
  const before = value(await scrape(s.url), 'proxycore_route_requests_total', { route: 'php' })
  t.equal(before, 1, 'scraped once: 1')
  const N = 5
  for (let i = 0; i < N; i++) t.equal((await get(`${s.url}/i.php`)).status, 200)
  const at = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reloaded', at)
  const M = 2
  for (let i = 0; i < M; i++) t.equal((await get(`${s.url}/i.php`)).status, 200)
  const after = await scrape(s.url)
  t.equal(value(after, 'proxycore_responses_total', { route: 'php', status: '200' }), 1 + N + M, 'responses_total (event-fed) has every request')
  t.equal(value(after, 'proxycore_route_requests_total', { route: 'php' }), 1 + N + M, 'route_requests_total has every request, the ones before the reload included')
  t.equal(value(after, 'proxycore_route_request_duration_seconds_count', { route: 'php' }), 1 + N + M, 'so does the latency histogram')
})

t.test('observability.md section 3: an access line has the fields the guide lists, in its order', async (t) => {
  guardLeaks(t)
  const para = guide.slice(guide.indexOf('Each line is Apache "combined"'))
  const fields = [...para.slice(0, para.search(/so\s+`goaccess`/)).matchAll(/`([a-z_]+)=`/g)].map((m) => m[1])
  t.same(fields, ['route', 'upstream', 'upstream_status', 'rt', 'uht', 'code'], 'the fields the guide names')
  const be = createServer((_req, res) => res.end('hello'))
  await new Promise<void>((resolve) => be.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { be.closeAllConnections(); be.close(() => resolve()) }))
  const address = `127.0.0.1:${(be.address() as { port: number }).port}`
  const { proxy, url } = await proxyServer(t, { routes: [{ name: 'api', match: { prefix: '/api/' }, protocol: 'http', backends: [address] }] })
  const out = new PassThrough()
  let text = ''
  out.on('data', (d: Buffer) => { text += d.toString() })
  const log = createAccessLog(proxy.events, { format: 'combined', stream: out })
  t.teardown(() => log.close())
  await get(`${url}/api/x?y=1`, { headers: { 'user-agent': 'curl/8.5', referer: 'http://example.com/' } })
  await get(`${url}/nope`)
  await rawRequest(Number(new URL(url).port), 'GET /api/old HTTP/1.0\r\nHost: h\r\n\r\n')
  t.ok(await waitFor(() => text.trim().split('\n').length === 3, 5000), 'three lines')
  const lines = text.trim().split('\n')
  t.match(lines[2], /"GET \/api\/old HTTP\/1\.0" 200 /, 'an HTTP/1.0 request is written HTTP/1.0')
  t.match(guide, /the HTTP\s+version the client spoke come from the `request:end` event/)
  const re = new RegExp('^127\\.0\\.0\\.1 - - \\[[^\\]]+\\] "GET /api/x\\?y=1 HTTP/1\\.1" 200 5 "http://example\\.com/" "curl/8\\.5" ' +
    fields.map((f) => `${f}=(\\S+)`).join(' ') + '$')
  const m = re.exec(lines[0])
  t.ok(m !== null, `combined + ${fields.join(', ')}: ${lines[0]}`)
  if (m !== null) {
    t.equal(m[1], 'api')
    t.equal(m[2], address, 'upstream= is the backend address')
    t.equal(m[3], '200')
    t.match(m[4], /^\d+\.\d{3}$/, 'rt= seconds')
    t.match(m[5], /^\d+\.\d{3}$/, 'uht= seconds')
    t.equal(m[6], '-')
  }
  t.match(guide, /`-` when the request had none/, 'the guide says absent ones are -')
  t.match(lines[1], /"GET \/nope HTTP\/1\.1" 404 \d+ "-" "-" route=- upstream=- upstream_status=- rt=\S+ uht=- code=ERR_NO_ROUTE$/, 'a proxy-answered 404: route=-, upstream=-, uht=-')
})

t.test('observability.md section 3: proxycore serve writes an access log when its config has accessLog', async (t) => {
  t.match(guide, /`proxycore serve` writes one when its config has an `accessLog` key/, 'the guide says so')
  const schema = JSON.parse(readFileSync(join(root, 'schema/proxycore.schema.json'), 'utf8')) as { properties: Record<string, unknown> }
  t.same(Object.keys(schema.properties).filter((k) => /access/i.test(k)), ['accessLog'], 'the operator config key (test/cli/access-log.test.ts runs it)')
})

t.test('observability.md section 4: what the error log has for a dead pool, no route and a bad Host', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const m = /measured: two dead backends,\s+(\d+) requests: one 502 `ERR_CONNECT_REFUSED` line, the pool line, (\w+) 503 `ERR_NO_BACKEND` lines/.exec(guide)
  t.ok(m !== null, 'the guide has the measurement')
  const sent = Number(m?.[1] ?? 0)
  const refused = { five: 5, four: 4, six: 6 }[m?.[2] ?? ''] ?? -1
  const dir = tempDir(t, 'pc-doc-obs-log-')
  const file = join(dir, 'proxycore.yaml')
  // Two ports nothing listens on (port 1 and 2 need root to bind, so nothing does).
  writeFileSync(file, 'listen: 127.0.0.1:0\nroutes:\n  - name: pool\n    match: { prefix: /p/ }\n    protocol: http\n    backends: [127.0.0.1:1, 127.0.0.1:2]\n')
  const { s } = await serveKilled(t, file)
  const at = s.logs().length
  const statuses: number[] = []
  for (let i = 0; i < sent; i++) statuses.push((await get(`${s.url}/p/x`)).status)
  t.same(statuses, [502, ...Array<number>(sent - 1).fill(503)])
  t.equal((await get(`${s.url}/nope`)).status, 404)
  t.equal((await get(`${s.url}/p/x`, { headers: { host: 'a b' } })).status, 400)
  await s.waitLog('all backends of pool pool are down', at)
  const after = await get(`${s.url}/p/x`)
  t.equal(after.status, 503, 'one more request, so the lines before it are all written')
  const lines = s.logs().slice(at).filter((l) => l.code !== undefined)
  // The `sent` requests to the pool have ids 1..sent; the pool line has none.
  const before = lines.filter((l) => l.id === undefined || (l.id as number) <= sent)
  t.same(before.filter((l) => l.code === 'ERR_CONNECT_REFUSED').map((l) => l.level), [50], 'one 502 ERR_CONNECT_REFUSED line, at error')
  t.same(before.filter((l) => l.msg === 'all backends of pool pool are down').map((l) => [l.code, l.reason]), [['ERR_NO_BACKEND', 'ERR_CONNECT_REFUSED']], 'the pool line')
  t.equal(before.filter((l) => l.code === 'ERR_NO_BACKEND' && l.route === 'pool').length, refused, 'one ERR_NO_BACKEND line per refused request')
  t.same(lines.filter((l) => l.code === 'ERR_NO_ROUTE' || l.code === 'ERR_BAD_REQUEST'), [], 'no route and a bad Host: not in the error log')
})

/** The guide's ```ts blocks, run as written (they are plain JS) with the names they use in scope. */
function runSnippet (code: string, scope: Record<string, unknown>): void {
  const body = code.replace(/^import .*$/gm, '')
  new Function(...Object.keys(scope), body)(...Object.values(scope))
}

t.test('observability.md section 1: the embedded snippet mounts the page, the live view and the proxy on one server', async (t) => {
  guardLeaks(t)
  const code = blocks('ts')[0] ?? ''
  t.match(code, /createStatus\(proxy, \{ allow: \['127\.0\.0\.1'\] \}\)/)
  const be = createServer((_req, res) => res.end('from the backend'))
  await listen(be, t)
  const proxy = await createProxy({ logger: silentLogger, routes: [{ name: 'app', protocol: 'http', backends: [`127.0.0.1:${(be.address() as { port: number }).port}`] }] })
  let server: Server | undefined
  const statuses: Array<{ close: () => Promise<void> }> = []
  runSnippet(code, {
    proxy,
    createStatus: (...a: Parameters<typeof createStatus>) => { const st = createStatus(...a); statuses.push(st); return st },
    http: { createServer: (...a: Parameters<typeof http.createServer>) => (server = http.createServer(...a)) },
  })
  t.ok(server !== undefined, 'the snippet made a server')
  if (server === undefined) return
  const port = await listen(server)
  t.teardown(async () => { for (const st of statuses) await st.close(); await closeServer(server as Server); await proxy.close(1000) })
  const url = `http://127.0.0.1:${port}`
  t.equal((await get(`${url}/x`)).body.toString(), 'from the backend', 'a request goes to the proxy')
  const page = await get(`${url}/server-status?format=json`)
  t.equal(page.status, 200)
  t.same((JSON.parse(page.body.toString()) as { routes: Array<{ name: string, requests: number }> }).routes.map((r) => [r.name, r.requests]), [['app', 1]])
  t.match((await get(`${url}/metrics`)).body.toString(), /^proxycore_route_requests_total\{route="app"\} 1$/m, '/metrics')
  const ws = new WebSocket(`ws://127.0.0.1:${port}/server-status/live`)
  t.teardown(() => ws.terminate())
  const first = await new Promise<string>((resolve, reject) => { ws.once('message', (m: Buffer) => resolve(m.toString())); ws.once('error', reject) })
  t.match(JSON.parse(first), { type: String, snapshot: { routes: [{ name: 'app' }] } }, 'the live view (<path>/live) over the snippet\'s upgrade listener')
  ws.close()
})

t.test('observability.md section 3: the access-log snippet as written, its directory missing: the proxy goes on, log.error, dropped', async (t) => {
  guardLeaks(t)
  const code = blocks('ts')[1] ?? ''
  const path = /createWriteStream\('([^']+)'/.exec(code)?.[1] ?? ''
  t.equal(path, '/var/log/proxycore/access.log')
  const dir = tempDir(t, 'pc-doc-obs-al-')
  const missing = join(dir, 'var/log/proxycore/access.log')
  const be = createServer((_req, res) => res.end('ok'))
  await listen(be, t)
  const { proxy, url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [`127.0.0.1:${(be.address() as { port: number }).port}`] }] })
  let log: ReturnType<typeof createAccessLog> | undefined
  runSnippet(code.replace(/createAccessLog\(/, 'setLog(createAccessLog(').replace(/\)\s*$/, '))'), {
    proxy,
    createAccessLog,
    setLog: (l: ReturnType<typeof createAccessLog>) => { log = l },
    createWriteStream: (_p: string, o: object) => nodeFs.createWriteStream(missing, o),
  })
  t.teardown(() => log?.close())
  t.ok(log !== undefined)
  t.ok(await waitFor(() => log?.error != null, 5000), 'the stream error is in log.error')
  t.match(log?.error?.message, /ENOENT/)
  for (let i = 0; i < 3; i++) t.equal((await get(`${url}/`)).status, 200, 'the proxy serves on')
  t.ok(await waitFor(() => (log?.dropped ?? 0) >= 3, 5000), `later lines count in dropped (${log?.dropped ?? 0})`)
})

t.test('observability.md section 5: diagnostics_channel events have the fields the guide shows', async (t) => {
  guardLeaks(t)
  const code = blocks('ts')[2] ?? ''
  const channels = [...code.matchAll(/diagnostics\.subscribe\('([^']+)'/g)].map((m) => m[1])
  t.same(channels, ['proxycore:request:end', 'proxycore:backend:state'])
  const stateFields = /\/\* \{ ([^}]+) \} \*\//.exec(code)?.[1].split(',').map((x) => x.trim()) ?? []
  t.same(stateFields, ['kind', 'pool', 'backend', 'state', 'reason'])
  const ends: Array<Record<string, unknown>> = []
  const states: Array<Record<string, unknown>> = []
  const onEnd = (e: unknown): void => { ends.push(e as Record<string, unknown>) }
  const onState = (e: unknown): void => { states.push(e as Record<string, unknown>) }
  diagnostics.subscribe(channels[0], onEnd)
  diagnostics.subscribe(channels[1], onState)
  t.teardown(() => { diagnostics.unsubscribe(channels[0], onEnd); diagnostics.unsubscribe(channels[1], onState) })
  const be = createServer((_req, res) => res.end('ok'))
  await listen(be, t)
  const deadPort = await freeDeadPort()
  const { url } = await proxyServer(t, { routes: [{ name: 'p', protocol: 'http', balance: 'round-robin', backends: [`127.0.0.1:${deadPort}`, `127.0.0.1:${(be.address() as { port: number }).port}`] }] })
  for (let i = 0; i < 2; i++) t.equal((await get(`${url}/x`)).status, 200)
  t.equal(ends.length, 2, 'one request:end per request')
  t.match(ends[0], { id: Number, route: 'p', status: 200, error: null }, 'a RequestEndEvent')
  t.same(states.map((e) => Object.keys(e).sort()), [[...stateFields].sort()], 'backend:state has exactly the fields the guide shows')
  t.match(states[0], { pool: 'p', backend: `127.0.0.1:${deadPort}`, state: 'disabled', reason: 'ERR_CONNECT_REFUSED' })
})

t.test('observability.md sections 1-2: a spawned php-cgi killed: the page shows the crash restart and how the process ended; the counters count it', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  t.match(guide, /uptime, crash restarts, how the last\s+process in that slot ended/)
  const { file } = site(t)
  const { s, seen } = await serveKilled(t, file)
  t.equal((await get(`${s.url}/i.php`)).status, 200)
  await track(s.url, seen)
  const first = seen[0]
  process.kill(first, 'SIGKILL')
  type Proc = { pid: number | null, state: string, restarts: number, lastExit: { code: number | null, signal: string | null } | null }
  let procs: Proc[] = []
  t.ok(await waitFor(async () => {
    const j = JSON.parse((await get(`${s.url}/server-status?format=json`)).body.toString()) as { spawns: Array<{ processes: Proc[] }> }
    procs = j.spawns[0].processes
    return procs.length === 1 && procs[0].pid !== first && procs[0].state === 'ready'
  }, 10_000, 50), 'a new php-cgi is ready')
  await track(s.url, seen)
  t.match(procs[0], { restarts: 1, lastExit: { code: null, signal: 'SIGKILL' } }, 'one crash restart; the last process in the slot was SIGKILLed')
  t.equal((await get(`${s.url}/i.php`)).status, 200, 'the new one serves')
  const series = await scrape(s.url)
  t.equal(value(series, 'proxycore_spawn_exits_total', { spawn: 'php', expected: 'false' }), 1, 'one unexpected exit')
  t.equal(value(series, 'proxycore_spawn_restarts_total', { spawn: 'php' }), 1, 'one crash restart')
  t.equal(value(series, 'proxycore_spawn_state', { spawn: 'php', state: 'running' }), 1)
})

// The same sentence, for a request still in flight at the reload: the old generation drains it,
// and its response must be counted. It is not while the gateway closes the old status (which
// stops counting request:end) before the old proxy's drain (src/gateway/server.ts retire()).
t.test('observability.md section 2: a request in flight across a SIGHUP reload is counted when it ends', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  const { dir, file } = site(t)
  const go = join(dir, 'go')
  // Waits (bounded: 20 s) for the test to create `go`, then answers.
  writeFileSync(join(dir, 'wait.php'), `<?php for ($i = 0; $i < 2000 && !file_exists(${JSON.stringify(go)}); $i++) { usleep(10000); clearstatcache(); } echo file_exists(${JSON.stringify(go)}) ? "released" : "timed out";\n`)
  const { s, seen } = await serveKilled(t, file)
  t.equal((await get(`${s.url}/i.php`)).status, 200)
  await track(s.url, seen)
  const held = get(`${s.url}/wait.php`)
  t.ok(await waitFor(async () => {
    const j = JSON.parse((await get(`${s.url}/server-status?format=json`)).body.toString()) as { inflight: number }
    return j.inflight === 1
  }, 10_000, 20), 'the request is in flight')
  const at = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reloaded', at)
  writeFileSync(go, '')
  const r = await held
  t.equal(r.body.toString(), 'released', 'the old generation finished it')
  const series = await scrape(s.url)
  t.equal(value(series, 'proxycore_responses_total', { route: 'php', status: '200' }), 2, 'both responses counted, the one that ended after the reload too')
  t.equal(value(series, 'proxycore_route_requests_total', { route: 'php' }), 2)
  t.equal(value(series, 'proxycore_route_request_duration_seconds_count', { route: 'php' }), 2, 'the latency histogram has the drained request too')
})
