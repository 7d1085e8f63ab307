/**
 * Spawned backends do not outlive the Node process that spawned them. An embedding app without
 * signal handlers (fixtures/parent-death-host.mjs: createProxy + http.createServer(proxy.handler),
 * from dist/, rebuilt first when src/ is newer) is ended by SIGINT or SIGKILL, so the spawn manager
 * never stops anything; the kernel's parent-death signal (`setpriv --pdeathsig`, launcher.ts) must
 * take every backend down, and the port be free for the next start (before: php-cgi reparented to
 * PID 1, the next start failing with EADDRINUSE until start-limit-hit).
 *
 * (a) SIGINT, php-cgi socket spawn, minProcs 2; a second host then starts on the same port.
 * (b) SIGKILL, php-cgi with PHP_FCGI_CHILDREN=2: the whole group goes (php-cgi takes its workers
 *     down on SIGTERM).
 * (c) user-switched php-cgi, Node's switch and setpriv's (`groups: user`): set after the switch.
 * (d) `launcher: direct` CGI program (a pipe spawn, one of Node's own children), hung in sleep.
 * (e) chroot: a root with its own setpriv (and /bin/sh, env for the check) gets the signal; one
 *     without still starts and runs as before, and outlives the host (the documented limitation).
 * (f) the signal is the spawn's killSignal: a program ignoring SIGTERM goes with killSignal SIGINT
 *     and stays with the default (the documented limitation).
 * (g) a setpriv without --pdeathsig (util-linux < 2.33, stood in for by a bind mount): spawns start
 *     and serve as before, without the protection.
 * (h) the plans themselves: where the wrapper goes, what it leaves out, and the check shell.
 * User tests need root: skipped with the reason locally, a failure under CI=true.
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process'
import { chmodSync, existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { leakTest, type Defer } from './fixtures/guard.js'
import { tempDir } from './fixtures/manager.js'
import { minimalRoot } from '../helpers/chroot.js'
import { alive, processGroup, readProc, waitFor } from '../helpers/leaks.js'
import { withTestUsers } from '../helpers/users.js'
import { get } from '../helpers/servers.js'
import { ensureBuilt } from '../cli/run.js'
import { Launcher } from '../../src/spawn/launcher.js'
import { resolveSpec } from '../../src/spawn/spec.js'
import { freePort } from '../helpers/ports.js'

const REPO = fileURLToPath(new URL('../../', import.meta.url))
const HOST = fileURLToPath(new URL('./fixtures/parent-death-host.mjs', import.meta.url))
const PHP = '/usr/bin/php-cgi'
const U = { name: 'pcpdeath', id: 2071 }
/** Long enough for a loaded CI machine; the backends go within milliseconds when it works. */
const GONE_MS = 10_000

interface Proc { spawn: string, pid: number, address: string }
interface Host { child: ChildProcess, port: number, processes: Proc[], closed: Promise<void> }

function havePhp (t: Test): boolean {
  if (existsSync(PHP)) return true
  if (process.env.CI === 'true') t.fail(`${PHP} missing (required in CI)`)
  else t.pass(`${PHP} not installed`, { skip: `${PHP} not installed` })
  return false
}

