/**
 * A problem line quotes the value it is about, bounded. `found` was shortened, the message was
 * not: a 100 KB `${BIG}` backend made a 100 KB line (`invalid address "aaaa…"`), and so did a long
 * key, an include path or an unset variable's name. Now a quoted value longer than 80 characters
 * (a bare word longer than 200: a file path) shows its first 80 and `… (N more)`; lines about
 * normal values are unchanged.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { runCli } from '../cli/run.js'
import { issueLine } from '../../src/config/report.js'

const BIG = 'a'.repeat(100_000)

t.test('issueLine bounds quoted values and long words, and leaves normal lines alone', async (t) => {
  t.equal(issueLine({ path: '/routes/0/backends/0', message: 'invalid address "nope"', found: 'nope', expected: 'host:port' }), '/routes/0/backends/0: invalid address "nope" (expected host:port)', 'a normal line is unchanged')
  const long = issueLine({ path: '/routes/0/backends/0', message: `invalid address ${JSON.stringify(BIG)}`, source: 'x.yaml:2:3' })
  t.equal(long, `x.yaml:2:3: /routes/0/backends/0: invalid address "${'a'.repeat(80)}…" (99920 more)`, 'a quoted value: its first 80 characters and how many more')
  const word = issueLine({ path: '/include', message: `included file not found: ${BIG}.yaml` })
  t.equal(word, `/include: included file not found: ${'a'.repeat(80)}… (99925 more)`, 'a bare word')
  const spaced = issueLine({ path: '/routes/0/name', message: `route name ${JSON.stringify(`${'a b '.repeat(30_000)}`)} is used twice` })
  t.ok(spaced.length < 200, `a quoted value with spaces: ${spaced.length} characters`)
  t.match(spaced, /^\/routes\/0\/name: route name "(a b ){20}…" \(119920 more\) is used twice$/)
  const key = issueLine({ path: `/routes/0/${BIG}`, message: `unknown key ${JSON.stringify(BIG)}`, found: BIG, expected: 'one of name, protocol' })
  t.ok(key.length < 400, `a long key in the path and the message: ${key.length} characters`)
  // An unclosed quote (a raw value with `"` and `\`) is read as text, in linear time.
  const odd = issueLine({ path: '/include', message: `included file not found: "${'\\"'.repeat(50_000)}` })
  t.ok(odd.length < 400, `an unclosed quote: ${odd.length} characters`)
  const pair = issueLine({ path: '/x', message: `bad ${JSON.stringify(`x${'\ud83d\ude00'.repeat(100)}`)}` })
  t.notMatch(pair, /[\ud800-\udbff](?![\udc00-\udfff])/, 'never cut inside a surrogate pair')
})

t.test('check: every line about a 100 KB value is short; exit 2, the path and file:line', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit36-bounds-')
  const cases: Array<[string, string, RegExp]> = [
    ['backend.yaml', 'routes:\n  - { protocol: http, backends: ["${BIG}"] }\n', /backend\.yaml:2:\d+: \/routes\/0\/backends\/0: invalid address "a{80}…" \(\d+ more\)/],
    ['include.yaml', 'include: "${BIG}.yaml"\nroutes: []\n', /include\.yaml:1:\d+: \/include: cannot list included path a{80}… \(\d+ more\)/],
    ['unset.yaml', `routes:\n  - { protocol: http, backends: ["\${X${'Y'.repeat(20_000)}}"] }\n`, /unset\.yaml:2:\d+: \/routes\/0\/backends\/0: environment variable XY{79}… \(\d+ more\) is not set/],
  ]
  for (const [name, text, line] of cases) {
    writeFileSync(join(dir, name), text)
    const r = await runCli(['check', join(dir, name)], { BIG })
    t.equal(r.code, 2, `${name}: exit 2`)
    t.match(r.stderr, line, `${name}: the line`)
    const longest = Math.max(...r.stderr.split('\n').map((l) => l.length))
    t.ok(longest < 600, `${name}: longest line ${longest} characters`)
    t.notMatch(r.stderr, /\n\s+at |TypeError|RangeError/, `${name}: no stack trace`)
  }
})
