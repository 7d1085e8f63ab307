/**
 * `proxycore check`'s two checks of what serve would refuse at start (a pipe spawn's program, the
 * access log's path) run in the same pass as every other problem, wherever the part they read is
 * valid, and their lines have `file:line:col` like the others: a file with a bad `balance`, a
 * missing interpreter and a log directory that does not exist shows all three in one run. A part
 * with a problem of its own is not checked further (and a broken one never crashes check); serve's
 * access log refusal is placed in the file too.
 */
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { runCli } from './run.js'

/** Line numbers are asserted below: keep the layout. */
const fixture = (dir: string, balance = 'sideways'): string => `listen: 127.0.0.1:0
accessLog:
  path: no-such-dir/access.log
spawns:
  perl:
    socketType: pipe
    binPath: ${join(dir, 'no-such-perl')}
routes:
  - name: app
    protocol: http
    backends: ['127.0.0.1:9']
    balance: ${balance}
  - name: cgi
    match: { prefix: /cgi/ }
    protocol: cgi
    spawn: perl
    docroot: ${dir}
`

t.test('one run shows a bad balance, a missing pipe program and a missing log directory, each with file:line:col', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-check-late-')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, fixture(dir))
  for (const args of [['check', file], ['check', file, '--explain']]) {
    const r = await runCli(args)
    const lines = r.stderr.split('\n').filter((l) => l.startsWith(file))
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.equal(r.stdout, '', 'no "ok" line')
    const want = [
      `${file}:12:14: /routes/0/balance: invalid value`,
      `${file}:7:14: /spawns/perl/binPath: ERR_SPAWN_EXEC ${join(dir, 'no-such-perl')}: not found (ENOENT)`,
      `${file}:3:9: /accessLog/path: ERR_ACCESS_LOG: cannot open the access log ${join(dir, 'no-such-dir', 'access.log')}: its directory ${join(dir, 'no-such-dir')} does not exist`,
      `${file}: 3 problem(s)`,
    ]
    t.equal(lines.length, want.length, `${args.join(' ')}: three problems and the count (${r.stderr})`)
    want.forEach((w, i) => t.ok(lines[i]?.startsWith(w), `${args.join(' ')}: ${w}`))
  }
  // Fixed one by one, the others stay where they were.
  writeFileSync(file, fixture(dir, 'round-robin'))
  const r = await runCli(['check', file])
  t.equal(r.code, 2)
  t.match(r.stderr, `${file}:7:14: /spawns/perl/binPath: ERR_SPAWN_EXEC`)
  t.match(r.stderr, `${file}:3:9: /accessLog/path: ERR_ACCESS_LOG`)
  t.match(r.stderr, `${file}: 2 problem(s)`)
})

t.test('a pipe spawn of an included file is placed in that file', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-check-late-')
  mkdirSync(join(dir, 'conf.d'))
  writeFileSync(join(dir, 'conf.d', 'perl.yaml'), `# the CGI interpreter
spawns:
  perl:
    socketType: pipe
    binPath: [${join(dir, 'no-such-perl')}, -w]
`)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, 'listen: 127.0.0.1:0\ninclude: conf.d/*.yaml\nroutes:\n  - { protocol: http, backends: ["127.0.0.1:9"], balance: 7 }\n')
  const r = await runCli(['check', file])
  t.equal(r.code, 2)
  t.match(r.stderr, `${file}:4:`, 'the route\'s problem is in the main file')
  t.match(r.stderr, `${join(dir, 'conf.d', 'perl.yaml')}:5:14: /spawns/perl/binPath: ERR_SPAWN_EXEC`, 'the program\'s, in the included file')
  t.match(r.stderr, ': 2 problem(s)')
})

t.test('a spawn or access log with a problem of its own is not checked further; a broken one never crashes check', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-check-late-')
  const file = join(dir, 'proxycore.yaml')
  const missing = join(dir, 'no-such-perl')
  const cases: Array<[string, string, string[]]> = [
    ['spawns a list, accessLog a string', `spawns: [${missing}]\naccessLog: nope\nroutes: []\n`, ['/spawns:', '/accessLog:']],
    ['a spawn a string, a numeric log path', `spawns: { perl: ${missing} }\naccessLog: { path: 5 }\nroutes: []\n`, ['/spawns/perl:', '/accessLog/path:']],
    ['a bad field beside the missing program, an unknown key beside the missing directory',
      `spawns: { perl: { socketType: pipe, binPath: ${missing}, minProcs: -1 } }\naccessLog: { path: ${join(dir, 'nope', 'a.log')}, extra: 1 }\nroutes: []\n`,
      ['/spawns/perl/minProcs:', '/accessLog/extra:']],
    ['an unknown tenant, an empty log path', `spawns: { perl: { socketType: pipe, binPath: ${missing}, tenant: ghost } }\naccessLog: { path: "" }\nroutes: 3\n`,
      ['/spawns/perl/tenant:', '/accessLog/path:', '/routes:']],
    ['the root a list', '- 1\n- 2\n', ['/: the config must be a mapping']],
  ]
  for (const [what, yaml, expected] of cases) {
    writeFileSync(file, yaml)
    const r = await runCli(['check', file])
    t.equal(r.code, 2, `${what}: exit 2 (${r.stderr})`)
    t.notMatch(r.stderr, /ERR_SPAWN_EXEC|ERR_ACCESS_LOG|\n\s+at /, `${what}: no late check, no stack`)
    for (const e of expected) t.match(r.stderr, e, `${what}: ${e}`)
    t.match(r.stderr, `${file}: ${expected.length} problem(s)`, `${what}: only its own problems`)
  }
})

t.test('serve\'s refusal of the access log names its file:line:col', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tempDir(t, 'pc-check-late-')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, fixture(dir, 'round-robin').replace(`binPath: ${join(dir, 'no-such-perl')}`, 'binPath: /bin/sh'))
  const r = await runCli(['serve', file], { PROXYCORE_LOG_FORMAT: 'json' })
  t.equal(r.code, 2, `exit 2 (${r.stderr})`)
  const line = r.stderr.split('\n').filter((l) => l.includes('ERR_ACCESS_LOG')).map((l) => JSON.parse(l) as { source?: string, msg?: string })[0]
  t.equal(line?.source, `${file}:3:9`, 'the source field')
  t.match(line?.msg, `${file}:3:9: /accessLog/path: ERR_ACCESS_LOG: cannot open the access log`, 'and the line')
})