/** Can this process bind `port` on loopback now? */
async function portFree (port: number): Promise<boolean> {
  const s = createServer()
  return await new Promise<boolean>((resolve) => {
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

/** The process is running its program, past the wrappers (setpriv, the check shell, unshare …). */
function program (pid: number): string {
  return readProc(pid)?.comm ?? ''
}

/**
 * Start the embedding host with `config`, wait for READY. Its backends are killed by pid at the
 * end whatever happens (they are not this test's children: without the fix they are orphans).
 */
async function startHost (defer: Defer, config: unknown, ready: Record<string, number>, prefix: string[] = []): Promise<Host> {
  await ensureBuilt()
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  // `prefix` must exec node in the end: the host is this child's own pid.
  const argv = [...prefix, process.execPath, HOST, JSON.stringify({ config, ready })]
  const child = spawn(argv[0], argv.slice(1), { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout!.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr!.on('data', (c: Buffer) => { if (err.length < 20_000) err += c.toString() })
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()))
  const seen: number[] = []
  defer(async () => {
    for (const pid of seen) {
      if (!alive(pid)) continue
      try { process.kill(-pid, 'SIGKILL') } catch {}
      try { process.kill(pid, 'SIGKILL') } catch {}
    }
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await closed
  })
  const ok = await waitFor(() => /^READY /m.test(out) || child.exitCode !== null, 30_000)
  const line = /^READY (.*)$/m.exec(out)
  if (!ok || line === null) throw new Error(`the host did not start: ${out} ${err}`)
  const { port, processes } = JSON.parse(line[1]) as { port: number, processes: Proc[] }
  for (const p of processes) {
    seen.push(p.pid)
    // Its workers too (php-cgi's PHP_FCGI_CHILDREN): they are what would hold the socket.
    for (const m of processGroup(p.pid)) if (!seen.includes(m.pid)) seen.push(m.pid)
  }
  return { child, port, processes, closed }
}

/** Signal the host and wait for it; it has no handler, so the signal ends it. */
async function kill (host: Host, signal: NodeJS.Signals): Promise<void> {
  host.child.kill(signal)
  await host.closed
}

/** Every process of `pids` and of their groups gone (zombies of a non-reaping PID 1 count as gone). */
async function allGone (pids: number[]): Promise<boolean> {
  return await waitFor(() => pids.every((p) => !alive(p) && processGroup(p).every((m) => m.state === 'Z')), GONE_MS, 20)
}

function phpDocroot (defer: Defer): string {
  const dir = tempDir(defer, 'pc-pdeath-')
  chmodSync(dir, 0o755)
  writeFileSync(join(dir, 'index.php'), '<?php echo getmypid();')
  chmodSync(join(dir, 'index.php'), 0o644)
  return dir
}

function phpConfig (docroot: string, port: number, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    spawns: { php: { binPath: ['php-cgi'], socketType: 'socket', socketName: `127.0.0.1:${port}`, minProcs: 2, maxProcs: 2, ...spec } },
    routes: [{ protocol: 'fastcgi', spawn: 'php', docroot, index: ['index.php'] }],
  }
}

leakTest(t, '(a) SIGINT to a host without handlers: its php-cgi processes go and the port is free for the next start', async (t, defer) => {
  if (!havePhp(t)) return
  const docroot = phpDocroot(defer)
  const port = await freePort()
  const host = await startHost(defer, phpConfig(docroot, port), { php: 2 })
  t.equal(host.processes.length, 2, 'minProcs 2')
  const pids = host.processes.map((p) => p.pid)
  const r = await get(`http://127.0.0.1:${host.port}/index.php`)
  t.equal(r.status, 200, 'php-cgi answers through the host')
  // status() shows the program's own pid: the wrappers exec'd, they did not fork.
  t.ok(pids.includes(Number(r.body.toString())), `the php-cgi that answered (getmypid() ${r.body.toString()}) is one status() reports`)
  t.ok(await waitFor(() => pids.every((p) => program(p) === 'php-cgi'), 5000), `the reported pids are php-cgi: ${pids.map(program).join(', ')}`)
  t.same(pids.map((p) => readProc(p)?.ppid), pids.map(() => host.child.pid), 'children of the host')
  t.same(pids.map((p) => processGroup(p).length), [1, 1], 'each leads its group (no wrapper process left over)')
  await kill(host, 'SIGINT')
  t.equal(host.child.signalCode, 'SIGINT', 'the host died of SIGINT')
  t.ok(await allGone(pids), `every php-cgi is gone: ${pids.filter(alive).join(', ')}`)
  t.ok(await portFree(port), `port ${port} is free`)
  const again = await startHost(defer, phpConfig(docroot, port), { php: 2 })
  t.equal(again.processes.find((p) => p.address === `127.0.0.1:${port}`)?.spawn, 'php', 'the next start binds the same port')
  await kill(again, 'SIGKILL')
  t.ok(await allGone(again.processes.map((p) => p.pid)), 'and its processes go with it too')
})

leakTest(t, '(b) SIGKILL: php-cgi with PHP_FCGI_CHILDREN=2 takes its workers down; every group is empty', async (t, defer) => {
  if (!havePhp(t)) return
  const docroot = phpDocroot(defer)
  const port = await freePort()
  const host = await startHost(defer, phpConfig(docroot, port, { environment: { PHP_FCGI_CHILDREN: '2' } }), { php: 2 })
  const leaders = host.processes.map((p) => p.pid)
  t.ok(await waitFor(() => leaders.every((p) => processGroup(p).length === 3), 5000), 'each php-cgi runs with 2 workers in its group')
  t.equal((await get(`http://127.0.0.1:${host.port}/index.php`)).status, 200, 'php-cgi answers')
  const members = leaders.flatMap((p) => processGroup(p).map((m) => m.pid))
  await kill(host, 'SIGKILL')
  t.equal(host.child.signalCode, 'SIGKILL')
  t.ok(await allGone(leaders), `masters and workers are gone: ${members.filter(alive).join(', ')}`)
  t.ok(await portFree(port), `port ${port} is free`)
})

leakTest(t, '(c) user-switched php-cgi (Node\'s switch, and setpriv\'s for groups: user): the signal survives the switch', async (t, defer) => {
  if (!havePhp(t) || !withTestUsers(t, 'parent-death user test', [U])) return
  const docroot = phpDocroot(defer)
  const port = await freePort()
  // The real file: the suEXEC checks refuse a symlinked program (/usr/bin/php-cgi → alternatives).
  const bin = realpathSync(PHP)
  const config = {
    spawns: {
      node: { binPath: bin, socketName: `127.0.0.1:${port}`, user: U.name, group: U.name, minProcs: 1 },
      setpriv: { binPath: bin, socketName: '127.0.0.1:0', user: U.name, group: U.name, groups: 'user', minProcs: 1 },
    },
    routes: [{ protocol: 'fastcgi', spawn: 'node', docroot, index: ['index.php'] }],
  }
  const host = await startHost(defer, config, { node: 1, setpriv: 1 })
  const pids = host.processes.map((p) => p.pid)
  t.equal(pids.length, 2)
  t.equal((await get(`http://127.0.0.1:${host.port}/index.php`)).status, 200, 'php-cgi answers as the user')
  t.ok(await waitFor(() => pids.every((p) => program(p).startsWith('php-cgi')), 5000), 'past the wrappers')
  for (const p of host.processes) {
    t.match(readFileSync(`/proc/${p.pid}/status`, 'utf8'), new RegExp(`^Uid:\\s+${U.id}\\s+${U.id}\\s+${U.id}\\s+${U.id}$`, 'm'), `${p.spawn}: runs as ${U.name}`)
  }
  await kill(host, 'SIGKILL')
  t.ok(await allGone(pids), `both are gone: ${pids.filter(alive).join(', ')}`)
  t.ok(await portFree(port), `port ${port} is free`)
})

leakTest(t, '(d) launcher: direct: a hung CGI program (one of Node\'s own children) goes with the host', async (t, defer) => {
  const dir = tempDir(defer, 'pc-pdeath-cgi-')
  chmodSync(dir, 0o755)
  const pidFile = join(dir, 'cgi.pid')
  // Reads nothing, writes nothing: neither EOF nor EPIPE would ever end it.
  writeFileSync(join(dir, 'hang.sh'), `#!/bin/sh\necho $$ > ${pidFile}\nexec sleep 300\n`)
  chmodSync(join(dir, 'hang.sh'), 0o755)
  const config = {
    spawns: { cgi: { socketType: 'pipe', launcher: 'direct' } },
    routes: [{ match: { prefix: '/cgi/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir, stripPrefix: true }],
  }
  const host = await startHost(defer, config, {})
  // Answered only when the host dies (a reset): nobody waits for it.
  get(`http://127.0.0.1:${host.port}/cgi/hang.sh`).catch(() => {})
  t.ok(await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').endsWith('\n'), 10_000), 'the CGI program runs')
  const pid = Number(readFileSync(pidFile, 'utf8'))
  t.ok(await waitFor(() => program(pid) === 'sleep', 5000), 'it sleeps')
  t.equal(readProc(pid)?.ppid, host.child.pid, 'a child of the host (not of a fork server)')
  defer(() => { if (alive(pid)) { try { process.kill(-pid, 'SIGKILL') } catch {} } })
  await kill(host, 'SIGKILL')
  t.ok(await allGone([pid]), 'the CGI program is gone')
})

/**
 * A root with /bin/sleep, and with `setpriv` also /usr/bin/setpriv, /bin/sh and /usr/bin/env (the
 * check shell and its probe), with their libraries (from ldd).
 */
function buildRoot (dir: string, withSetpriv: boolean): string {
  return minimalRoot(dir, withSetpriv ? 'root' : 'bare', withSetpriv ? ['/bin/sleep', '/bin/sh', '/usr/bin/setpriv', '/usr/bin/env'] : ['/bin/sleep'])
}

leakTest(t, '(e) chroot: the root\'s own setpriv sets the signal after unshare\'s setuid; a root without one runs as before', async (t, defer) => {
  if (!withTestUsers(t, 'parent-death chroot test', [U])) return
  if (!existsSync('/usr/bin/setpriv') || !existsSync('/usr/bin/unshare')) {
    t.pass('util-linux setpriv/unshare missing', { skip: 'util-linux setpriv/unshare not installed' })
    return
  }
  const dir = tempDir(defer, 'pc-pdeath-root-')
  chmodSync(dir, 0o755)
  const port = await freePort()
  // fd 0 hand-off: the kernel queues connections to the socket, so a sleeping program is "ready".
  const jail = (root: string, socketName: string): Record<string, unknown> =>
    ({ binPath: '/bin/sleep 300', chroot: root, user: U.name, group: U.name, socketName, minProcs: 1 })
  const config = {
    spawns: {
      jail: jail(buildRoot(dir, true), `127.0.0.1:${port}`),
      bare: jail(buildRoot(dir, false), '127.0.0.1:0'),
    },
    routes: [],
  }
  const host = await startHost(defer, config, { jail: 1, bare: 1 })
  const pid = (name: string): number => host.processes.find((p) => p.spawn === name)?.pid as number
  t.ok(await waitFor(() => program(pid('jail')) === 'sleep' && program(pid('bare')) === 'sleep', 5000), 'both run, as before')
  t.match(readFileSync(`/proc/${pid('jail')}/status`, 'utf8'), new RegExp(`^Uid:\\s+${U.id}\\s`, 'm'), `runs as ${U.name}`)
  await kill(host, 'SIGKILL')
  t.ok(await allGone([pid('jail')]), 'the program of the root with setpriv is gone')
  t.ok(await portFree(port), `port ${port} is free`)
  // Documented: without setpriv and /bin/sh inside the root nothing can set the signal after
  // unshare's setuid (which clears one set before), so this program outlives the host.
  t.ok(alive(pid('bare')), 'the program of the root without setpriv is still running (no protection there)')
})

leakTest(t, '(f) the signal is the spawn\'s killSignal: one ignoring SIGTERM goes with killSignal SIGINT, stays with the default', async (t, defer) => {
  // An ignored signal stays ignored across exec: sleep ignores SIGTERM, not SIGINT.
  const ignoring = ['/bin/sh', '-c', 'trap "" TERM; exec sleep 300']
  const config = {
    spawns: {
      int: { binPath: ignoring, socketName: '127.0.0.1:0', killSignal: 'SIGINT', stopTimeout: '1s', minProcs: 1 },
      term: { binPath: ignoring, socketName: '127.0.0.1:0', stopTimeout: '1s', minProcs: 1 },
    },
    routes: [],
  }
  const host = await startHost(defer, config, { int: 1, term: 1 })
  const pid = (name: string): number => host.processes.find((p) => p.spawn === name)?.pid as number
  t.ok(await waitFor(() => program(pid('int')) === 'sleep' && program(pid('term')) === 'sleep', 5000), 'both sleep')
  await kill(host, 'SIGKILL')
  t.ok(await allGone([pid('int')]), 'killSignal SIGINT: gone')
  t.ok(alive(pid('term')), 'default SIGTERM, ignored by the program: still running (the documented limitation)')
})

leakTest(t, '(g) a setpriv without --pdeathsig: spawns start and serve as before, without the protection', async (t, defer) => {
  if (!havePhp(t)) return
  if (process.getuid?.() !== 0) {
    t.pass('needs root', { skip: 'needs root for a mount namespace (unshare -m) to stand in an old setpriv' })
    return
  }
  const dir = tempDir(defer, 'pc-pdeath-old-')
  chmodSync(dir, 0o755)
  // What util-linux < 2.33 says to --pdeathsig.
  const old = join(dir, 'setpriv')
  writeFileSync(old, '#!/bin/sh\necho "setpriv: unrecognized option \'--pdeathsig=$1\'" >&2\nexit 1\n')
  chmodSync(old, 0o755)
  const docroot = phpDocroot(defer)
  const port = await freePort()
  const prefix = ['/usr/bin/unshare', '-m', '/bin/sh', '-c', `mount --bind ${old} /usr/bin/setpriv && exec "$0" "$@"`]
  const host = await startHost(defer, phpConfig(docroot, port), { php: 2 }, prefix)
  const pids = host.processes.map((p) => p.pid)
  t.equal((await get(`http://127.0.0.1:${host.port}/index.php`)).status, 200, 'php-cgi answers')
  t.ok(pids.every((p) => program(p) === 'php-cgi' && readProc(p)?.ppid === host.child.pid), 'the host\'s own children, php-cgi')
  await kill(host, 'SIGKILL')
  t.notOk(await waitFor(() => !pids.some(alive), 500), 'without the wrapper they outlive the host, as before this change')
})

leakTest(t, '(h) plans: innermost setpriv with the killSignal, the check shell for socket spawns, nothing where it cannot work', async (t) => {
  if (!existsSync('/usr/bin/setpriv')) {
    t.pass('no setpriv', { skip: 'util-linux setpriv not installed' })
    return
  }
  const launcher = new Launcher({})
  const plan = async (spec: Parameters<typeof resolveSpec>[1], argv?: string[], env: Record<string, string> = {}, forkServer = false): Promise<string[]> => {
    const resolved = resolveSpec('x', spec)
    await launcher.validate(resolved)
    const p = launcher.plan(resolved, argv ?? resolved.argv, env, undefined, forkServer)
    return [p.file, ...p.args]
  }
  const check = (path = ''): string => `unset PWD; ${path}[ "$PPID" = ${process.pid} ] || exit 1; exec "$0" "$@"`
  const SP = '/usr/bin/setpriv'
  t.same(await plan({ binPath: '/bin/sleep 1', socketName: '127.0.0.1:0' }),
    [SP, '--pdeathsig=SIGTERM', '--', '/bin/sh', '-c', check(), '/bin/sleep', '1'], 'socket spawn: setpriv, the check shell, the program')
  t.same(await plan({ binPath: '/bin/sleep 1', socketName: '127.0.0.1:0', killSignal: 'SIGQUIT' }),
    [SP, '--pdeathsig=SIGQUIT', '--', '/bin/sh', '-c', check(), '/bin/sleep', '1'], 'the signal is the killSignal')
  t.same(await plan({ binPath: 'sleep 1', socketName: '127.0.0.1:0' }),
    [SP, '--pdeathsig=SIGTERM', '--', '/bin/sh', '-c', check('PATH=/usr/bin:/bin; '), 'sleep', '1'], 'a bare name, no PATH: looked up where Node would')
  t.same(await plan({ binPath: 'sleep 1', socketName: '127.0.0.1:0' }, undefined, { PATH: '/bin' }),
    [SP, '--pdeathsig=SIGTERM', '--', '/bin/sh', '-c', check(), 'sleep', '1'], 'a PATH of the spawn\'s own is left alone')
  for (const name of ['A.B', 'X-Y', 'PWD', 'IFS', 'PPID', 'OPTIND']) {
    t.same(await plan({ binPath: '/bin/sleep 1', socketName: '127.0.0.1:0' }, undefined, { [name]: 'v' }),
      [SP, '--pdeathsig=SIGTERM', '--', '/bin/sleep', '1'], `${name} in the environment: no check shell (dash would drop or change it)`)
  }
  t.same(await plan({ binPath: '/bin/sleep 1', socketName: '127.0.0.1:0', limits: { nofile: 64 } }),
    ['/usr/bin/prlimit', '--nofile=64', '--', SP, '--pdeathsig=SIGTERM', '--', '/bin/sh', '-c', check(), '/bin/sleep', '1'], 'inside prlimit')
  t.same(await plan({ binPath: '/nonexistent/pc-program', socketName: '127.0.0.1:0' }), ['/nonexistent/pc-program'],
    'a program Node could not exec: no wrapper, so the exec error is Node\'s own (ERR_SPAWN_EXEC) as before')
  t.same(await plan({ socketType: 'pipe' }, ['/bin/true']), [SP, '--pdeathsig=SIGTERM', '--', '/bin/true'], 'pipe spawn, direct: no check shell')
  t.same(await plan({ socketType: 'pipe' }, ['/bin/true'], {}, true), ['/bin/true'], 'pipe spawn, fork server: nothing (it kills its children itself)')

  // The check shell: the program runs, with exactly its environment, when the host is the parent;
  // under another parent (a host that died before the prctl) it does not run at all.
  // printenv exits 1 for a name that is not set: A is, PWD and PATH must not be.
  const resolved = resolveSpec('env', { binPath: '/usr/bin/printenv A PWD PATH', socketName: '127.0.0.1:0' })
  await launcher.validate(resolved)
  const p = launcher.plan(resolved, resolved.argv, { A: '1' }, undefined)
  const ran = spawnSync(p.file, p.args, { env: p.env, encoding: 'utf8' })
  t.same([ran.stdout, ran.status], ['1\n', 1], 'run by the host: the program, its environment untouched (A, no PWD, no PATH)')
  const orphan = execFileSync('/bin/sh', ['-c', '"$@"; echo "exit $?"', 'sh', p.file, ...p.args], { env: p.env, encoding: 'utf8' })
  t.equal(orphan, 'exit 1\n', 'run by another parent: exits 1, the program never starts')
})
