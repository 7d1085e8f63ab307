/**
 * A NUL byte in a config value (`"\0"` in YAML, `"\u0000"` in JSON): no path, socket, program or
 * directory can hold one. Unchecked, `check` said ok and `serve` crashed with a stack trace (a
 * `runDir` or a unix `listen` path: TypeError ERR_INVALID_ARG_VALUE, exit 1) or restarted a spawn
 * until it failed (`binPath`, `cwd`). Now each is a config issue at its file:line, exit 2; a value
 * a specific rule already refuses (a `params` value) keeps that rule's wording.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { runCli } from '../cli/run.js'
import { loadConfig } from '../../src/config/load.js'
import '../../src/index.js'

const noStack = /\n\s+at |TypeError|RangeError/
const SPAWN = 'spawns:\n  s:\n    binPath: /bin/sleep 100\n    socketName: 127.0.0.1:0\n'

t.test('a NUL in a path, program or name is an issue at its line', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit35h-nul-')
  const cases: Array<[string, string, string, number]> = [
    ['run-dir.yaml', `listen: 127.0.0.1:0\nrunDir: "/tmp/r\\0b"\n${SPAWN}routes:\n  - { protocol: http, spawn: s }\n`, '/runDir', 2],
    ['listen.yaml', 'listen: "unix:/tmp/x\\0y.sock"\nroutes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n', '/listen', 1],
    ['bin.yaml', 'spawns:\n  s:\n    binPath: "/bin/sl\\0eep 100"\n    socketName: 127.0.0.1:0\nroutes:\n  - { protocol: http, spawn: s }\n', '/spawns/s/binPath', 3],
    ['cwd.yaml', `${SPAWN}    cwd: "/tmp\\0x"\nroutes:\n  - { protocol: http, spawn: s }\n`, '/spawns/s/cwd', 5],
    ['docroot.json', '{"routes": [{"protocol": "static",\n "docroot": "/srv\\u0000x"}]}', '/routes/0/docroot', 2],
  ]
  for (const [name, text, path, line] of cases) {
    writeFileSync(join(dir, name), text)
    const r = await loadConfig(join(dir, name), { env: {} })
    t.same(r.issues.map((i) => i.path), [path], `${name}: one issue, at ${path}`)
    t.match(r.issues[0]?.message, /NUL byte/, `${name}: says NUL`)
    t.match(r.issues[0]?.source, new RegExp(`${name.replace('.', '\\.')}:${line}:\\d+$`), `${name}: at its line`)
  }
  writeFileSync(join(dir, 'included.yaml'), 'routes:\n  - protocol: static\n    docroot: "/srv\\0x"\n')
  writeFileSync(join(dir, 'main.yaml'), 'include: included.yaml\nroutes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n')
  const inc = await loadConfig(join(dir, 'main.yaml'), { env: {} })
  t.same(inc.issues.map((i) => [i.path, /included\.yaml:3:\d+$/.test(i.source ?? '')]), [['/routes/0/docroot', true]], 'in an included file, at its own line')
  writeFileSync(join(dir, 'params.yaml'), 'routes:\n  - { protocol: scgi, backends: ["127.0.0.1:9"], scriptFilename: /app, params: { X: "a\\0b" } }\n')
  const params = await loadConfig(join(dir, 'params.yaml'), { env: {} })
  t.same(params.issues.map((i) => [i.path, i.message]), [['/routes/0/params/X', 'a variable value may not contain a NUL byte']], 'a specific rule keeps its wording, once')
})

t.test('check exits 2 and serve refuses to start, with one line and no stack trace', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit35h-nul-cli-')
  const file = join(dir, 'run-dir.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0\nrunDir: "${dir}/r\\0b"\n${SPAWN}routes:\n  - { protocol: http, spawn: s }\n`)
  const check = await runCli(['check', file])
  t.equal(check.code, 2, 'check: exit 2')
  t.match(check.stderr, /run-dir\.yaml:2:\d+: \/runDir: .*NUL byte/)
  t.notMatch(check.stderr, noStack)
  const serve = await runCli(['serve', file])
  t.equal(serve.code, 2, 'serve: exit 2, nothing started')
  t.match(serve.stderr, /\/runDir: .*NUL byte/)
  t.notMatch(serve.stderr, noStack)
})
