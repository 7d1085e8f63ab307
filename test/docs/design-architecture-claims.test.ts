/**
 * docs/design/architecture.md, read as a new contributor and checked against the code: the layer
 * rules (measured on the import graph of src/), every file and module the document cites, the
 * error codes and statuses it quotes, the bounds it gives (spool memory, the unread-body discard,
 * close's grace), the dependency pin, and two claims about timeouts measured through createProxy:
 * the sweep runs finer than a second when a route asks for a short timeout, and an exchange in
 * flight holds no timer of its own (the count of live timers does not grow with the requests).
 *
 * Failover, replay, lingering close, the discard bounds in action, the spool and close(graceMs)
 * have their own tests (test/component/balance-failover, keepalive-replay, lingering-close,
 * close-grace; test/core/audit-linger), so they are not repeated here.
 */
import t from 'tap'
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { request, type ServerResponse } from 'node:http'
import { createHook } from 'node:async_hooks'
import { ERRORS, ProxyError, statusFor } from '../../src/core/errors.js'
import { DEFAULT_SPOOL_MEMORY } from '../../src/core/body-spool.js'
import { DISCARD_MAX_BYTES, DISCARD_MAX_MS } from '../../src/core/body-pump.js'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'
import { ensureBuilt, root } from '../cli/run.js'
import { runNode } from '../helpers/run-node.js'
import { pathToFileURL } from 'node:url'
import { havePeer, PHP_FPM, startPhpFpm, tempDir } from '../fastcgi/helpers/peers.js'
import { writeFileSync } from 'node:fs'
import { Agent } from 'node:http'

const DOC = readFileSync(join(root, 'docs/design/architecture.md'), 'utf8')

// ---------------------------------------------------------------------------------------------
// The layers, on the real import graph
// ---------------------------------------------------------------------------------------------

