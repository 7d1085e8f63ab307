/**
 * What a proxy killed with SIGKILL (or crashed) leaves behind of its fork server.
 *
 * Its CGI programs: the helper sees EOF on its stdin and kills the groups of the programs it has
 * not reaped (nobody else ever would), with either helper.
 *
 * Its private directory (`$TMPDIR/proxycore-fork-…`, the stdio socket and the Perl
 * script) is removed by close() only. A proxy killed with SIGKILL leaves it behind, so the next
 * fork server of the same user removes those whose owner is gone — and nothing else: not a live
 * proxy's, not another user's, not one of another pid namespace, and never through a symlink.
 * Runs with whichever helper this machine has (the compiled one, else perl).
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chownSync, existsSync, mkdirSync, readdirSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { leakTest } from './fixtures/guard.js'
import { tempDir } from './fixtures/manager.js'
import { processGroup, waitFor } from '../helpers/leaks.js'
import { ForkServer, findForkServer, findPerl, removeStaleDirs } from '../../src/spawn/fork-server.js'
import { realClock } from '../../src/spawn/backoff.js'

const helper = findForkServer()
const src = pathToFileURL(new URL('../../src/spawn/fork-server.ts', import.meta.url).pathname).href
const clock = pathToFileURL(new URL('../../src/spawn/backoff.ts', import.meta.url).pathname).href
// The TypeScript loader tap runs us with, so that a child node can load src/ too.
const loader = process.execArgv.filter((a) => a.startsWith('--import=') && a.includes('typescript'))

/**
 * A proxy stand-in: starts a fork server, runs `script` through it, prints its directory and the
 * program's pid (once it exited, or at once with `stay`), and stays.
 */
const PROXY = (script: string, stay: boolean): string => `
import { ForkServer, findForkServer } from ${JSON.stringify(src)}
import { realClock } from ${JSON.stringify(clock)}
const fs = new ForkServer({ helper: findForkServer(), clock: realClock })
const c = fs.spawn({ file: '/bin/sh', args: ['-c', ${JSON.stringify(script)}], env: {}, cwd: '/' }, true)
const say = () => process.stdout.write(fs['dir'] + ' ' + c.pid + '\\n')
c.on('spawn', () => { c.stdout.resume(); c.stderr.resume(); if (${stay}) say() })
c.on('exit', () => { if (!${stay}) say() })
setInterval(() => {}, 1000)
`

