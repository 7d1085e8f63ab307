/**
 * Claims of docs/design/spawn.md that an operator relies on and that no test in test/spawn
 * asserted: the stop ladder as it really runs (signals, order, how long), the default restart
 * policy (delays, start limit, reason), the `idle` state of a minProcs 0 spawn, scale-up on
 * load and the idle shrink, and the recycle lead (a tenth of maxRequests). Real programs only:
 * /bin/sh scripts holding the fd-0 socket, the Node fixture backend.
 */
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from '../spawn/fixtures/guard.js'
import { ensure, listed, manager, nextEvent, nodeBackend, tempDir } from '../spawn/fixtures/manager.js'
import { SPAWN_DEFAULTS, resolveSpec } from '../../src/spawn/spec.js'
import { Launcher } from '../../src/spawn/launcher.js'
import { withTestUsers } from '../helpers/users.js'
import type { SpawnEvents } from '../../src/spawn/types.js'

/** Poll `pred` every 20 ms until true, failing after `ms`. */
async function until (pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/**
 * A program that holds the fd-0 socket, logs every catchable stop signal it gets (one line each)
 * and ignores them all: only SIGKILL ends it. `ready` is written once the traps are set.
 */
function stubborn (dir: string): string[] {
  const log = join(dir, 'signals')
  const script = `for s in TERM INT QUIT HUP CONT; do trap "echo $s >> ${log}" $s; done; echo ready >> ${log}; while :; do sleep 0.05; done`
  return ['/bin/sh', '-c', script]
}

function signalsLogged (dir: string): string[] {
  try { return readFileSync(join(dir, 'signals'), 'utf8').split('\n').filter((l) => l !== '') } catch { return [] }
}

t.test('the defaults the doc relies on (SPAWN_DEFAULTS)', async (t) => {
  t.equal(SPAWN_DEFAULTS.handoff, 'fd0', 'fd0 is the default hand-off')
  t.equal(SPAWN_DEFAULTS.launcher, 'auto', 'launcher auto is the default')
  t.equal(SPAWN_DEFAULTS.killSignal, 'SIGTERM')
  t.equal(SPAWN_DEFAULTS.stopTimeout, 10_000)
  t.equal(SPAWN_DEFAULTS.startTimeout, 10_000)
  t.equal(SPAWN_DEFAULTS.idleTimeout, 60_000)
  t.same({ ...SPAWN_DEFAULTS.restart }, { initialDelay: 100, maxDelay: 15_000, stableAfter: 30_000, maxStarts: 5, window: 10_000 })
  t.same({ ...SPAWN_DEFAULTS.healthCheck }, { interval: 10_000, timeout: 2_000, failures: 3 })
  t.same([SPAWN_DEFAULTS.minProcs, SPAWN_DEFAULTS.maxProcs, SPAWN_DEFAULTS.maxLoadPerProc, SPAWN_DEFAULTS.maxRequests], [1, 1, 1, 0])
})

/** Start a program that traps every signal, close the manager, and report what it got and how long the stop took. */
async function stopStubborn (defer: Parameters<typeof tempDir>[0], opts: { stopTimeout: number, killSignal?: NodeJS.Signals }): Promise<{ signals: string[], took: number, signal: string | null }> {
  const dir = tempDir(defer)
  const m = manager(defer)
  m.add('st', { binPath: stubborn(dir), socketName: '127.0.0.1:0', ...opts })
  await m.start()
  await ensure(m, 'st')
  await until(() => signalsLogged(dir).includes('ready'), 'traps set')
  const exit = nextEvent(m, 'exit')
  const began = Date.now()
  await m.close()
  const took = Date.now() - began
  return { signals: signalsLogged(dir), took, signal: (await exit).signal }
}

leakTest(t, 'stop, default killSignal: SIGTERM (then SIGCONT) once, SIGKILL one stopTimeout later, not two', async (t, defer) => {
  const stopTimeout = 1500
  const { signals, took, signal } = await stopStubborn(defer, { stopTimeout })
  t.equal(signal, 'SIGKILL', 'ended by SIGKILL')
  t.same(signals, ['ready', 'TERM', 'CONT'], 'one SIGTERM and its SIGCONT: the ladder has no repeats')
  t.ok(took >= stopTimeout - 50, `SIGKILL after stopTimeout (${took} ms)`)
  t.ok(took < 2 * stopTimeout - 100, `within 2 × stopTimeout, as the ladder is [SIGTERM, SIGKILL] (${took} ms)`)
})

leakTest(t, 'stop, killSignal SIGINT: SIGINT, SIGTERM, SIGKILL, stopTimeout apart', async (t, defer) => {
  const stopTimeout = 700
  const { signals, took, signal } = await stopStubborn(defer, { killSignal: 'SIGINT', stopTimeout })
  t.equal(signal, 'SIGKILL')
  t.same(signals, ['ready', 'INT', 'CONT', 'TERM', 'CONT'], 'killSignal, then SIGTERM, each followed by SIGCONT')
  t.ok(took >= 2 * stopTimeout - 50, `2 × stopTimeout before SIGKILL (${took} ms)`)
})

leakTest(t, 'crash loop with the default restart policy: 100, 200, 400, 800, 1600 ms, FAILED at the sixth crash', async (t, defer) => {
  const m = manager(defer)
  m.add('loop', { binPath: ['/bin/sh', '-c', 'exit 3'], socketName: '127.0.0.1:0' })
  const delays: number[] = []
  m.on('restart', (e: SpawnEvents['restart'][0]) => delays.push(e.delay))
  const states = new Set<string>()
  const poll = setInterval(() => states.add(m.status()[0].state), 10)
  defer(() => clearInterval(poll))
  const failed = nextEvent(m, 'failed', () => true, 30_000)
  await m.start()
  const f = await failed
  t.same(delays, [100, 200, 400, 800, 1600], 'doubling from 100 ms; 5 restarts (maxStarts)')
  t.equal(f.reason, 'start-limit-hit: 5 restarts within 10000 ms', 'the reason names the limit')
  const s = m.status()[0]
  t.equal(s.state, 'failed')
  t.equal(s.reason, f.reason, 'status() carries the same reason')
  t.equal(s.lastCrash?.code, 3, 'lastCrash keeps the exit code')
  t.equal(s.restarts, 5)
  t.ok(states.has('backoff'), 'the waits showed as backoff')
  await t.rejects(ensure(m, 'loop', 2000), { code: 'ERR_SPAWN_FAILED' })
  t.equal(s.processes.length, 0, 'nothing runs in FAILED')
})

leakTest(t, 'minProcs 0: idle until wanted, ensure() starts it; above minProcs, idle processes shrink after idleTimeout', async (t, defer) => {
  const m = manager(defer)
  m.add('lazy', { binPath: nodeBackend(), socketName: '127.0.0.1:0', minProcs: 0, maxProcs: 2, maxLoadPerProc: 1, idleTimeout: 300 })
  await m.start()
  t.equal(m.status()[0].state, 'idle', 'nothing started for minProcs 0')
  t.equal(m.status()[0].processes.length, 0)
  await ensure(m, 'lazy')
  t.equal(m.status()[0].state, 'running')
  const src = m.source('lazy')
  // Growth: the only process carries maxLoadPerProc (1) requests in flight, so a second starts.
  const first = src.list()[0]
  src.requestStarted(first.id)
  await listed(src, 2)
  t.equal(m.status()[0].processes.length, 2, 'a second process when every one is at maxLoadPerProc')
  src.requestDone(first.id)
  // Both idle now: both shrink to minProcs 0 after idleTimeout.
  await until(() => m.status()[0].processes.length === 0, 'shrunk to zero')
  await until(() => m.status()[0].state === 'idle', 'idle again')
  t.pass('scaled to zero shows as idle')
})

leakTest(t, 'recycle lead: with maxRequests 10 the successor starts at request 9; the recycle event says 10', async (t, defer) => {
  const m = manager(defer)
  m.add('rec', { binPath: nodeBackend(), socketName: '127.0.0.1:0', maxRequests: 10, idleTimeout: 0 })
  await m.start()
  await ensure(m, 'rec')
  const src = m.source('rec')
  const id = src.list()[0].id
  const procs = (): number => m.status()[0].processes.length
  for (let i = 1; i <= 8; i++) { src.requestStarted(id); src.requestDone(id) }
  t.equal(procs(), 1, 'no successor after 8 requests')
  src.requestStarted(id); src.requestDone(id)
  t.equal(procs(), 2, 'the successor starts with the 9th (10 minus a tenth)')
  await until(() => m.status()[0].processes.some((p) => p.state === 'standby'), 'successor on standby')
  t.same(src.list().map((e) => e.id), [id], 'the standby successor is not in list()')
  const recycled = nextEvent(m, 'recycle')
  src.requestStarted(id)
  t.equal((await recycled).requests, 10, 'retired after exactly maxRequests')
  t.not(src.list()[0]?.id, id, 'the successor took over in the same tick')
  src.requestDone(id)
})

t.test('the wrapper chain of a user-switched spawn with limits and groups: user, outermost first', async (t) => {
  const U = { name: 'pcdspa', id: 2091 }
  if (!existsSync('/usr/bin/setpriv') || !existsSync('/usr/bin/prlimit')) {
    t.pass('no util-linux', { skip: 'setpriv or prlimit not installed' })
    return
  }
  if (!withTestUsers(t, 'user-switched plans', [U])) return
  const launcher = new Launcher({})
  const spec = resolveSpec('x', { binPath: '/bin/sleep 1', socketName: '127.0.0.1:0', user: U.name, group: U.name, groups: 'user', limits: { nofile: 64 } })
  await launcher.validate(spec)
  const p = launcher.plan(spec, spec.argv, {}, undefined)
  const argv = [p.file, ...p.args]
  const at = (s: string): number => argv.findIndex((a) => a === s || a.startsWith(s))
  const order = ['/usr/bin/prlimit', `--reuid=${U.id}`, 'umask 022', '--pdeathsig=SIGTERM', 'unset PWD', '/bin/sleep'].map(at)
  t.notOk(order.includes(-1), `every wrapper is there: ${JSON.stringify(argv)}`)
  t.same([...order].sort((a, b) => a - b), order, 'prlimit, setpriv (user switch), the umask shell, setpriv --pdeathsig, the check shell, the program')
  t.equal(argv[at('--reuid') + 1], `--regid=${U.id}`)
  t.equal(argv[at('--regid') + 1], '--init-groups')
})

leakTest(t, 'FAILED after crashes stops the whole spawn, its healthy processes too (systemd unit semantics)', async (t, defer) => {
  const dir = tempDir(defer)
  const m = manager(defer)
  // The first process takes the lock and serves; every other one exits at once: one slot crash-loops.
  const script = `mkdir ${join(dir, 'lock')} 2>/dev/null || exit 4; while :; do sleep 0.05; done`
  m.add('half', { binPath: ['/bin/sh', '-c', script], socketName: '127.0.0.1:0', minProcs: 2, maxProcs: 2, stopTimeout: 1000, restart: { initialDelay: 200, maxDelay: 400, maxStarts: 3, window: 60_000 } })
  let readyBefore = 0
  m.on('ready', () => { readyBefore++ })
  const failed = nextEvent(m, 'failed')
  await m.start()
  await failed
  t.ok(readyBefore >= 1, 'the lock holder was ready (serving) when the spawn failed')
  m.removeAllListeners('ready')
  const s = m.status()[0]
  t.equal(s.state, 'failed')
  t.equal(s.lastCrash?.code, 4, 'the crashing slot')
  await until(() => m.status()[0].processes.length === 0, 'every process stopped')
  t.same(m.source('half').list(), [], 'nothing routable: the healthy process was stopped too')
  await t.rejects(ensure(m, 'half', 2000), { code: 'ERR_SPAWN_FAILED' })
})
