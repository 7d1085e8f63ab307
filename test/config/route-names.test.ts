/**
 * Route names label logs and metrics, so they are unique — the default name of a route without
 * `name` (its index, compile.ts) included. A route named "0" next to an unnamed first route shared
 * its series: /metrics then printed the latency histogram's series twice with one label set (a
 * scrape Prometheus rejects) and the route counters, fed two raw values under one key, grew on every
 * scrape without a request. Such a file is refused, at the name the operator wrote.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import '../../src/index.js' // registers the built-in adapters, as the CLI does
import { loadConfig } from '../../src/config/load.js'
import { runCli } from '../cli/run.js'
import { guardLeaks } from '../helpers/leaks.js'

function dir (t: { teardown: (fn: () => void) => void }): string {
  const d = mkdtempSync(join(tmpdir(), 'pc-route-names-'))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}

const route = (extra: string): string => `  - protocol: http\n    backends: [127.0.0.1:1]\n${extra}`

t.test('a route named like an unnamed route\'s index is refused at the name written', async (t) => {
  guardLeaks(t)
  const d = dir(t)
  // Unnamed first (default name "0"), then one named "0": the issue is at the second's name.
  const a = join(d, 'a.yaml')
  writeFileSync(a, `routes:\n${route('    match: { prefix: /a/ }\n')}${route('    name: "0"\n')}`)
  const ra = await loadConfig(a)
  t.same(ra.issues.map((i) => i.path), ['/routes/1/name'])
  t.match(ra.issues[0]?.message, /route name "0" is used twice: here and at .*a\.yaml:2:5 \(a route without `name` is named by its index\)/)
  t.match(ra.issues[0]?.source, /a\.yaml:7:11$/)

  // Named "1" first, then an unnamed second route (default name "1"): still at the written name.
  const b = join(d, 'b.yaml')
  writeFileSync(b, `routes:\n${route('    name: "1"\n    match: { prefix: /b/ }\n')}${route('')}`)
  const rb = await loadConfig(b)
  t.same(rb.issues.map((i) => i.path), ['/routes/0/name'])
  t.match(rb.issues[0]?.message, /route name "1" is used twice: here and at .*b\.yaml:6:5 \(a route without `name` is named by its index\)/)

  // Two written names alike: as before, at the later one, naming the first.
  const c = join(d, 'c.yaml')
  writeFileSync(c, `routes:\n${route('    name: api\n    match: { prefix: /c/ }\n')}${route('    name: api\n')}`)
  const rc = await loadConfig(c)
  t.same(rc.issues.map((i) => i.path), ['/routes/1/name'])
  t.match(rc.issues[0]?.message, /route name "api" is used twice: here and at .*c\.yaml:4:11$/)

  // Distinct names, unnamed routes among them: no issue.
  const ok = join(d, 'ok.yaml')
  writeFileSync(ok, `routes:\n${route('    match: { prefix: /x/ }\n')}${route('    name: "2"\n    match: { prefix: /y/ }\n')}${route('    name: api\n')}`)
  t.same((await loadConfig(ok)).issues, [])
})

t.test('included routes: the index is the merged one, as compile numbers them', async (t) => {
  guardLeaks(t)
  const d = dir(t)
  // The included route comes first (index 0, unnamed); the main file's route named "0" clashes.
  writeFileSync(join(d, 'inc.yaml'), `routes:\n${route('    match: { prefix: /inc/ }\n')}`)
  const main = join(d, 'main.yaml')
  writeFileSync(main, `include: inc.yaml\nroutes:\n${route('    name: "0"\n')}`)
  const r = await loadConfig(main)
  t.same(r.issues.map((i) => i.path), ['/routes/1/name'])
  t.match(r.issues[0]?.source, /main\.yaml:5:11$/)
  t.match(r.issues[0]?.message, /inc\.yaml:2:5/)
})

t.test('proxycore check: exit 2', async (t) => {
  guardLeaks(t)
  const d = dir(t)
  const file = join(d, 'proxycore.yaml')
  writeFileSync(file, `routes:\n${route('    match: { prefix: /a/ }\n')}${route('    name: "0"\n')}`)
  const r = await runCli(['check', file])
  t.equal(r.code, 2)
  t.match(r.stderr, /proxycore\.yaml:7:11: \/routes\/1\/name: route name "0" is used twice/)
})

t.test('createProxy refuses them too: the rule is checkConfig\'s, not only the file loader\'s', async (t) => {
  guardLeaks(t)
  const { createProxy } = await import('../../src/index.js')
  const backends = ['127.0.0.1:1']
  const cases: Array<{ routes: Array<Record<string, unknown>>, path: string, name: string }> = [
    { routes: [{ name: 'a', protocol: 'http', backends }, { name: 'a', protocol: 'http', backends }], path: '/routes/1/name', name: 'a' },
    // the unnamed second route is named "1"; the clash is reported at the name written, the first
    { routes: [{ name: '1', protocol: 'http', backends }, { protocol: 'http', backends }], path: '/routes/0/name', name: '1' },
    { routes: [{ protocol: 'http', backends }, { name: '0', protocol: 'http', backends }], path: '/routes/1/name', name: '0' },
  ]
  for (const c of cases) {
    await t.rejects(createProxy({ routes: c.routes } as never), { code: 'ERR_CONFIG', issues: [{ path: c.path, message: new RegExp(`^route name "${c.name}" is used twice`) }] }, c.path)
  }
  // Distinct names, and an unnamed route beside names that are not its index: accepted.
  const p = await createProxy({ routes: [{ protocol: 'http', backends }, { name: '1x', protocol: 'http', backends }, { name: 'b', protocol: 'http', backends }] } as never)
  await p.close()
})
