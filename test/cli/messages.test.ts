/**
 * The CLI's messages for operator mistakes: one clear line and exit 2 for a bad log level or a
 * stray argument (never a stack trace, never silently ignored), and `proxycore status` naming the
 * URL and the cause when nothing answers, with `host:port` accepted as the documented short form.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { defaultLogger } from '../../src/logger.js'
import { guardLeaks } from '../helpers/leaks.js'
import { runCli, serve } from './run.js'
import { deadPort as closedPort } from '../helpers/ports.js'

const LEVELS = 'fatal | error | warn | info | debug | trace | silent'

function tmp (t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pc-msg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function config (dir: string, body: string): string {
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, body)
  return file
}

const noStack = /\n\s+at |Error: /

t.test('PROXYCORE_LOG_LEVEL not a level: one line listing the levels, exit 2', async (t) => {
  guardLeaks(t)
  const file = config(tmp(t), 'listen: 127.0.0.1:0\nroutes: []\n')
  const r = await runCli(['serve', file], { PROXYCORE_LOG_LEVEL: 'loud', PROXYCORE_LOG_FORMAT: 'json' })
  t.equal(r.code, 2)
  t.equal(r.stderr, `proxycore: PROXYCORE_LOG_LEVEL="loud" is not a log level (expected ${LEVELS})\n`)
  t.notMatch(r.stderr, noStack)
})

t.test('logLevel not a level in the file: reported as a config problem, exit 2', async (t) => {
  guardLeaks(t)
  const file = config(tmp(t), 'listen: 127.0.0.1:0\nlogLevel: loud\nroutes: []\n')
  const r = await runCli(['serve', file], { PROXYCORE_LOG_FORMAT: 'json' })
  t.equal(r.code, 2)
  t.match(r.stderr, /proxycore\.yaml:2:11: \/logLevel: invalid value \(found \\"loud\\"/)
  t.notMatch(r.stderr, /custom levels|\n\s+at /)
})

t.test('embedders: defaultLogger names the variable and the levels', async (t) => {
  const saved = process.env.PROXYCORE_LOG_LEVEL
  t.teardown(() => { if (saved === undefined) delete process.env.PROXYCORE_LOG_LEVEL; else process.env.PROXYCORE_LOG_LEVEL = saved })
  process.env.PROXYCORE_LOG_LEVEL = 'loud'
  await t.rejects(defaultLogger(), { message: `PROXYCORE_LOG_LEVEL="loud" is not a log level (expected ${LEVELS})` })
  await t.rejects(defaultLogger('verbose'), { message: `log level "verbose" is not a log level (expected ${LEVELS})` })
})

t.test('stray arguments: usage error, exit 2', async (t) => {
  guardLeaks(t)
  const file = config(tmp(t), 'listen: 127.0.0.1:0\nroutes: []\n')
  const cases: Array<[string[], RegExp]> = [
    [['check', file, '--bogus'], /^proxycore: check: unknown option "--bogus" \(known: --explain\)\n\nproxycore \S+ — /],
    [['check', file, file], /^proxycore: check: unexpected extra argument ".*proxycore\.yaml" \(check takes one config file\)\n/],
    [['serve', file, file], /^proxycore: serve: unexpected extra argument ".*proxycore\.yaml" \(serve takes one config file\)\n/],
    [['serve', file, '--bogus'], /^proxycore: serve: unknown option "--bogus"\n/],
    [['status', '127.0.0.1:9', 'x'], /^proxycore: status: unexpected extra argument "x" \(status takes one URL\)\n/],
    [['status', 'http://[::1'], /^proxycore: status: not a URL or host:port: "http:\/\/\[::1"/],
  ]
  for (const [args, re] of cases) {
    const r = await runCli(args, { PROXYCORE_LOG_FORMAT: 'json' })
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, re, args.join(' '))
    t.match(r.stderr, /Usage:/, `${args.join(' ')}: usage shown`)
  }
  const ok = await runCli(['check', file, '--explain'])
  t.equal(ok.code, 0, 'the known flag still works')
})

t.test('status: nothing listening names the URL and ECONNREFUSED; host:port works', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const port = await closedPort()
  const full = await runCli(['status', `http://127.0.0.1:${port}/server-status`])
  t.equal(full.code, 1)
  t.match(full.stderr, new RegExp(`^proxycore status: cannot reach http://127\\.0\\.0\\.1:${port}/server-status: ECONNREFUSED`))
  t.notMatch(full.stderr, /fetch failed/)
  const bare = await runCli(['status', `127.0.0.1:${port}`])
  t.equal(bare.code, 1)
  t.match(bare.stderr, new RegExp(`cannot reach http://127\\.0\\.0\\.1:${port}/server-status: ECONNREFUSED`), 'host:port means http://host:port/server-status')

  const file = config(tmp(t), 'listen: 127.0.0.1:0\nstatus: { path: /server-status }\nroutes: []\n')
  const s = await serve(file)
  t.teardown(() => { try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {} })
  const hostPort = new URL(s.url).host
  const table = await runCli(['status', hostPort])
  t.equal(table.code, 0, table.stderr)
  t.match(table.stdout, /^proxycore\S* +up [\d.]+s/)
  t.match(table.stdout, /ROUTE\s+PROTOCOL/)
  process.kill(-(s.child.pid as number), 'SIGTERM')
  t.equal(await s.exited, 0)
})