/** Every relative import (static, `export from`, dynamic) of every .ts file under src/. */
function importGraph (): Array<{ from: string, to: string, typeOnly: boolean }> {
  const files: string[] = []
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const p = join(d, n)
      if (statSync(p).isDirectory()) walk(p)
      else if (p.endsWith('.ts')) files.push(p)
    }
  }
  walk(join(root, 'src'))
  const edges: Array<{ from: string, to: string, typeOnly: boolean }> = []
  for (const f of files) {
    const text = readFileSync(f, 'utf8')
    for (const m of text.matchAll(/(?:^|\n)\s*(import|export)(\s+type)?\s[^'"]*?from\s+'(\.[^']+)'|import\('(\.[^']+)'\)/g)) {
      const spec = m[3] ?? m[4]
      const to = resolve(dirname(f), spec).replace(/\.js$/, '.ts')
      edges.push({ from: relative(join(root, 'src'), f), to: relative(join(root, 'src'), to), typeOnly: m[2] !== undefined })
    }
  }
  return edges
}

const layer = (file: string): string => file.includes('/') ? file.split('/')[0] : file

t.test('layers: the directories and protocols the diagram names exist', async (t) => {
  const block = /## Layers[^\n]*\n\n```\n([\s\S]*?)```/.exec(DOC)
  if (block === null) throw new Error('architecture.md has no Layers block')
  const named = [...block[1].matchAll(/^(\S+)/gm)].map((m) => m[1])
  t.same(named, ['cli/', 'gateway/', 'proxy.ts', 'config/', 'status/', 'protocols/', 'core/', 'spawn/'])
  for (const n of named) t.ok(existsSync(join(root, 'src', n)), `src/${n} exists`)
  // Every built-in protocol directory is in the diagram's protocols line, and nothing else.
  const line = /^protocols\/\s+(.*)$/m.exec(block[1])?.[1] ?? ''
  const dirs = readdirSync(join(root, 'src/protocols')).filter((n) => statSync(join(root, 'src/protocols', n)).isDirectory()).sort()
  t.same(dirs.filter((d) => !new RegExp(`\\b${d}\\b`).test(line)), [], 'every src/protocols/* is named on the protocols line')
})

t.test('layers: imports point downwards, with the exceptions the document states', async (t) => {
  const order = ['cli', 'gateway', 'proxy.ts', 'config', 'status', 'protocols', 'core', 'spawn']
  const rank = (l: string): number => order.indexOf(l)
  // The leaves the document names below core: config's schema, units and generated validators.
  const leaves = new Set(['config/schema.ts', 'config/schema-parts.ts', 'config/spawn-schema.ts', 'config/units.ts', 'config/validators.generated.ts'])
  const up: string[] = []
  const graph = importGraph()
  for (const e of graph) {
    const a = layer(e.from)
    const b = layer(e.to)
    if (a === b || rank(a) < 0 || rank(b) < 0) continue
    if (rank(b) >= rank(a)) continue
    if (b === 'config' && leaves.has(e.to)) continue
    up.push(`${e.from} -> ${e.to}`)
  }
  t.match(DOC, /Part of `config\/` is a leaf below `core`/, 'the document states the config leaves')
  t.same(up, [], 'no import points up a layer')
  t.same(graph.filter((e) => layer(e.from) === 'core' && layer(e.to) === 'protocols').map((e) => e.from), [], 'core imports no protocol')
  // The leaves really are leaves: they import nothing from core (no cycle through config).
  t.same(graph.filter((e) => leaves.has(e.from) && !leaves.has(e.to)).map((e) => `${e.from} -> ${e.to}`), [], 'config leaves import only each other')
  // lazy.ts and live-set.ts are "below all of them".
  t.same(graph.filter((e) => ['lazy.ts', 'live-set.ts', 'utf8.ts'].includes(e.from)).map((e) => e.to), [], 'lazy.ts, live-set.ts and utf8.ts import nothing of proxycore')
  // The built-ins register from src/index.ts.
  const index = readFileSync(join(root, 'src/index.ts'), 'utf8')
  for (const a of ['httpAdapter', 'fastcgiAdapter', 'scgiAdapter', 'cgiAdapter', 'staticAdapter']) t.match(index, `registerAdapter(${a})`)
})

t.test('layers: spawn imports nothing from core', async (t) => {
  t.same(importGraph().filter((e) => layer(e.from) === 'spawn' && layer(e.to) === 'core').map((e) => `${e.from} -> ${e.to}`), [])
})

t.test('the divergences from the first design the document states hold in the code', async (t) => {
  const graph = importGraph()
  const types = readFileSync(join(root, 'src/core/types.ts'), 'utf8')
  // protocols/ above core/: adapters import core's pieces; the connector comes through the context.
  t.ok(graph.some((e) => layer(e.from) === 'protocols' && e.to === 'core/cgi/response-head.ts'), 'an adapter imports the CGI head parser')
  t.same(graph.filter((e) => layer(e.from) === 'protocols' && e.to === 'core/connect.ts').map((e) => e.from), [], 'no adapter imports the connector')
  t.match(types, /connect \(endpoint: Endpoint\): Promise<Socket>/, 'ClientContext.connect')
  // The core's compile step imports the config leaves.
  t.ok(graph.some((e) => e.from === 'core/compile.ts' && e.to === 'config/validators.generated.ts'), 'core/compile.ts imports the generated validators')
  // Events live in core and go to diagnostics_channel; status only imports them.
  t.match(readFileSync(join(root, 'src/core/events.ts'), 'utf8'), /diagnostics\.channel\('proxycore:request:start'\)/)
  t.ok(graph.some((e) => layer(e.from) === 'status' && e.to === 'core/events.ts'), 'status/ subscribes to core/events.ts')
  t.notOk(existsSync(join(root, 'src/status/events.ts')), 'no events module in status/')
  // The seams that grew.
  for (const m of ['onLocalRedirect? (location: string): void', 'takesLocalRedirects? (): boolean', 'closeAfterResponse? (): void',
    'upgrade? (exchange: Exchange, handler: UpgradeHandler): void', 'readonly local?: boolean',
    'onHead (status: number, headers: RawHeaders, flow: FlowControl']) t.ok(types.includes(m), `types.ts: ${m}`)
  // Test layout: by area, no integration/ or fuzz/ directory.
  for (const d of ['unit', 'component', 'fastcgi', 'scgi', 'cgi', 'spawn', 'static', 'config', 'cli', 'docs']) t.ok(existsSync(join(root, 'test', d)), `test/${d}`)
  t.notOk(existsSync(join(root, 'test/integration')) || existsSync(join(root, 'test/fuzz')), 'no test/integration or test/fuzz')
  t.notOk(existsSync(join(root, 'BENCH.md')), 'no BENCH.md; docs/benchmarks.md instead')
  // The fork server behind a pipe spawn's ProcessStarter.
  t.ok(existsSync(join(root, 'src/spawn/fork-server.ts')) && existsSync(join(root, 'native/fork-server.c')))
  t.match(readFileSync(join(root, 'src/config/spawn-schema.ts'), 'utf8'), /launcher: Type\.Optional\(Type\.Union\(\[Type\.Literal\('auto'\), Type\.Literal\('fork-server'\), Type\.Literal\('direct'\)\], \{ default: 'auto'/, 'launcher: auto | fork-server | direct, default auto')
})

// ---------------------------------------------------------------------------------------------
// Files, codes and numbers the document cites
// ---------------------------------------------------------------------------------------------

t.test('every file path the document cites exists', async (t) => {
  const cited = new Set<string>()
  for (const m of DOC.matchAll(/(?<![\w./-])((?:src|test|bench|scripts|native)\/[\w./{},*-]+?\.(?:ts|mjs|c|sh))/g)) cited.add(m[1])
  const missing: string[] = []
  for (const c of cited) {
    // bench/servers/floor-{http,fastcgi,scgi,static}.mjs
    const brace = /\{([^}]+)\}/.exec(c)
    const paths = brace === null ? [c] : brace[1].split(',').map((x) => c.replace(brace[0], x))
    for (const p of paths) if (!existsSync(join(root, p))) missing.push(p)
  }
  t.ok(cited.size >= 20, `${cited.size} paths cited`)
  t.same(missing, [], 'no cited file is missing')
  // Named functions live where the document says.
  t.match(readFileSync(join(root, 'src/core/body-pump.ts'), 'utf8'), /export function lingerOnClose\b/)
  t.match(readFileSync(join(root, 'src/protocols/http/client.ts'), 'utf8'), /export function compileParserEarly\b/)
  t.match(readFileSync(join(root, 'src/core/exchange.ts'), 'utf8'), /class ProxyExchange\b/)
  t.match(readFileSync(join(root, 'src/core/errors.ts'), 'utf8'), /export function statusFor\b/)
  // Data model: Backend states and the two sources.
  const pool = readFileSync(join(root, 'src/core/pool.ts'), 'utf8')
  t.match(DOC, /Backend \(one per endpoint: state up \| disabled \| draining\)/)
  t.match(pool, /export type BackendState = 'up' \| 'disabled' \| 'draining'/)
  t.match(pool, /export class (StaticSource|BackendPool)\b[\s\S]*export class (StaticSource|BackendPool)\b/, 'BackendPool and StaticSource')
})

t.test('the error codes and statuses the document quotes are the table\'s', async (t) => {
  const codes = [...new Set([...DOC.matchAll(/\bERR_[A-Z_]+\b/g)].map((m) => m[0]))]
  t.ok(codes.length >= 4)
  t.same(codes.filter((c) => !(c in ERRORS)), [], 'every ERR_* code in the document exists')
  t.equal(ERRORS.ERR_NO_BACKEND.status, 503, 'pick: 503 ERR_NO_BACKEND')
  t.equal(ERRORS.ERR_SPOOL_NO_SPACE.status, 507, 'a full filesystem answers 507')
  t.equal(ERRORS.ERR_SHUTTING_DOWN.status, 503, 'close: ERR_SHUTTING_DOWN is a 503')
  t.equal(ERRORS.ERR_CLIENT_ABORTED.status, 499, 'client aborted: 499')
  t.equal(ERRORS.ERR_CONNECT_REFUSED.status, 502, 'last real error: 502 refused')
  t.equal(ERRORS.ERR_CONNECT_TIMEOUT.status, 504, 'last real error: 504 timeout')
  t.equal(statusFor(new ProxyError('ERR_CLIENT_TIMEOUT')), ERRORS.ERR_CLIENT_TIMEOUT.status, 'statusFor maps by the table')
  t.match(DOC, /503 ERR_NO_BACKEND/)
  t.match(DOC, /507 `ERR_SPOOL_NO_SPACE`/)
})

t.test('the bounds the document gives are the code\'s', async (t) => {
  t.match(DOC, /memory up to 64 KiB, then a temp file/)
  t.equal(DEFAULT_SPOOL_MEMORY, 64 * 1024, 'spool memory: 64 KiB')
  t.match(DOC, /\(at most 16 MiB\)\s+more bytes, or 30 s/)
  t.match(DOC, /same bounds \(16 MiB, 30 s\)/)
  t.equal(DISCARD_MAX_BYTES, 16 * 1024 * 1024, 'discard: 16 MiB')
  t.equal(DISCARD_MAX_MS, 30_000, 'discard: 30 s')
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { overrides?: Record<string, string>, dependencies?: Record<string, string> }
  t.match(DOC, /`overrides` holds Fastify's `light-my-request` at\s+6\.6/)
  t.equal(pkg.overrides?.['light-my-request'], '~6.6.0', 'the one override pins light-my-request to 6.6')
  t.same(Object.keys(pkg.overrides ?? {}), ['light-my-request'], 'one pin, as the document says')
  t.notOk('fastify' in (pkg.dependencies ?? {}) || 'express' in (pkg.dependencies ?? {}), 'Express and Fastify are not runtime dependencies')
})

t.test('"a FastCGI-only proxy never loads undici": the lazily loaded dependencies stay unloaded', async (t) => {
  guardLeaks(t)
  await ensureBuilt()
  t.match(DOC, /undici, prom-client, ws, yaml and fast-glob now\s+load on first use \(`src\/lazy.ts`\), so a FastCGI-only proxy never loads undici/)
  const dir = tempDir(t, 'pc-arch-loads-')
  const record = join(dir, 'loads.txt')
  writeFileSync(record, '')
  const index = pathToFileURL(join(root, 'dist', 'index.js')).href
  const child = `
const { createProxy, silentLogger } = await import(${JSON.stringify(index)})
const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'fastcgi', backends: ['127.0.0.1:9'], docroot: ${JSON.stringify(dir)}, match: { extension: '.php' } }] })
await proxy.close()
console.log('ok')`
  const preload = pathToFileURL(join(root, 'test', 'helpers', 'record-loads.mjs')).href
  const r = await runNode(['--import', preload, '--input-type=module', '-e', child], { cwd: root, env: { ...process.env, NODE_OPTIONS: '', RECORD_LOADS: record } })
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, 'ok\n')
  const urls = readFileSync(record, 'utf8').split('\n').filter((l) => l !== '')
  t.ok(urls.some((u) => u.includes('/dist/protocols/fastcgi/')), 'the recorder saw the FastCGI adapter load')
  const lazy = ['undici', 'prom-client', 'ws', 'yaml', 'fast-glob', 'ipaddr.js', 'picomatch', 'pino-pretty', '@sinclair/typebox']
  t.same(lazy.filter((d) => urls.some((u) => u.includes(`/node_modules/${d}/`))), [], 'none of the lazily loaded dependencies was loaded')
})

t.test('a CGI route and a static route have a pool of one placeholder backend', async (t) => {
  guardLeaks(t)
  t.match(DOC, /A CGI route still has a `BackendPool`/)
  const dir = tempDir(t, 'pc-arch-pool-')
  const { proxy } = await proxyServer(t, {
    spawns: { scripts: { socketType: 'pipe' } },
    routes: [
      { name: 'c', protocol: 'cgi', spawn: 'scripts', docroot: dir, match: { prefix: '/cgi-bin/' } },
      { name: 'files', protocol: 'static', docroot: dir },
    ],
  })
  t.same(proxy.routes.map((r) => [r.name, r.pool.backends.map((b) => b.endpoint.id)]), [['c', ['scripts']], ['files', ['files']]])
})

// ---------------------------------------------------------------------------------------------
// Timeouts, measured
// ---------------------------------------------------------------------------------------------

/** A node:http backend that takes requests and answers none until the test ends. */
async function hangingBackend (t: Parameters<typeof guardLeaks>[0]): Promise<{ address: string, held: () => number }> {
  const held: ServerResponse[] = []
  const be = await backend(t, (_req, res) => { held.push(res) })
  t.teardown(() => { for (const r of held) r.destroy() })
  return { address: be.address, held: () => held.length }
}

t.test('a short timeout makes the sweep finer than lighttpd\'s one-second tick', async (t) => {
  guardLeaks(t)
  const be = await hangingBackend(t)
  const ends: RequestEndEvent[] = []
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: '150ms' } }] })
  proxy.events.on('request:end', (e: RequestEndEvent) => ends.push(e))
  const started = Date.now()
  const r = await get(`${url}/slow`)
  const took = Date.now() - started
  t.equal(r.status, 504)
  t.match(r.body.toString(), /ERR_HEADERS_TIMEOUT/)
  t.ok(took >= 140, `not before the deadline (${took} ms)`)
  // With a one-second tick it would be >= 1000 ms; the sweep runs every 150 ms here, so the
  // answer comes within two ticks. 900 ms leaves 3x that for a loaded machine.
  t.ok(took < 900, `within a tick or two of the 150 ms deadline, not a second later (${took} ms)`)
  t.ok(await waitFor(() => ends.length === 1, 5000), 'request:end once')
  t.match(DOC, /a quarter of the shortest `headers`, `idle`, `clientIdle`, `uploadGrace` or `queueTimeout` of any route,\s+between 5 ms and 1 s/)
  // The sweep's rule, and the one exchange kind outside it.
  const compile = readFileSync(join(root, 'src/core/compile.ts'), 'utf8')
  t.match(compile, /for \(const t of \[timeouts\.headers, timeouts\.idle, timeouts\.clientIdle, timeouts\.minUploadRate > 0 \? timeouts\.uploadGrace : 0, queueTimeout\]\) if \(t > 0\) shortest = Math\.min\(shortest, t \/ 4\)/)
  t.match(compile, /const sweepMs = Math\.max\(5, Math\.min\(1000, Math\.floor\(shortest\)\)\)/)
  const upgrade = readFileSync(join(root, 'src/core/upgrade.ts'), 'utf8')
  t.match(DOC, /An Upgrade \(WebSocket\) exchange is the exception/)
  t.match(upgrade, /this\.timer = setTimeout\(this\.onTimer, ms\)/)
  t.match(upgrade, /this\.timer\?\.refresh\(\)/)
})

