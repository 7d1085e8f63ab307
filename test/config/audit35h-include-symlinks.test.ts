/**
 * Symbolic link loops under `include`. A directory link back up (`conf.d/up -> ..`) under a `**`
 * glob made the main file include itself as conf.d/up/main.yaml, then conf.d/up/conf.d/up/main.yaml,
 * …: the cycle check compared path strings, so `check` and `serve` ran for minutes. A link to itself
 * (`conf.d/self -> self`) made the glob throw ELOOP: `proxycore: Error: ELOOP …`, exit 1, no line.
 * Now a file is the same file whatever path reaches it, and a glob that cannot be listed is an issue
 * at its include entry; a symlinked file in conf.d (sites-enabled style) still loads.
 */
import t from 'tap'
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { runCli } from '../cli/run.js'
import { loadConfig, type LoadResult } from '../../src/config/load.js'
import '../../src/index.js'

const noStack = /\n\s+at |Error:/

async function withDeadline (p: Promise<LoadResult>, ms: number): Promise<LoadResult | 'timed out'> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<'timed out'>((resolve) => { timer = setTimeout(() => resolve('timed out'), ms) })
  try { return await Promise.race([p, late]) } finally { clearTimeout(timer) }
}

t.test('a directory link back up under a ** glob: an include cycle, found at once', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit35h-link-up-')
  mkdirSync(join(dir, 'conf.d'))
  symlinkSync('..', join(dir, 'conf.d', 'up'))
  writeFileSync(join(dir, 'conf.d', 'a.yaml'), 'routes:\n  - { protocol: http, backends: ["127.0.0.1:9"], match: { prefix: /a/ } }\n')
  writeFileSync(join(dir, 'main.yaml'), 'include: "conf.d/**/*.yaml"\nroutes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n')
  // Expected well under a second; it ran for minutes (the deadline only keeps a failure short).
  const r = await withDeadline(loadConfig(join(dir, 'main.yaml'), { env: {} }), 20_000)
  if (r === 'timed out') { t.fail('loadConfig did not end within 20 s'); return }
  t.ok(r.issues.length > 0 && r.issues.every((i) => i.path === '/include' && /^include cycle: /.test(i.message)), 'include cycle issues only')
  t.ok(r.issues.some((i) => i.message.includes(join(dir, 'conf.d', 'up', 'main.yaml'))), 'naming the path through the link')
  const cli = await runCli(['check', join(dir, 'main.yaml')])
  t.equal(cli.code, 2, 'check: exit 2')
  t.match(cli.stderr, /main\.yaml:1:\d+: \/include: include cycle: /)
  t.notMatch(cli.stderr, noStack)
})

t.test('a link to itself: an issue at the include entry, exit 2, no stack trace', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit35h-link-self-')
  mkdirSync(join(dir, 'conf.d'))
  symlinkSync('self', join(dir, 'conf.d', 'self'))
  writeFileSync(join(dir, 'main.yaml'), 'routes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\ninclude:\n  - "conf.d/*.yaml"\n  - conf.d/self\n')
  const r = await loadConfig(join(dir, 'main.yaml'), { env: {} })
  t.same(r.issues.map((i) => i.path), ['/include/1'], 'one issue, at the entry')
  t.match(r.issues[0]?.message, /conf\.d\/self.*ELOOP/)
  t.match(r.issues[0]?.source, /main\.yaml:5:\d+$/)
  const cli = await runCli(['check', join(dir, 'main.yaml')])
  t.equal(cli.code, 2, 'check: exit 2')
  t.match(cli.stderr, /main\.yaml:5:\d+: \/include\/1: .*ELOOP/)
  t.notMatch(cli.stderr, noStack)
})

t.test('a symlinked file in conf.d, and a file reached twice through links, still load', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit35h-link-ok-')
  mkdirSync(join(dir, 'available'))
  mkdirSync(join(dir, 'enabled'))
  writeFileSync(join(dir, 'available', 'site.yaml'), 'routes:\n  - { protocol: http, backends: ["127.0.0.1:9"], match: { prefix: /site/ } }\n')
  symlinkSync('../available/site.yaml', join(dir, 'enabled', 'site.yaml'))
  writeFileSync(join(dir, 'main.yaml'), 'include: "enabled/*.yaml"\nroutes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n')
  const r = await loadConfig(join(dir, 'main.yaml'), { env: {} })
  t.same(r.issues, [])
  t.same(r.files, [join(dir, 'main.yaml'), join(dir, 'enabled', 'site.yaml')], 'named by the path written, not the link target')
  t.equal(r.config.routes.length, 2)
  writeFileSync(join(dir, 'twice.yaml'), 'include: ["enabled/*.yaml", "available/*.yaml"]\nroutes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n')
  const twice = await loadConfig(join(dir, 'twice.yaml'), { env: {} })
  t.same(twice.issues, [])
  t.same(twice.files, [join(dir, 'twice.yaml'), join(dir, 'enabled', 'site.yaml')], 'one file matched by two entries is read once')
})
