/**
 * Config files that are not config files, or that no stack can hold: a FIFO (reading one waited for
 * a writer forever), /dev/zero (read until V8 gave up: ~600 MiB and "Invalid string length"), a
 * directory or device as an include (reported as "not found"), YAML nested a few thousand levels
 * (the parser's RangeError crashed `proxycore check` with a stack trace, exit 1) and an alias inside
 * its own node (`x: &a [*a]`: a cyclic value that overflowed the stack further on, also a crash).
 * Each is an ordinary config issue now: `cannot read`, `not a regular file`, `nests too deeply`.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { closeSync, constants, mkdirSync, openSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { runCli } from '../cli/run.js'
import { loadConfig } from '../../src/config/load.js'
import '../../src/index.js'

/** src/config/locate.ts MAX_CONFIG_BYTES. */
const MAX_CONFIG_BYTES = 16 * 1024 * 1024
const ROUTE = 'routes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n'
const noStack = /\n\s+at |RangeError|TypeError/

const tmp = (t: { teardown: (fn: () => void) => void }): string => tempDir(t, 'pc-special-files-')

function fifo (dir: string, name: string): string {
  const p = join(dir, name)
  execFileSync('mkfifo', [p])
  return p
}

/** A reader stuck opening a FIFO gets EOF once a writer opens and closes it. */
function unblock (path: string): void {
  try { closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK)) } catch {}
}

async function withDeadline<T> (p: Promise<T>, ms: number): Promise<T | 'timed out'> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<'timed out'>((resolve) => { timer = setTimeout(() => resolve('timed out'), ms) })
  try { return await Promise.race([p, late]) } finally { clearTimeout(timer) }
}

t.test('a FIFO as the config: refused at once, not read forever', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  const f = fifo(dir, 'proxycore.yaml')
  t.teardown(() => unblock(f))
  const r = await withDeadline(loadConfig(f, { env: {} }), 5000)
  unblock(f)
  if (r === 'timed out') { t.fail('loadConfig of a FIFO did not return within 5 s'); return }
  t.equal(r.issues.length, 1)
  t.match(r.issues[0]?.message, /^cannot read \S*proxycore\.yaml: not a regular file \(a FIFO\)$/)
})

t.test('/dev/zero and an oversized file: refused before they are read', async (t) => {
  guardLeaks(t)
  const zero = await loadConfig('/dev/zero', { env: {} })
  t.same(zero.issues.map((i) => i.message), ['cannot read /dev/zero: not a regular file (a character device)'])
  const dir = tmp(t)
  const big = join(dir, 'big.yaml')
  writeFileSync(big, '')
  truncateSync(big, MAX_CONFIG_BYTES + 1)
  const r = await loadConfig(big, { env: {} })
  t.equal(r.issues.length, 1)
  t.match(r.issues[0].message, /^cannot read .*big\.yaml: larger than 16 MiB \(not a config file\?\)$/)
  const cli = await runCli(['check', '/dev/zero'])
  t.equal(cli.code, 2)
  t.equal(cli.stderr, '/dev/zero: /: cannot read /dev/zero: not a regular file (a character device)\n/dev/zero: 1 problem(s)\n')
})

t.test('include of a directory, a FIFO or a device: "not a regular file" at the include entry', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  mkdirSync(join(dir, 'conf.d'))
  const f = fifo(dir, 'pipe.yaml')
  t.teardown(() => unblock(f))
  const main = join(dir, 'proxycore.yaml')
  writeFileSync(main, `include:\n  - conf.d\n  - pipe.yaml\n  - /dev/zero\n  - missing.yaml\n${ROUTE}`)
  const r = await withDeadline(loadConfig(main, { env: {} }), 5000)
  if (r === 'timed out') { t.fail('timed out'); return }
  t.same(r.issues.map((i) => [i.path, i.message, i.source?.replace(/^.*\//, '')]), [
    ['/include/0', 'included path is not a regular file: conf.d (a directory)', 'proxycore.yaml:2:5'],
    ['/include/1', 'included path is not a regular file: pipe.yaml (a FIFO)', 'proxycore.yaml:3:5'],
    ['/include/2', 'included path is not a regular file: /dev/zero (a character device)', 'proxycore.yaml:4:5'],
    ['/include/3', 'included file not found: missing.yaml', 'proxycore.yaml:5:5'],
  ])
})

t.test('deep nesting and self-containing aliases: exit 2 with a syntax issue, never a crash', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  const write = (name: string, body: string): string => { const p = join(dir, name); writeFileSync(p, body); return p }
  let block = `${ROUTE}x:\n`
  for (let i = 1; i <= 3000; i++) block += `${' '.repeat(i)}b:\n`
  block += `${' '.repeat(3001)}c\n`
  const cases: Array<[string, RegExp]> = [
    [write('block.yaml', block), /^block\.yaml:\d+:\d+: \/: syntax: the file nests too deeply to parse \(more than 256 levels\)$/m],
    [write('flow.json', `{"routes": [], "x": ${'['.repeat(20000)}${']'.repeat(20000)}}`), /^flow\.json:1:\d+: \/: syntax: the file nests too deeply to parse/m],
    [write('cycle.yaml', `${ROUTE}x: &a [ *a ]\n`), /^cycle\.yaml:3:\d+: \/x\/0: syntax: a YAML alias refers to a node that contains it/m],
    [write('cycle-map.yaml', `${ROUTE}x: &a { y: *a }\n`), /^cycle-map\.yaml:3:\d+: \/x\/y: syntax: a YAML alias refers to a node that contains it/m],
    [write('deep.yaml', `${ROUTE}x: ${'['.repeat(100)}${']'.repeat(100)}\n`), /^deep\.yaml:3:\d+: \/x(\/0){63}: syntax: nested deeper than 64 levels$/m],
  ]
  for (const [file, want] of cases) {
    const r = await runCli(['check', file], { PROXYCORE_LOG_FORMAT: 'json' })
    const name = file.replace(/^.*\//, '')
    t.equal(r.code, 2, `${name}: exit 2`)
    t.match(r.stderr.replaceAll(`${dir}/`, ''), want, name)
    t.notMatch(r.stderr, noStack, `${name}: no stack trace`)
  }
  // serve reads the file the same way: a config problem (exit 2), not "start failed".
  const s = await runCli(['serve', join(dir, 'cycle.yaml')], { PROXYCORE_LOG_FORMAT: 'json' })
  t.equal(s.code, 2)
  t.match(s.stderr, /a YAML alias refers to a node that contains it/)
  t.notMatch(s.stderr, noStack)
})

t.test('ordinary files still load: nesting a real config uses, BOM and CRLF', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  const p = join(dir, 'proxycore.yaml')
  writeFileSync(p, `\ufeff${ROUTE.replace(/\n/g, '\r\n')}`)
  const r = await loadConfig(p, { env: {} })
  t.same(r.issues, [])
  t.equal(r.config.routes.length, 1)
})
