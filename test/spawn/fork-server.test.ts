/**
 * The fork server at the spawn layer (PipeStarter.launch, no HTTP): the child's event contract
 * ('spawn' before its streams, 'error' with the errno instead of 'spawn', 'exit' after), a kill
 * that comes before the exec, refused arguments, the spec option, and the plan without the
 * umask shell, the architectures the Perl helper runs on, which helper runs, and how the compiled
 * one takes a frame the proxy never sends. fork-server-perl.test.ts runs this file again with the
 * Perl helper.
 */
import t from 'tap'
import { once } from 'node:events'
import { mkdirSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { leakTest } from './fixtures/guard.js'
import { manager, tempDir } from './fixtures/manager.js'
import { childrenOf, guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import { ForkChild, findForkServer, noForkServerReason, type PipeChild } from '../../src/spawn/fork-server.js'
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

/**
 * A program that exists when the spawn is checked (a pipe spawn's absolute binPath must: start and
 * reload refuse a missing one) and is removed after, so the per-request ENOENT path runs.
 */
function vanishing (defer: Parameters<typeof tempDir>[0]): { path: string, remove: () => void } {
  const path = join(tempDir(defer), 'program')
  writeFileSync(path, '#!/bin/sh\n', { mode: 0o755 })
  return { path, remove: () => rmSync(path) }
}

leakTest(t, 'exec and chdir failures: error with the errno code, never spawn', async (t, defer) => {
  const m = manager(defer)
  const ghost = vanishing(defer)
  m.add('ghost', { socketType: 'pipe', binPath: ghost.path })
  m.add('sh', { socketType: 'pipe', binPath: '/bin/sh' })
  await m.start()
  ghost.remove()
  const enoent = m.pipeStarter('ghost').launch({ argv: [], env: {}, cwd: '/' })
  const [e1] = await once(enoent, 'error') as [NodeJS.ErrnoException]
  t.match(e1, { code: 'ENOENT', errno: -2, syscall: `spawn ${ghost.path}`, message: `spawn ${ghost.path} ENOENT` })
  const nocwd = m.pipeStarter('sh').launch({ argv: ['-c', 'true'], env: {}, cwd: '/nonexistent/dir' })
  const c = collect(nocwd)
  const [e2] = await once(nocwd, 'error') as [NodeJS.ErrnoException]
  t.match(e2, { code: 'ENOENT', message: 'spawn /bin/sh ENOENT (chdir)' })
  t.same(c.events, ['error ENOENT'])
  t.ok(await waitFor(() => m.status().every((s) => s.pipeChildren === 0)))
})

leakTest(t, 'the helper keeps no descriptor of a finished request: programs that ran, failed to exec or to chdir', async (t, defer) => {
  const m = manager(defer)
  const ghost = vanishing(defer)
  m.add('ghost', { socketType: 'pipe', binPath: ghost.path })
  m.add('sh', { socketType: 'pipe', binPath: '/bin/sh' })
  await m.start()
  ghost.remove()
  const run = (name: string, argv: string[], cwd = '/'): Promise<string> => new Promise((resolve) => {
    const child = m.pipeStarter(name).launch({ argv, env: {}, cwd })
    child.once('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code}`))
    child.once('spawn', () => { child.stdout?.resume(); child.stderr?.resume(); child.stdin?.end() })
    child.once('exit', (code: number | null) => resolve(`exit ${code}`))
  })
  t.equal(await run('sh', ['-c', 'true']), 'exit 0')
  const helper = childrenOf().find((p) => p.comm.startsWith('proxycore-fork') && p.state !== 'Z')?.pid
  const fds = (): string[] => readdirSync(`/proc/${helper}/fd`).sort()
  const before = fds()
  const seen = new Map<string, number>()
  for (let i = 0; i < 40; i++) {
    for (const r of await Promise.all([run('sh', ['-c', 'echo hi']), run('ghost', []), run('sh', ['-c', 'true'], '/nonexistent/dir')])) {
      seen.set(r, (seen.get(r) ?? 0) + 1)
    }
  }
  t.same(Object.fromEntries(seen), { 'exit 0': 40, 'error ENOENT': 80 }, 'each ran or failed as it should')
  t.same(fds(), before, `the helper's descriptors are the ones it had (${before.length})`)
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

t.test('the reason given without a fork server names what is really missing', async (t) => {
  t.equal(noForkServerReason('ppc64', false, false), 'the Perl fork server runs on x64, arm64, riscv64, loong64, not on ppc64, and the compiled one was not built (npm install builds it when a C compiler is there)')
  t.equal(noForkServerReason('x64', false, false), 'the Perl fork server needs perl (perl-base), which is not installed, and the compiled one was not built (npm install builds it when a C compiler is there)')
  t.equal(noForkServerReason('x64', true, true), 'PROXYCORE_FORK_SERVER=perl asks for the Perl fork server, but the Perl fork server needs perl (perl-base), which is not installed; unset it to use the compiled one')
  t.match(noForkServerReason('x64', true, false), /and the compiled one was not built/, 'asked for, and no compiled one either')
})

t.test('an architecture without a syscall table: auto starts directly, fork-server is refused', async (t) => {
  guardLeaks(t)
  await ensureBuilt()
  // The compiled helper runs anywhere it was built: ruled out here, so only the Perl one is left.
  const env = { ...process.env, PROXYCORE_FORK_SERVER: 'perl' }
  const r = await runNode(['--input-type=module', '-e', OTHER_ARCH(pathToFileURL(join(root, 'dist')).href)], { cwd: root, env })
  t.equal(r.code, 0, r.stderr)
  const out = JSON.parse(r.stdout) as Record<string, string | null>
  t.equal(out.perl, null, 'no perl for the fork server')
  // The compiled helper is built here: the reason says it was passed over, not that it is missing.
  t.match(out.why, /^PROXYCORE_FORK_SERVER=perl asks for the Perl fork server, but the Perl fork server runs on x64, arm64, riscv64, loong64, not on ppc64; unset it to use the compiled one$/)
  t.equal(out.auto, 'direct')
  t.match(out.forced, /^ERR_SPAWN_FORK_SERVER_UNSUPPORTED: spawns\.forced\.launcher: PROXYCORE_FORK_SERVER=perl asks for the Perl fork server, but the Perl fork server runs on .* not on ppc64/)
})

// Which helper runs: PROXYCORE_FORK_SERVER=perl picks the Perl one; otherwise the compiled one,
// which npm install builds when a C compiler is there (CI installs gcc: it must be there).
const wantPerl = process.env.PROXYCORE_FORK_SERVER === 'perl'
const native = wantPerl ? null : findForkServer()
const nativeMissing = native?.kind === 'compiled' ? null : 'the compiled fork server is not built (no C compiler at npm install)'

/** A compiled-helper test where there is none: skipped with the reason locally, failed under CI. */
function withoutNative (name: string): void {
  if (process.env.CI === 'true') t.test(name, async (t) => { t.fail(`${nativeMissing}: scripts/install-peers.sh installs gcc`) })
  else t.test(name, { skip: nativeMissing as string }, () => {})
}

const whichName = `the helper that runs is the ${wantPerl ? 'Perl one (PROXYCORE_FORK_SERVER=perl)' : 'compiled one'}`
if (!wantPerl && nativeMissing !== null) withoutNative(whichName)
else {
  leakTest(t, whichName, async (t, defer) => {
    const m = manager(defer)
    m.add('cgi', { socketType: 'pipe', binPath: '/bin/true' })
    await m.start()
    const child = m.pipeStarter('cgi').launch({ argv: [], env: {}, cwd: '/' })
    await (child as ForkChild).exited
    const helper = childrenOf().find((p) => p.comm.startsWith('proxycore-fork') && p.state !== 'Z')
    t.ok(helper !== undefined, 'the helper runs, as our child')
    const exe = readlinkSync(`/proc/${helper?.pid}/exe`)
    if (wantPerl) t.match(exe, /\/perl[\d.]*$/, `perl runs it (${exe})`)
    else t.match(exe, /\/native\/build\/proxycore-fork-server$/, `the compiled helper (${exe})`)
    await m.close()
  })
}

/** Run the compiled helper by hand, give it `input`, and collect how it ends. */
async function feedNative (dir: string, input: Buffer): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawn(native?.path as string, [join(dir, 'nobody-listens.sock')], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  child.stdin.on('error', () => {})
  child.stdin.end(input)
  const [code] = await once(child, 'close') as [number | null]
  return { code, stdout, stderr }
}

function frame (fields: string[]): Buffer {
  const body = Buffer.from(fields.join('\0'))
  const head = Buffer.alloc(4)
  head.writeUInt32BE(body.length)
  return Buffer.concat([head, body])
}
const TOKEN = 'ab'.repeat(16)

const badFrameName = 'the compiled helper: a frame the proxy never sends ends it with a reason (the proxy then reports ERR_CGI_FORK_SERVER)'
// The Perl helper's run of this file (fork-server-perl.test.ts) leaves it out.
if (!wantPerl && nativeMissing !== null) withoutNative(badFrameName)
else if (!wantPerl) {
  leakTest(t, badFrameName, async (t, defer) => {
    const dir = tempDir(defer)
    const cases: Array<[string, Buffer, RegExp]> = [
      ['too few fields', frame(['1', TOKEN, '/']), /bad frame: fewer than 8 fields/],
      ['an id that is not a number', frame(['x1', TOKEN, '/', '', '', '', 'null', '1', '/bin/true']), /bad frame: id/],
      ['a short token', frame(['1', 'abc', '/', '', '', '', 'null', '1', '/bin/true']), /bad frame: token/],
      ['a token that is not hex', frame(['1', 'zz'.repeat(16), '/', '', '', '', 'null', '1', '/bin/true']), /bad frame: token/],
      ['a uid that is not a number', frame(['1', TOKEN, '/', 'root', '', '', 'null', '1', '/bin/true']), /bad frame: a number field is not a number/],
      ['a signed uid', frame(['1', TOKEN, '/', '+0', '', '', 'null', '1', '/bin/true']), /bad frame: a number field is not a number/],
      ['a uid past uid_t (it would wrap to root)', frame(['1', TOKEN, '/', '4294967296', '', '', 'null', '1', '/bin/true']), /bad frame: a number field is out of range/],
      ['a umask past 0777', frame(['1', TOKEN, '/', '', '', '512', 'null', '1', '/bin/true']), /bad frame: a number field is out of range/],
      ['argc past the end', frame(['1', TOKEN, '/', '', '', '', 'null', '5', '/bin/true']), /bad frame: argc/],
      ['argc 0', frame(['1', TOKEN, '/', '', '', '', 'null', '0']), /bad frame: argc/],
      ['a length over 64 MiB', Buffer.from([0x7f, 0xff, 0xff, 0xff]), /bad frame: too long/],
    ]
    for (const [name, input, why] of cases) {
      const r = await feedNative(dir, input)
      t.same([r.code, r.stdout], [1, ''], `${name}: exit 1, no reply`)
      t.match(r.stderr, why, `${name}: says why`)
    }
    // A frame cut short by EOF is not started: the proxy closed us, and nothing more happens.
    const whole = frame(['1', TOKEN, '/', '', '', '', 'null', '1', '/bin/true'])
    t.same(await feedNative(dir, whole.subarray(0, whole.length - 3)), { code: 0, stdout: '', stderr: '' }, 'a frame cut by EOF: exit 0, nothing started')
    // Well-formed frames whose socket is not there: E with the errno for each, then exit 0 at EOF.
    const r = await feedNative(dir, Buffer.concat([whole, frame(['2', TOKEN, '/', '', '', '', 'pipe', '1', '/bin/true'])]))
    t.same([r.code, r.stdout, r.stderr], [0, 'E 1 2 connect\nE 2 2 connect\n', ''], 'no socket to connect to: E <id> ENOENT connect, for each')
  })
}

