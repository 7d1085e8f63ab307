/**
 * A route name is a label in the access log, in /metrics and on the status page, all UTF-8. A name
 * with a lone UTF-16 surrogate (`"\ud800"` in YAML or JSON; a file of invalid UTF-8 is refused
 * already) cannot be written as UTF-8: each became U+FFFD on the way out, so two routes named
 * `"a\ud800"` and `"a\udc00"` (distinct names, passing the uniqueness rule) were one label —
 * /metrics printed every route series twice with one label set, and their log lines could not be
 * told apart. Such a name is a config issue at its path, for `check`, `serve` and reload, and
 * `createStatus` refuses a proxy with one (embedders).
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import '../../src/index.js' // registers the built-in adapters, as the CLI does
import { createProxy, silentLogger } from '../../src/index.js'
import { loadConfig } from '../../src/config/load.js'
import { createStatus } from '../../src/status/index.js'
import { runCli } from '../cli/run.js'
import { guardLeaks } from '../helpers/leaks.js'

function dir (t: { teardown: (fn: () => void) => void }): string {
  const d = mkdtempSync(join(tmpdir(), 'pc-audit35-uni-'))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}

const route = (name: string, prefix: string): string => `  - name: "${name}"\n    match: { prefix: ${prefix} }\n    protocol: http\n    backends: [127.0.0.1:1]\n`

t.test('a route name with a lone surrogate is refused at its name; paired ones load', async (t) => {
  guardLeaks(t)
  const d = dir(t)
  const yaml = join(d, 'a.yaml')
  writeFileSync(yaml, `routes:\n${route('a\\ud800', '/x/')}${route('a\\udc00', '/y/')}${route('ok \\ud83d\\ude00 é', '/z/')}`)
  const r = await loadConfig(yaml)
  t.same(r.issues.map((i) => i.path), ['/routes/0/name', '/routes/1/name'])
  t.match(r.issues[0], { message: /not well-formed Unicode/, source: /a\.yaml:2:11$/ })
  t.equal(r.issues[0]?.found, 'a\ud800')

  const json = join(d, 'b.json')
  writeFileSync(json, '{ "routes": [{ "name": "x\\udfff", "protocol": "http", "backends": ["127.0.0.1:1"] }] }')
  t.same((await loadConfig(json)).issues.map((i) => i.path), ['/routes/0/name'])

  const c = await runCli(['check', yaml])
  t.equal(c.code, 2)
  t.match(c.stderr, /a\.yaml:2:11: \/routes\/0\/name: .*not well-formed Unicode/)
  t.notMatch(c.stderr, /\n\s+at /, 'no stack trace')
})

t.test('embedders: createProxy refuses such a route name (the log, page and metrics would carry U+FFFD)', async (t) => {
  guardLeaks(t)
  const backends = ['127.0.0.1:1']
  await t.rejects(createProxy({ logger: silentLogger, routes: [{ name: 'b\udc00', protocol: 'http', backends }] } as never), { code: 'ERR_CONFIG', issues: [{ path: '/routes/0/name', message: /not well-formed Unicode/ }] })
  const ok = await createProxy({ logger: silentLogger, routes: [{ name: 'b \ud83d\ude00', protocol: 'http', backends }] } as never)
  t.teardown(() => ok.close(0))
  const s = createStatus(ok, { live: false })
  await s.close()
})
