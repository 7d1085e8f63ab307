/**
 * `ConfigError.message` (formatIssue) bounds the values it quotes as the CLI's problem lines do
 * (src/config/report.ts issueLine, one mechanism: boundValues): createProxy with a 100 KB bad value
 * threw an error whose message was 100 KB.
 */
import t from 'tap'
import '../../src/index.js'
import { createProxy } from '../../src/proxy.js'
import { ConfigError, formatIssue } from '../../src/core/errors.js'
import { issueLine } from '../../src/config/report.js'
import { guardLeaks } from '../helpers/leaks.js'

const BIG = 'a'.repeat(100_000)

t.test('createProxy with a 100 KB bad value: a short message that still names it', async (t) => {
  guardLeaks(t)
  const err = await createProxy({ routes: [{ protocol: 'http', backends: [BIG] }] } as never).then(
    async (p) => { await p.close(); return null },
    (e: unknown) => e)
  t.ok(err instanceof ConfigError, `a ConfigError (${String(err).slice(0, 200)})`)
  const e = err as ConfigError
  t.ok(e.message.length < 400, `the message is ${e.message.length} characters`)
  t.match(e.message, /\/routes\/0\/backends\/0: .*"a{80}…" \(99920 more\)/, 'the path, the value\'s first 80 characters and how many more')
  t.equal(e.issues[0]?.found, BIG, 'the issue keeps the whole value for a program')
})

t.test('formatIssue: normal lines unchanged; the same bound as issueLine', async (t) => {
  t.equal(formatIssue({ path: '/routes/0/backends/0', message: 'invalid address "nope"' }), '/routes/0/backends/0: invalid address "nope"')
  t.equal(formatIssue({ path: '', message: 'x', source: 'a.yaml:1:2' }), 'a.yaml:1:2 /: x')
  const issue = { path: '/include', message: `included file not found: ${BIG}.yaml` }
  t.equal(formatIssue(issue), `/include: included file not found: ${'a'.repeat(80)}… (99925 more)`, 'a long bare word')
  t.equal(formatIssue(issue), issueLine(issue), 'as the CLI shows it')
})
