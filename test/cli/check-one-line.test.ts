/**
 * `proxycore check` prints one line per problem (report.ts issueLine). Messages quote values from
 * the file: a regex's source (the engine's own wording), an include pattern. A line break in such a
 * value forged a problem line of its own (`other.yaml:1:1: /x: ...`), and ESC/BEL reached the
 * operator's terminal raw (`\e]0;...\a` retitles it, `\e[2J` clears it). Every control character
 * of a problem line is shown escaped, as the path's already were.
 */
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { runCli } from './run.js'

// Control characters but the line feed that ends each line (tab is harmless, and not used here).
const CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/

t.test('check: a value with a line break or terminal escapes stays inside its one problem line', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-one-line-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, [
    'include: "conf\\e]0;PWNED\\a\\e[2J.yaml"',
    'routes:',
    '  - protocol: http',
    '    backends: [127.0.0.1:1]',
    '    match: { regex: "(\\nforged.yaml:1:1: /x: forged\\rz" }',
    '',
  ].join('\n'))
  const r = await runCli(['check', file])
  t.equal(r.code, 2)
  const lines = r.stderr.split('\n').filter((l) => l !== '')
  t.equal(lines.length, 3, `two problems and the count, one line each:\n${r.stderr}`)
  t.match(lines.at(-1), /proxycore\.yaml: 2 problem\(s\)$/)
  t.notOk(lines.some((l) => /^forged/.test(l)), 'no forged line')
  t.notOk(CONTROL.test(r.stderr), 'no control character but the line ends')
  t.match(lines.find((l) => l.includes('/include')), /included file not found: conf\\u001b\]0;PWNED\\u0007\\u001b\[2J\.yaml/)
  t.match(lines.find((l) => l.includes('/match/regex')), /Invalid regular expression: \/\(\\nforged\.yaml:1:1: \/x: forged\\rz\/: Unterminated group/)
})

t.test('check --explain: a refused docroot whose name holds a line break and ESC stays on its line', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-one-line-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // A real directory (a missing docroot is no identity refusal), outside allowedRoots.
  const www = join(dir, 'www\x1b[2J\nforged')
  mkdirSync(www)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `identity: { allowedRoots: [/nonexistent-root] }
spawns:
  cgi: { socketType: pipe, user: nobody, group: nogroup }
routes:
  - { protocol: cgi, spawn: cgi, docroot: ${JSON.stringify(www)} }
`)
  const r = await runCli(['check', file, '--explain'])
  t.equal(r.code, 2)
  t.notOk(CONTROL.test(r.stderr), `no control character but the line ends:\n${r.stderr}`)
  t.notOk(r.stderr.split('\n').some((l) => /^forged/.test(l)), 'no forged line')
  t.match(r.stderr, /\/routes\/0\/docroot: ERR_SUEXEC_NOT_IN_ROOT .*www\\u001b\[2J\\nforged: not inside/)
})
