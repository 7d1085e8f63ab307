/**
 * The config corpus: every file under fixtures/valid loads with no issue; every file under
 * fixtures/invalid produces exactly the issues it names (`# expect: <path> @<line> <text>` comments,
 * or a `<file>.expect` sidecar for JSON), each at its path and line. A path with a space or an
 * escape in it is written as a JSON string: `# expect: "/spawns/bad name" @3 <text>`.
 */
import t from 'tap'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { guardLeaks } from '../helpers/leaks.js'
import { loadConfig } from '../../src/config/load.js'
import { issueLine } from '../../src/config/report.js'
import { toSpawnSpec } from '../../src/config/spawns.js'
import '../../src/index.js'

const dir = fileURLToPath(new URL('./fixtures/', import.meta.url))
const files = (kind: string): string[] => readdirSync(join(dir, kind)).filter((f) => /\.(ya?ml|json)$/.test(f)).sort()
const env = { APP_MODE: 'test', PATH: process.env.PATH }

interface Expect { path: string, line: number, text: string }

function expectations (file: string): Expect[] {
  const sidecar = `${file}.expect`
  const lines = existsSync(sidecar)
    ? readFileSync(sidecar, 'utf8').split('\n')
    : readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('# expect: ')).map((l) => l.slice('# expect: '.length))
  return lines.filter((l) => l.trim() !== '').map((l) => {
    const m = /^("(?:[^"\\]|\\.)*"|\S+) @(\d+) (.+)$/.exec(l)
    if (m === null) throw new Error(`bad expectation in ${file}: ${l}`)
    const path = m[1] === "''" ? '' : m[1].startsWith('"') ? JSON.parse(m[1]) as string : m[1]
    return { path, line: Number(m[2]), text: m[3] }
  })
}

t.test('valid configs load without issues', async (t) => {
  guardLeaks(t)
  t.ok(files('valid').length >= 2)
  for (const f of files('valid')) {
    const r = await loadConfig(join(dir, 'valid', f), { env })
    t.same(r.issues.map(issueLine), [], f)
  }
})

t.test('valid/full.yaml: include merged, env substituted, relative paths resolved', async (t) => {
  guardLeaks(t)
  const r = await loadConfig(join(dir, 'valid', 'full.yaml'), { env: {} })
  t.same(r.issues, [])
  t.same(r.config.routes.map((x) => x.name), ['php', 'api', undefined, 'rest'], 'included routes first, main catch-all last')
  t.same(Object.keys(r.config.spawns ?? {}).sort(), ['app', 'cgi', 'fcgi'])
  t.equal(r.config.spawns?.app.environment?.MODE, 'production', '${VAR:-default}')
  t.equal(r.config.spawns?.app.cwd, join(dir, 'valid'), 'spawn cwd defaults to the file\'s directory')
  t.equal(r.config.routes[0].docroot, join(dir, 'valid', 'conf.d', 'www'), 'relative to the including file')
  t.equal(r.config.runDir, join(dir, 'valid', 'run'))
  const app = r.config.spawns?.app
  t.same(app === undefined ? null : toSpawnSpec(app).limits, { memory: 256 * 2 ** 20, data: 2 ** 30, cpu: 2, nofile: 1024, processes: 64 },
    'limits in bytes and whole CPU seconds (1500ms rounds up), data (RLIMIT_DATA) beside memory (RLIMIT_AS)')
  t.equal(r.files.length, 2)
})

for (const f of files('invalid')) {
  t.test(`invalid/${f}`, async (t) => {
    guardLeaks(t)
    const file = join(dir, 'invalid', f)
    const want = expectations(file)
    t.ok(want.length > 0, 'names the errors it must produce')
    const r = await loadConfig(file, { env })
    const got = r.issues.map((i) => ({ path: i.path, line: Number(/:(\d+):\d+$/.exec(i.source ?? '')?.[1] ?? 0), text: issueLine(i) }))
    for (const w of want) {
      const hit = got.find((g) => g.path === w.path && g.line === w.line && g.text.includes(w.text))
      t.ok(hit, `${w.path} @${w.line} ${w.text}`, { got: got.map((g) => `${g.path} @${g.line} ${g.text}`) })
    }
    t.equal(got.length, want.length, 'no other issue', { got: got.map((g) => g.text) })
  })
}