t.test('an exchange in flight holds no timer of its own', async (t) => {
  guardLeaks(t)
  const be = await hangingBackend(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: '30s' } }] })
  // Timers made while requests arrive, counted at their creation (unref'd ones too, which
  // process.getActiveResourcesInfo() leaves out), by the proxycore file that made them.
  const makers: string[] = []
  const hook = createHook({
    init (_id, type) {
      if (type !== 'Timeout') return
      const stack = new Error().stack ?? ''
      makers.push(/\/src\/[\w/.-]+\.ts/.exec(stack)?.[0] ?? (stack.includes('node_modules/undici') ? 'undici' : 'other'))
    },
  })
  const reqs: Array<ReturnType<typeof request>> = []
  t.teardown(() => { hook.disable(); for (const r of reqs) r.destroy() })
  const send = (): void => {
    const r = request({ host: '127.0.0.1', port, path: '/hang', agent: false })
    r.on('error', () => {})
    r.end()
    reqs.push(r)
  }
  // Warm up: the sweep's interval, undici's connection, the first exchange.
  send()
  t.ok(await waitFor(() => be.held() === 1, 10_000), 'the first request reached the backend')
  hook.enable()
  const N = 24
  for (let i = 1; i < N; i++) send()
  t.ok(await waitFor(() => be.held() === N, 10_000), `${N} requests held by the backend`)
  hook.disable()
  // The connector's connect timeout is per connection (each held request needed a new one); an
  // exchange adds none, nor does undici (its timeouts are off: the core owns them).
  const fromConnector = makers.filter((m) => m === '/src/core/connect.ts').length
  t.ok(fromConnector <= N - 1, `${fromConnector} connect timers for ${N - 1} new connections`)
  t.same(makers.filter((m) => m !== '/src/core/connect.ts' && m !== 'other'), [], 'no other proxycore or undici code made a timer')
})