async function startProxy (env: NodeJS.ProcessEnv, script = 'exit 0', stay = false): Promise<{ child: ChildProcess, dir: string, pid: number }> {
  const env2 = { ...env }
  delete env2.NODE_OPTIONS
  const child = spawn(process.execPath, [...loader, '--input-type=module', '-e', PROXY(script, stay)], { env: env2, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout?.on('data', (c: Buffer) => { out += c.toString() })
  const ok = await waitFor(() => out.includes('\n') || child.exitCode !== null, 20_000)
  if (!ok || !out.includes('\n')) { child.kill('SIGKILL'); throw new Error(`proxy stand-in did not start: ${out}`) }
  const [dir, pid] = out.trim().split(' ')
  return { child, dir, pid: Number(pid) }
}

async function kill (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const gone = once(child, 'close')
  child.kill('SIGKILL')
  await gone
}

leakTest(t, 'a SIGKILLed proxy leaves its directory; the next fork server removes it, and only it', async (t, defer) => {
  if (helper === null) return
  const base = tempDir(defer)
  const oldTmp = process.env.TMPDIR
  process.env.TMPDIR = base
  defer(() => { if (oldTmp === undefined) delete process.env.TMPDIR; else process.env.TMPDIR = oldTmp })

  const dead = await startProxy(process.env)
  defer(() => kill(dead.child))
  const live = await startProxy(process.env)
  defer(() => kill(live.child))
  t.equal(join(dead.dir, '..'), base, 'in $TMPDIR')
  t.match(dead.dir, new RegExp(`/proxycore-fork-\\d+-${dead.child.pid}-\\d+-[A-Za-z0-9]{6}$`), 'its name says whose it is')
  await kill(dead.child)
  t.ok(existsSync(join(dead.dir, 'stdio.sock')) || existsSync(dead.dir), 'SIGKILL: the directory stays behind')

  // Look-alikes that must survive: a symlink to a directory, another user's, another pid namespace's.
  const ns = /\d+/.exec(readlinkSync('/proc/self/ns/pid'))?.[0] ?? '0'
  const deadName = dead.dir.slice(base.length + 1)
  const target = join(base, 'target')
  mkdirSync(target)
  writeFileSync(join(target, 'keep'), 'x')
  const link = join(base, deadName.replace(/[A-Za-z0-9]{6}$/, 'link00'))
  symlinkSync(target, link)
  const foreign = join(base, deadName.replace(/[A-Za-z0-9]{6}$/, 'other0'))
  mkdirSync(foreign)
  writeFileSync(join(foreign, 'keep'), 'x')
  const otherUser = process.geteuid?.() === 0
  if (otherUser) chownSync(foreign, 65534, 65534)
  const otherNs = join(base, deadName.replace(/^proxycore-fork-\d+-/, `proxycore-fork-${Number(ns) + 1}-`))
  mkdirSync(otherNs)

  const fs = new ForkServer({ helper, clock: realClock })
  defer(() => fs.close())
  const c = fs.spawn({ file: '/bin/sh', args: ['-c', 'exit 0'], env: {}, cwd: '/' }, true)
  c.on('spawn', () => { c.stdout?.resume(); c.stderr?.resume() })
  await c.exited
  t.notOk(existsSync(dead.dir), 'the dead proxy\'s directory is gone')
  t.ok(existsSync(join(live.dir, 'stdio.sock')), 'the live proxy\'s directory and socket stay')
  t.ok(existsSync(join(target, 'keep')), 'a symlink is not followed')
  t.ok(existsSync(link), 'nor removed')
  if (otherUser) t.ok(existsSync(join(foreign, 'keep')), 'another user\'s directory stays')
  t.ok(existsSync(otherNs), 'one of another pid namespace stays')
  const mine = readdirSync(base).filter((n) => n.startsWith(`proxycore-fork-${ns}-${process.pid}-`))
  t.equal(mine.length, 1, 'the new fork server has its own')
  await fs.close()
  t.same(readdirSync(base).filter((n) => n.startsWith(`proxycore-fork-${ns}-${process.pid}-`)), [], 'close() removes it')
  t.same(removeStaleDirs(base), [], 'nothing else is stale')
}, { timeoutMs: 10_000, skip: helper === null ? 'no fork server on this machine' : false })

const helpers = [
  ...(findForkServer()?.kind === 'compiled' ? [{ name: 'compiled', env: {} }] : []),
  ...(findPerl() !== null ? [{ name: 'perl', env: { PROXYCORE_FORK_SERVER: 'perl' } }] : []),
]
for (const h of helpers) {
  leakTest(t, `${h.name} helper: the programs of a SIGKILLed proxy are killed, whole groups`, async (t, defer) => {
    const base = tempDir(defer)
    const proxy = await startProxy({ ...process.env, ...h.env, TMPDIR: base }, 'sleep 300 & exec sleep 301', true)
    defer(() => kill(proxy.child))
    // Whatever happens, nothing of the program outlives the test.
    defer(() => { try { process.kill(-proxy.pid, 'SIGKILL') } catch {} })
    t.ok(await waitFor(() => processGroup(proxy.pid).length === 2), 'the program and its background job run')
    await kill(proxy.child)
    t.ok(await waitFor(() => processGroup(proxy.pid).every((p) => p.state === 'Z'), 5000), 'its group is gone (or only zombies of a PID 1 that does not reap)')
  }, { timeoutMs: 10_000 })
}
