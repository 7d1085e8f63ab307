/**
 * docs/reference/cli.md "check": a config path that is no readable regular file is one problem line
 * and exit 2, for `check` and `serve` alike: a directory, `-` (no stdin form), a file the user
 * cannot read (as a test user: CI runs as root, who reads anything); and a SIGHUP after the file
 * became a FIFO is rejected while the old config keeps serving. (FIFO, /dev/zero and oversized
 * files at start: test/config/special-files.test.ts.)
 */
import t from 'tap'
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { execFileSync, spawn } from 'node:child_process'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { withTestUsers } from '../helpers/users.js'
import { cli, ensureBuilt, root, runCli, serveKilled } from './run.js'

const ROUTE = 'listen: 127.0.0.1:0\nstatus: {}\nroutes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n'
const noStack = /\n\s+at |TypeError|RangeError/

const tmp = (t: { teardown: (fn: () => void) => void }): string => tempDir(t, 'pc-config-kinds-')

t.test('a directory or "-" as the config: one problem line, exit 2, for check and serve', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tmp(t)
  const sub = join(dir, 'conf.d')
  mkdirSync(sub)
  const c = await runCli(['check', sub])
  t.same([c.code, c.stdout, c.stderr], [2, '', `${sub}: /: cannot read ${sub}: EISDIR\n${sub}: 1 problem(s)\n`])
  const s = await runCli(['serve', sub], { PROXYCORE_LOG_FORMAT: 'json' })
  t.equal(s.code, 2)
  t.equal(JSON.parse(s.stderr.trim()).msg, `${sub}: /: cannot read ${sub}: EISDIR`, 'one log line')
  t.notMatch(c.stderr + s.stderr, noStack)
  const dash = await runCli(['check', '-'])
  t.same([dash.code, dash.stderr], [2, '-: /: cannot read -: ENOENT\n-: 1 problem(s)\n'], '"-" is a file name, stdin is not read')
})

t.test('a config the user cannot read: EACCES, exit 2, for check and serve', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const user = { name: 'pc-cliread', id: 2197 }
  if (!withTestUsers(t, 'an unreadable config', [user])) return
  await ensureBuilt()
  const dir = tmp(t)
  chmodSync(dir, 0o755)
  const file = join(dir, 'secret.yaml')
  writeFileSync(file, ROUTE)
  chmodSync(file, 0o600)
  // Through env(1), without NODE_OPTIONS: tap's processinfo wraps spawn() and puts its loader there,
  // which writes under the checkout, where the test user cannot.
  const asUser = async (args: string[]): Promise<{ code: number | null, out: string }> => {
    const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, cli, ...args], { cwd: root, uid: user.id, gid: user.id, stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH, PROXYCORE_LOG_FORMAT: 'json' } })
    let out = ''
    child.stdout.on('data', (b: Buffer) => { out += b.toString() })
    child.stderr.on('data', (b: Buffer) => { out += b.toString() })
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
    return { code, out }
  }
  const c = await asUser(['check', file])
  t.same(c, { code: 2, out: `${file}: /: cannot read ${file}: EACCES\n${file}: 1 problem(s)\n` })
  const s = await asUser(['serve', file])
  t.equal(s.code, 2)
  t.equal(JSON.parse(s.out.trim()).msg, `${file}: /: cannot read ${file}: EACCES`, 'one log line')
  t.notMatch(s.out, noStack)
})

t.test('SIGHUP after the config became a FIFO: rejected at once, the old config keeps serving', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tmp(t)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, ROUTE)
  const { s } = await serveKilled(t, file)
  rmSync(file)
  execFileSync('mkfifo', [file])
  const before = s.logs().length
  s.child.kill('SIGHUP')
  const rejected = await s.waitLog('reload rejected; the previous config keeps serving', before)
  t.same(rejected.issues, [{ path: '', message: `cannot read ${file}: not a regular file (a FIFO)`, source: file }])
  t.equal((await fetch(`${s.url}/server-status?format=json`)).status, 200, 'still serving the old config')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})