// ---------------------------------------------------------------------------------------------
// Unread request bodies, with real peers
// ---------------------------------------------------------------------------------------------

/** POST `size` bytes, then GET, on one kept-alive connection: the statuses and both local ports. */
async function postThenGet (port: number, path: string, size: number): Promise<{ statuses: number[], ports: number[], bodies: string[] }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const one = (method: string, body?: Buffer): Promise<{ status: number, port: number, body: string }> => new Promise((resolve, reject) => {
    const r = request({ host: '127.0.0.1', port, path, method, agent, headers: body === undefined ? {} : { 'content-length': String(body.length), 'content-type': 'application/octet-stream' } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, port: r.socket?.localPort ?? -1, body: Buffer.concat(chunks).toString() }))
    })
    r.on('error', reject)
    r.end(body)
  })
  try {
    const a = await one('POST', Buffer.alloc(size, 0x61))
    const b = await one('GET')
    return { statuses: [a.status, b.status], ports: [a.port, b.port], bodies: [a.body, b.body] }
  } finally { agent.destroy() }
}

t.test('a PHP script that ignores its upload: the rest is read and dropped, the connection goes on (php-fpm, requestBuffering: false)', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_FPM)) return
  const dir = tempDir(t, 'pc-arch-fpm-')
  writeFileSync(join(dir, 'ignore.php'), '<?php echo "ignored";')
  const fpm = await startPhpFpm(t, dir, 1)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'fastcgi', backends: [`unix:${fpm.socketPath}`], docroot: dir, requestBuffering: false, options: { discovery: false } }] })
  const r = await postThenGet(port, '/ignore.php', 4 * 1024 * 1024)
  t.same(r.statuses, [200, 200])
  t.same(r.bodies, ['ignored', 'ignored'])
  t.equal(r.ports[0], r.ports[1], 'the GET went on the same connection as the POST')
})

t.test('a CGI script that ignores its upload: the connection goes on (sh)', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = tempDir(t, 'pc-arch-cgi-')
  writeFileSync(join(dir, 'ignore.sh'), '#!/bin/sh\nprintf \'Content-Type: text/plain\\r\\n\\r\\nignored\'\n', { mode: 0o755 })
  const { port } = await proxyServer(t, {
    spawns: { cgi: { socketType: 'pipe' } },
    routes: [{ protocol: 'cgi', spawn: 'cgi', docroot: dir, match: { extension: '.sh' }, requestBuffering: false }],
  })
  const r = await postThenGet(port, '/ignore.sh', 4 * 1024 * 1024)
  t.same(r.statuses, [200, 200])
  t.same(r.bodies, ['ignored', 'ignored'])
  t.equal(r.ports[0], r.ports[1], 'the GET went on the same connection as the POST')
})
