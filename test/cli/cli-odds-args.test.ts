/**
 * Extra arguments after a command that takes none are a usage error (exit 2, the argument named,
 * the usage shown), as they are for serve, check and status: `proxycore --version extra` printed
 * the version and exited 0, so a typo or a wrong script line went unnoticed.
 */
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { runCli } from './run.js'

t.test('--version / -v with anything after them: usage error naming the argument, exit 2', async (t) => {
  guardLeaks(t)
  const cases: Array<[string[], string]> = [
    [['--version', 'extra'], '--version: unexpected extra argument "extra" (--version takes none)'],
    [['-v', 'serve'], '-v: unexpected extra argument "serve" (-v takes none)'],
    [['--version', '--bogus'], '--version: unexpected extra argument "--bogus" (--version takes none)'],
  ]
  for (const [args, msg] of cases) {
    const r = await runCli(args)
    t.equal(r.code, 2, args.join(' '))
    t.equal(r.stdout, '', `${args.join(' ')}: no version printed`)
    t.equal(r.stderr.split('\n')[0], `proxycore: ${msg}`, args.join(' '))
    t.match(r.stderr, /\n\nproxycore \S+ — [^]*Usage:/, `${args.join(' ')}: usage shown`)
  }
})

t.test('--version alone still prints the version; --help anywhere still prints the usage', async (t) => {
  guardLeaks(t)
  const v = await runCli(['--version'])
  t.equal(v.code, 0)
  t.match(v.stdout, /^\d+\.\d+\.\d+\S*\n$/)
  t.equal(v.stderr, '')
  for (const args of [['--version', '--help'], ['--help', 'serve'], ['help', 'check']]) {
    const r = await runCli(args)
    t.equal(r.code, 0, args.join(' '))
    t.match(r.stdout, /Usage:/, args.join(' '))
  }
})
