/**
 * The fork server at the spawn layer (PipeStarter.launch, no HTTP): the child's event contract
 * ('spawn' before its streams, 'error' with the errno instead of 'spawn', 'exit' after), a kill
 * that comes before the exec, refused arguments, the spec option, and the plan without the
 * umask shell, and the architectures the helper runs on.
 */
import t from 'tap'
import { once } from 'node:events'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { leakTest } from './fixtures/guard.js'
import { manager, tempDir } from './fixtures/manager.js'
import { childrenOf, guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import { ForkChild, type PipeChild } from '../../src/spawn/fork-server.js'
import { resolveSpec } from '../../src/spawn/spec.js'
import { Launcher } from '../../src/spawn/launcher.js'
import { runNode } from '../helpers/run-node.js'
import { ensureBuilt, root } from '../cli/run.js'

function collect (child: PipeChild): { events: string[], out: () => string } {
  const events: string[] = []
  let out = ''
  child.on('error', (err: NodeJS.ErrnoException) => events.push(`error ${err.code}`))
  child.once('spawn', () => {
    events.push('spawn')
    child.stdout?.on('data', (c: Buffer) => { out += c.toString() })
    child.stdout?.once('end', () => events.push('end'))
    child.stdin?.end()
  })
  child.once('exit', (code: number | null, signal: string | null) => events.push(`exit ${code} ${signal}`))
  return { events, out: () => out }
}

leakTest(t, 'launch(): spawn, then streams, then exit; the helper is ours and goes at close()', async (t, defer) => {
  const m = manager(defer)
  m.add('cgi', { socketType: 'pipe', binPath: '/bin/sh', stopTimeout: 300 })
  await m.start()
  const starter = m.pipeStarter('cgi')
  t.equal(starter.launcher, 'fork-server')
  const child = starter.launch({ argv: ['-c', 'printf "%s" "$GREETING"; exit 3'], env: { GREETING: 'hi there' }, cwd: '/' })
  t.ok(child instanceof ForkChild)
  t.equal(child.pid, undefined, 'no pid yet: the helper forks asynchronously')
  const c = collect(child)
  await (child as ForkChild).exited
  t.ok(await waitFor(() => c.events.includes('end')))
  t.equal(c.events[0], 'spawn', 'spawn first')
  t.same(c.events.slice(1).sort(), ['end', 'exit 3 null'], 'then EOF and the exit status, in either order')
  t.equal(c.out(), 'hi there')
  t.ok(childrenOf().some((p) => p.comm.startsWith('proxycore-fork')), 'the helper keeps running between requests')
  await m.close()
  t.same(childrenOf().filter((p) => p.state !== 'Z'), [], 'close() stopped the helper')
})

leakTest(t, 'exec and chdir failures: error with the errno code, never spawn', async (t, defer) => {
  const m = manager(defer)
  m.add('ghost', { socketType: 'pipe', binPath: '/nonexistent/program' })
  m.add('sh', { socketType: 'pipe', binPath: '/bin/sh' })
  await m.start()
  const enoent = m.pipeStarter('ghost').launch({ argv: [], env: {}, cwd: '/' })
  const [e1] = await once(enoent, 'error') as [NodeJS.ErrnoException]
  t.match(e1, { code: 'ENOENT', errno: -2, syscall: 'spawn /nonexistent/program', message: 'spawn /nonexistent/program ENOENT' })
  const nocwd = m.pipeStarter('sh').launch({ argv: ['-c', 'true'], env: {}, cwd: '/nonexistent/dir' })
  const c = collect(nocwd)
  const [e2] = await once(nocwd, 'error') as [NodeJS.ErrnoException]
  t.match(e2, { code: 'ENOENT', message: 'spawn /bin/sh ENOENT (chdir)' })
  t.same(c.events, ['error ENOENT'])
  t.ok(await waitFor(() => m.status().every((s) => s.pipeChildren === 0)))
})

// The helper runs execvp(3) by hand (execve by number, argv and environment made before the fork):
// a bare name is searched in the PATH of the program's own environment, a directory where it is
// not executable is remembered as EACCES while the search goes on, a file without #! runs under
// /bin/sh. libuv does the same for the direct launcher: both must answer alike.
leakTest(t, 'a bare program name: PATH search, EACCES, no #!, no PATH, the same as the direct launcher', async (t, defer) => {
  const dir = tempDir(defer)
  const bin = (sub: string, name: string, text: string, mode: number): void => {
    mkdirSync(join(dir, sub), { recursive: true })
    writeFileSync(join(dir, sub, name), text, { mode })
  }
  bin('noexec', 'prog', 'echo wrong\n', 0o644)
  bin('exec', 'prog', '#!/bin/sh\necho "prog $1 $GREETING"\n', 0o755)
  bin('plain', 'plain', 'echo "plain via sh: $1"\n', 0o755)
  const m = manager(defer)
  for (const launcher of ['fork-server', 'direct'] as const) {
    m.add(`prog-${launcher}`, { socketType: 'pipe', binPath: 'prog', launcher })
    m.add(`plain-${launcher}`, { socketType: 'pipe', binPath: 'plain', launcher })
  }
  await m.start()
  const run = async (name: string, env: Record<string, string>): Promise<string> => {
    const child = m.pipeStarter(name).launch({ argv: ['one'], env, cwd: '/' })
    const c = collect(child)
    const end = new Promise<void>((resolve) => { child.once('exit', () => resolve()); child.once('error', () => resolve()) })
    await end
    await waitFor(() => c.events.includes('end') || c.events.some((e) => e.startsWith('error')))
    return c.events.some((e) => e.startsWith('error')) ? c.events.join(',') : c.out()
  }
  const cases: Array<[string, string, Record<string, string>, string]> = [
    ['the first directory that has it as an executable', 'prog', { PATH: `${dir}/missing:${dir}/noexec:${dir}/exec`, GREETING: 'hi' }, 'prog one hi\n'],
    ['no #!: /bin/sh runs it', 'plain', { PATH: `${dir}/plain` }, 'plain via sh: one\n'],
    ['only a non-executable one: EACCES', 'prog', { PATH: `${dir}/missing:${dir}/noexec:${dir}/missing2` }, 'error EACCES'],
    ['nowhere: ENOENT', 'prog', { PATH: `${dir}/missing` }, 'error ENOENT'],
    ['no PATH: /bin:/usr/bin, ENOENT', 'prog', {}, 'error ENOENT'],
  ]
  for (const [what, name, env, want] of cases) {
    t.equal(await run(`${name}-fork-server`, env), want, `fork server: ${what}`)
    t.equal(await run(`${name}-direct`, env), want, `direct: ${what}`)
  }
  t.ok(await waitFor(() => m.status().every((s) => s.pipeChildren === 0)))
})

leakTest(t, 'kill() before the exec is reported stops the program once it runs, group and all', async (t, defer) => {
  const m = manager(defer)
  m.add('sh', { socketType: 'pipe', binPath: '/bin/sh', stopTimeout: 300 })
  await m.start()
  const starter = m.pipeStarter('sh')
  const child = starter.launch({ argv: ['-c', 'sleep 300 & wait'], env: {}, cwd: '/' })
  const c = collect(child)
  starter.kill(child)
  await (child as ForkChild).exited
  t.equal(c.events[0], 'spawn')
  t.ok(c.events.some((e) => /^exit null SIG(TERM|KILL)$/.test(e)), `stopped by the escalation ladder: ${c.events.join(', ')}`)
  const pid = child.pid as number
  t.ok(await waitFor(() => processGroup(pid).every((p) => p.state === 'Z'), 5000), 'the backgrounded sleep went too')
})

leakTest(t, 'after a normal exit, what the program left in its group is stopped (and only then is there a group to stop)', async (t, defer) => {
  const m = manager(defer)
  m.add('sh', { socketType: 'pipe', binPath: '/bin/sh', stopTimeout: 300 })
  await m.start()
  const starter = m.pipeStarter('sh')
  const clean = starter.launch({ argv: ['-c', 'exit 0'], env: {}, cwd: '/' }) as ForkChild
  collect(clean)
  await clean.exited
  t.equal(clean.groupLeft, false, 'nothing left: the helper said so, no signal needed')
  const leaver = starter.launch({ argv: ['-c', 'sleep 300 & echo started'], env: {}, cwd: '/' }) as ForkChild
  const c = collect(leaver)
  await leaver.exited
  t.ok(c.events.includes('exit 0 null'), 'the leader exited by itself')
  t.equal(leaver.groupLeft, true, 'its sleep is still in the group')
  const pid = leaver.pid as number
  t.ok(await waitFor(() => processGroup(pid).every((p) => p.state === 'Z'), 5000), 'and is stopped with the group')
  t.ok(await waitFor(() => m.status()[0].pipeChildren === 0, 5000))
})

leakTest(t, 'arguments no exec can take are refused synchronously, like spawn()', async (t, defer) => {
  const m = manager(defer)
  m.add('sh', { socketType: 'pipe', binPath: '/bin/sh' })
  await m.start()
  t.throws(() => m.pipeStarter('sh').launch({ argv: ['-c', 'true'], env: { A: 'x\0y' }, cwd: '/' }), { code: 'ERR_CGI_SPAWN', message: /NUL bytes/ })
  t.equal(m.status()[0].pipeChildren, 0)
  t.notOk(childrenOf().some((p) => p.comm.startsWith('proxycore-fork')), 'nor was the helper started for it')
})

t.test('spec: launcher values; the fork server is for pipe spawns only', async (t) => {
  guardLeaks(t)
  t.equal(resolveSpec('a', { socketType: 'pipe' }).launcher, 'auto')
  t.equal(resolveSpec('a', { socketType: 'pipe', launcher: 'direct' }).launcher, 'direct')
  t.throws(() => resolveSpec('a', { socketType: 'pipe', launcher: 'fast' as 'auto' }), { code: 'ERR_SPAWN_BAD_SPEC' })
  t.throws(() => resolveSpec('a', { binPath: '/bin/true', socketName: '127.0.0.1:0', launcher: 'fork-server' }), { code: 'ERR_SPAWN_BAD_SPEC' })
})

t.test('plan: the fork server sets the umask itself, without the wrapper shell', async (t) => {
  if (process.getuid?.() !== 0) { t.plan(0, 'needs root (identity switch)'); return }
  guardLeaks(t)
  const launcher = new Launcher({})
  const spec = resolveSpec('cgi', { socketType: 'pipe', user: 'nobody', group: 'nogroup' })
  await launcher.validate(spec)
  const direct = launcher.plan(spec, ['/srv/x.sh'], {}, '/srv')
  t.same([direct.file, direct.args.slice(0, 2), direct.umask], ['/bin/sh', ['-c', 'umask 022; exec "$0" "$@"'], undefined], 'direct: sh sets the umask')
  const forked = launcher.plan(spec, ['/srv/x.sh'], {}, '/srv', true)
  t.same([forked.file, forked.args, forked.umask, forked.uid, forked.gid], ['/srv/x.sh', [], 0o022, 65534, 65534], 'fork server: the program itself, umask 022 native')
})

// The helper calls syscalls by number: on an architecture whose table it does not carry, `auto`
// starts CGI programs directly and `fork-server` is refused with the reason. Run in a child whose
// process.arch is made to read ppc64 before the spawn layer loads (dist: plain node, no loader).
const OTHER_ARCH = (dist: string): string => `
Object.defineProperty(process, 'arch', { value: 'ppc64' })
const { findPerl, forkServerUnsupported } = await import(${JSON.stringify(`${dist}/spawn/fork-server.js`)})
const { SpawnManager } = await import(${JSON.stringify(`${dist}/spawn/manager.js`)})
const out = { perl: findPerl(), why: forkServerUnsupported() }
const m = new SpawnManager({})
m.add('auto', { socketType: 'pipe', binPath: '/bin/true' })
await m.start()
out.auto = m.pipeStarter('auto').launcher
await m.close()
const m2 = new SpawnManager({})
m2.add('forced', { socketType: 'pipe', binPath: '/bin/true', launcher: 'fork-server' })
try { await m2.start(); out.forced = 'started' } catch (err) { out.forced = err.code + ': ' + err.message }
await m2.close()
console.log(JSON.stringify(out))
`

t.test('an architecture without a syscall table: auto starts directly, fork-server is refused', async (t) => {
  guardLeaks(t)
  await ensureBuilt()
  const r = await runNode(['--input-type=module', '-e', OTHER_ARCH(pathToFileURL(join(root, 'dist')).href)], { cwd: root })
  t.equal(r.code, 0, r.stderr)
  const out = JSON.parse(r.stdout) as Record<string, string | null>
  t.equal(out.perl, null, 'no perl for the fork server')
  t.match(out.why, /runs on x64, arm64, riscv64, loong64, not on ppc64/)
  t.equal(out.auto, 'direct')
  t.match(out.forced, /^ERR_SPAWN_FORK_SERVER_UNSUPPORTED: spawns\.forced\.launcher: the fork server runs on .* not on ppc64/)
})
