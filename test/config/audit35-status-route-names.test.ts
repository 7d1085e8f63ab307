/**
 * The status handler labels its own requests `route=status` (page, JSON, live view) and
 * `route=metrics` (the metrics path) in the access log, `request:end` and
 * proxycore_responses_total (src/status/handler.ts STATUS_ROUTES). A config route with one of those
 * names would share the label: its requests and the status page's merged into one series and log
 * lines nobody can tell apart. With the status page on, such a name is a config issue at the name
 * written (`status` always, `metrics` unless `metricsPath: false`); without `status` it is free.
 * Embedders get the same refusal from createStatus.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import '../../src/index.js' // registers the built-in adapters, as the CLI does
import { createProxy, silentLogger } from '../../src/index.js'
import { loadConfig } from '../../src/config/load.js'
import { checkConfig } from '../../src/config/check.js'
import { createStatus } from '../../src/status/index.js'
import { runCli } from '../cli/run.js'
import { guardLeaks } from '../helpers/leaks.js'

function dir (t: { teardown: (fn: () => void) => void }): string {
  const d = mkdtempSync(join(tmpdir(), 'pc-audit35-names-'))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}

const route = (extra: string): string => `  - protocol: http\n    backends: [127.0.0.1:1]\n${extra}`

t.test('with status on, a route named status or metrics is refused at its name', async (t) => {
  guardLeaks(t)
  const d = dir(t)
  const a = join(d, 'a.yaml')
  writeFileSync(a, `status: { allow: [127.0.0.1] }\nroutes:\n${route('    name: api\n    match: { prefix: /api/ }\n')}${route('    name: status\n    match: { prefix: /s/ }\n')}${route('    name: metrics\n')}`)
  const ra = await loadConfig(a)
  t.same(ra.issues.map((i) => i.path), ['/routes/1/name', '/routes/2/name'])
  t.match(ra.issues[0], { found: 'status', message: /route name "status" is the status page's own label/, source: /a\.yaml:9:11$/ })
  t.match(ra.issues[1], { found: 'metrics', message: /route name "metrics" is the metrics path's own label/, source: /a\.yaml:13:11$/ })

  // Metrics off: `metrics` is free, `status` is not.
  const b = join(d, 'b.yaml')
  writeFileSync(b, `status: { metricsPath: false }\nroutes:\n${route('    name: metrics\n    match: { prefix: /m/ }\n')}${route('    name: status\n')}`)
  const rb = await loadConfig(b)
  t.same(rb.issues.map((i) => [i.path, i.found]), [['/routes/1/name', 'status']])

  // No status page: both names are free (nothing else uses them).
  const c = join(d, 'c.yaml')
  writeFileSync(c, `routes:\n${route('    name: metrics\n    match: { prefix: /m/ }\n')}${route('    name: status\n')}`)
  t.same((await loadConfig(c)).issues, [])

  // Only the exact label: case and other spellings are different series.
  const e = join(d, 'e.yaml')
  writeFileSync(e, `status: {}\nroutes:\n${route('    name: Status\n    match: { prefix: /m/ }\n')}${route('    name: metrics2\n')}`)
  t.same((await loadConfig(e)).issues, [])
})

t.test('included routes are located in their own file', async (t) => {
  guardLeaks(t)
  const d = dir(t)
  writeFileSync(join(d, 'inc.yaml'), `routes:\n${route('    name: status\n')}`)
  const main = join(d, 'main.yaml')
  writeFileSync(main, `include: inc.yaml\nstatus: {}\nroutes:\n${route('    name: other\n')}`)
  const r = await loadConfig(main)
  t.same(r.issues.map((i) => i.path), ['/routes/0/name'])
  t.match(r.issues[0]?.source, /inc\.yaml:4:11$/)
})

t.test('checkConfig (createProxy\'s shape too) and proxycore check', async (t) => {
  guardLeaks(t)
  const issues = await checkConfig({ status: {}, routes: [{ name: 'metrics', protocol: 'http', backends: ['127.0.0.1:1'] }] }, { shape: 'embed' })
  t.same(issues.map((i) => [i.path, i.found]), [['/routes/0/name', 'metrics']])
  const d = dir(t)
  const file = join(d, 'proxycore.yaml')
  writeFileSync(file, `status: {}\nroutes:\n${route('    name: status\n')}`)
  const r = await runCli(['check', file])
  t.equal(r.code, 2)
  t.match(r.stderr, /proxycore\.yaml:5:11: \/routes\/0\/name: route name "status" is the status page's own label/)
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
})

t.test('createStatus refuses a proxy whose route has its label (embedders)', async (t) => {
  guardLeaks(t)
  const backends = ['127.0.0.1:1']
  const proxy = await createProxy({ logger: silentLogger, routes: [{ name: 'a', protocol: 'http', backends, match: { prefix: '/a/' } }, { name: 'status', protocol: 'http', backends }] } as never)
  t.teardown(() => proxy.close(0))
  t.throws(() => createStatus(proxy), { code: 'ERR_CONFIG', issues: [{ path: '/routes/1/name', found: 'status' }] })
  const m = await createProxy({ logger: silentLogger, routes: [{ name: 'metrics', protocol: 'http', backends }] } as never)
  t.teardown(() => m.close(0))
  t.throws(() => createStatus(m), { code: 'ERR_CONFIG', issues: [{ path: '/routes/0/name', found: 'metrics' }] })
  // Without metrics the name is free.
  const s = createStatus(m, { metricsPath: false, live: false })
  await s.close()
})
