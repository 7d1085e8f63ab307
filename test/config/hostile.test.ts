/**
 * Hostile config files: what a file can do to the loader beyond being wrong. `__proto__` keys, a
 * YAML alias bomb, include entries that are not paths, a status.allow `serve` would throw on. Each is
 * an ordinary config issue at its path (the corpus files under fixtures/invalid pin path and line);
 * here: the loaded value is not polluted, embedders get the same issue, and `proxycore check`
 * exits 2 with file:line and no stack trace.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { guardLeaks } from '../helpers/leaks.js'
import { runCli } from '../cli/run.js'
import { checkConfig } from '../../src/config/check.js'
import { loadConfig } from '../../src/config/load.js'
import '../../src/index.js'

const invalid = fileURLToPath(new URL('./fixtures/invalid/', import.meta.url))

t.test('__proto__ keys stay own keys: nothing is inherited, no spawn vanishes', async (t) => {
  guardLeaks(t)
  const r = await loadConfig(join(invalid, 'proto.yaml'), { env: {} })
  const spawns = r.config.spawns ?? {}
  t.same(Object.keys(spawns), ['__proto__', 'app'], 'the spawn named __proto__ is kept, so it is reported')
  t.equal(Object.getPrototypeOf(spawns), Object.prototype)
  const env = spawns.app.environment ?? {}
  t.equal(Object.getPrototypeOf(env), Object.prototype, 'environment did not become a prototype')
  t.equal((env as Record<string, unknown>).EVIL, undefined, 'nothing inherited from the __proto__ block')
  t.ok(Object.hasOwn(env, '__proto__'))
  t.equal(Object.getPrototypeOf(r.config.routes[0]), Object.prototype)
  t.equal(r.config.routes[0].spawn, '__proto__')
  t.equal(({} as Record<string, unknown>).EVIL, undefined, 'Object.prototype untouched')
  t.ok(r.issues.length > 0)
  t.ok(r.issues.every((i) => /^bad key name "__proto__"/.test(i.message) && /proto\.yaml:\d+:\d+$/.test(i.source ?? '')), 'each at its key')
})

t.test('status.allow: an entry createStatus cannot parse is an issue for embedders too', async (t) => {
  guardLeaks(t)
  const config = { routes: [{ protocol: 'http', backends: ['127.0.0.1:9'] }], status: { allow: ['::1', 'localhost'] } }
  const issues = await checkConfig(config, { shape: 'embed' })
  t.same(issues.map((i) => [i.path, i.found, i.expected]), [['/status/allow/1', 'localhost', 'IP addresses or CIDRs, or unix:']])
  t.same(await checkConfig({ ...config, status: { allow: ['127.0.0.1', '10.0.0.0/8', '::1'] } }), [], 'addresses and CIDRs pass')
})

t.test('proxycore check: exit 2 with file:line for each, no stack trace', async (t) => {
  guardLeaks(t)
  const cases: Array<[string, RegExp]> = [
    ['proto.yaml', /proto\.yaml:10:3: \/spawns\/__proto__: bad key name "__proto__"/],
    ['alias-bomb.yaml', /alias-bomb\.yaml:4:\d+: \/: syntax: YAML aliases expand too far/],
    ['include-entries.yaml', /include-entries\.yaml:5:\d+: \/include\/1: an include entry must be a string/],
    ['status-allow.yaml', /status-allow\.yaml:5:\d+: \/status\/allow\/1: .*found "localhost"/],
  ]
  for (const [file, want] of cases) {
    const r = await runCli(['check', join(invalid, file)])
    t.equal(r.code, 2, `${file}: exit 2`)
    t.match(r.stderr, want, file)
    t.notMatch(r.stderr, /Error:|\n\s+at /, `${file}: no stack trace`)
  }
})

t.test('a NUL in a params or environment variable, or "=" in its name: a config issue at its path, not a failure per request or start', async (t) => {
  guardLeaks(t)
  const config = {
    routes: [{ protocol: 'fastcgi', backends: ['127.0.0.1:9'], scriptFilename: '/x.php', params: { 'A\u0000B': 'x', 'C=D': 'y', OK: 'v\u0000w', FINE: 'ok' } }],
    spawns: { s: { binPath: '/bin/true', socketName: '127.0.0.1:0', environment: { 'E\u0000': 'a', GOOD: 'b', BAD: 'c\u0000' } } },
  }
  const issues = await checkConfig(config, { shape: 'operator' })
  t.same(issues.map((i) => i.path).sort(), [
    '/routes/0/params/A\u0000B', '/routes/0/params/C=D', '/routes/0/params/OK',
    '/spawns/s/environment/BAD', '/spawns/s/environment/E\u0000',
  ], 'each bad name or value, and nothing else')
  t.ok(issues.some((i) => /bad CGI variable name "C=D": a CGI variable name must be a single line without "=" or a NUL byte/.test(i.message)), 'a bad name says why')
  t.match(issues.find((i) => i.path === '/routes/0/params/OK'), { message: 'a variable value may not contain a NUL byte', found: 'v\u0000w', expected: 'a string without a NUL byte' }, 'so does a bad value')
})

t.test('an include cycle is one issue that names the whole chain, and the load ends', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-include-cycle-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = (name: string): string => join(dir, name)
  writeFileSync(file('main.yaml'), 'include: a.yaml\nroutes:\n  - protocol: http\n    backends: ["127.0.0.1:9"]\n')
  writeFileSync(file('a.yaml'), 'include: b.yaml\n')
  writeFileSync(file('b.yaml'), 'include: a.yaml\n')
  const r = await loadConfig(file('main.yaml'), { env: {} })
  t.same(r.issues.map((i) => [i.path, i.message]), [['/include', `include cycle: ${file('a.yaml')} → ${file('b.yaml')} → ${file('a.yaml')}`]])
  writeFileSync(file('self.yaml'), 'include: self.yaml\nroutes:\n  - protocol: http\n    backends: ["127.0.0.1:9"]\n')
  const self = await loadConfig(file('self.yaml'), { env: {} })
  t.same(self.issues.map((i) => i.message), [`include cycle: ${file('self.yaml')} → ${file('self.yaml')}`], 'a file that includes itself')
})
