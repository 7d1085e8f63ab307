import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, nextEvent, nodeBackend } from './fixtures/manager.js'
import { get } from './fixtures/http.js'
import { alive, processGroup, waitFor } from '../helpers/leaks.js'
import type { Clock, SpawnEvents } from '../../src/spawn/types.js'

type Restart = SpawnEvents['restart'][0]

leakTest(t, 'unexpected exit: restart with backoff, status shows restarts and lastExit', async (t, defer) => {
  const m = manager(defer)
  m.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0', restart: { initialDelay: 20 } })
  await m.start()
  await ensure(m, 'web')
  const before = m.status()[0].processes[0]
  const restarted = nextEvent(m, 'restart')
  const ready = nextEvent(m, 'ready', (e) => e.pid !== before.pid)
  process.kill(before.pid as number, 'SIGKILL')
  t.equal((await restarted).delay, 20, 'first restart waits initialDelay')
  const r = await ready
  t.equal((await get(r.address)).body, String(r.pid), 'new process serves')
  const now = m.status()[0].processes[0]
  t.equal(now.restarts, 1)
  t.equal(now.lastExit?.signal, 'SIGKILL')
})

leakTest(t, 'crash loop: exponential backoff, then FAILED until clear()', async (t, defer) => {
  const m = manager(defer)
  m.add('bad', { binPath: nodeBackend('exit1'), socketName: '127.0.0.1:0', restart: { initialDelay: 20, maxDelay: 80, maxStarts: 4, window: 60_000 } })
  const delays: number[] = []
  m.on('restart', (e: Restart) => delays.push(e.delay))
  const failed = nextEvent(m, 'failed')
  await m.start()
  const f = await failed
  t.same(delays, [20, 40, 80, 80], 'doubling, capped at maxDelay')
  t.match(f.reason, /^start-limit-hit/)
  t.equal(m.status()[0].state, 'failed')
  await t.rejects(ensure(m, 'bad'), { code: 'ERR_SPAWN_FAILED' })
  let spawns = 0
  m.on('spawn', () => { spawns++ })
  const exit = nextEvent(m, 'exit')
  m.clear('bad')
  await exit
  t.equal(spawns, 1, 'clear() starts exactly one new process')
  await nextEvent(m, 'restart')
  t.equal(delays[4], 20, 'backoff history was reset by clear()')
})

leakTest(t, 'injected clock drives backoff and the stable-uptime reset', async (t, defer) => {
  // Virtual time runs 20x faster than the wall clock: a 3.2 s backoff series takes 160 ms.
  const start = Date.now()
  const clock: Clock = {
    now: () => start + (Date.now() - start) * 20,
    setTimeout: (fn, ms) => setTimeout(fn, ms / 20),
    clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  }
  const m = manager(defer, { clock })
  m.add('fast', { binPath: nodeBackend('exit1'), socketName: '127.0.0.1:0', startTimeout: 60_000, restart: { initialDelay: 200, maxDelay: 1600, maxStarts: 5, window: 600_000 } })
  const delays: number[] = []
  m.on('restart', (e: Restart) => delays.push(e.delay))
  const failed = nextEvent(m, 'failed')
  await m.start()
  await failed
  t.same(delays, [200, 400, 800, 1600, 1600])
})

leakTest(t, 'stop reaches the whole process group (grandchildren included)', async (t, defer) => {
  const m = manager(defer)
  m.add('forker', { binPath: nodeBackend('fork'), socketName: '127.0.0.1:0' })
  await m.start()
  await ensure(m, 'forker')
  const pid = m.status()[0].processes[0].pid as number
  t.ok(await waitFor(() => processGroup(pid).length === 2, 5000), 'leader + sleep grandchild in one group')
  await m.close()
  t.same(processGroup(pid).filter((p) => p.state !== 'Z'), [], 'no member of the group survives')
})

leakTest(t, 'a child ignoring SIGTERM is SIGKILLed after stopTimeout', async (t, defer) => {
  const m = manager(defer)
  // handoff self: ready means listening, so its SIGTERM handler is installed by then.
  m.add('stubborn', { binPath: nodeBackend('ignore-term'), socketName: '127.0.0.1:0', handoff: 'self', stopTimeout: 300 })
  await m.start()
  await ensure(m, 'stubborn')
  const exit = nextEvent(m, 'exit')
  const t0 = Date.now()
  await m.close()
  const e = await exit
  t.equal(e.signal, 'SIGKILL')
  t.equal(e.expected, true)
  t.ok(Date.now() - t0 >= 300, 'waited the grace period first')
})

leakTest(t, 'health check restarts a process that stopped accepting', async (t, defer) => {
  const m = manager(defer)
  m.add('hc', { binPath: nodeBackend(), socketName: '127.0.0.1:0', handoff: 'self', restart: { initialDelay: 10 }, healthCheck: { type: 'connect', interval: 50, timeout: 2000, failures: 2 } })
  await m.start()
  await ensure(m, 'hc')
  const [ep] = m.source('hc').list()
  const oldPid = m.status()[0].processes[0].pid
  const ready = nextEvent(m, 'ready', (e) => e.pid !== oldPid)
  await get(ep.address, '/hang')
  const r = await ready
  t.not(r.pid, oldPid, 'replaced')
  t.equal(m.status()[0].processes[0].restarts, 1, 'counted as a restart')
  t.notOk(alive(oldPid as number), 'hung process is gone')
})

leakTest(t, 'start failures: missing binary and not-ready-in-time end in FAILED with the cause', async (t, defer) => {
  const m = manager(defer)
  m.add('missing', { binPath: '/nonexistent/bin', socketName: '127.0.0.1:0', restart: { initialDelay: 5, maxStarts: 1 } })
  m.add('slow', { binPath: nodeBackend('slow-listen'), socketName: '127.0.0.1:0', handoff: 'self', startTimeout: 50, restart: { initialDelay: 5, maxStarts: 1 } })
  const reasons = new Map<string, string>()
  m.on('failed', (e) => reasons.set(e.spawn, e.reason))
  await m.start()
  t.ok(await waitFor(() => reasons.size === 2, 10_000), 'both failed')
  t.match(reasons.get('missing'), /cannot exec \/nonexistent\/bin/)
  t.match(reasons.get('slow'), /not connectable .* within 50 ms/)
  await t.rejects(ensure(m, 'slow'), { code: 'ERR_SPAWN_FAILED' })
})

leakTest(t, 'a program a wrapper cannot exec (limits: prlimit) fails with the cause, not a bare exit 127', async (t, defer) => {
  const m = manager(defer)
  const restart = { initialDelay: 5, maxStarts: 1 }
  // In a directory that exists: the default cwd is the program's directory.
  m.add('missing', { binPath: '/usr/bin/nonexistent-pc-program', socketName: '127.0.0.1:0', limits: { nofile: 256 }, restart })
  const dir = mkdtempSync(join(tmpdir(), 'pc-noexec-'))
  defer(() => rmSync(dir, { recursive: true, force: true }))
  const plain = join(dir, 'plain')
  writeFileSync(plain, 'not a program\n', { mode: 0o644 })
  m.add('plain', { binPath: plain, socketName: '127.0.0.1:0', limits: { nofile: 256 }, restart })
  const reasons = new Map<string, string>()
  m.on('failed', (e) => reasons.set(e.spawn, e.reason))
  await m.start()
  t.ok(await waitFor(() => reasons.size === 2, 10_000), 'both failed')
  t.match(reasons.get('missing'), /cannot exec \/usr\/bin\/nonexistent-pc-program: exit 127 .*not found/)
  t.match(reasons.get('plain'), new RegExp(`cannot exec ${plain}: exit 126 .*not executable`))
  const crash = m.status().find((s) => s.name === 'missing')?.lastCrash
  t.match(crash, { code: 127, error: /cannot exec \/usr\/bin\/nonexistent-pc-program/ })
})

leakTest(t, 'dependsOn: dependents start after, and wait visibly on a failed dependency', async (t, defer) => {
  const m = manager(defer)
  m.add('db', { binPath: nodeBackend(), socketName: '127.0.0.1:0' })
  m.add('app', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['db'] })
  // handoff self: it exits before it listens, so it never counts as running.
  m.add('broken', { binPath: nodeBackend('exit1'), socketName: '127.0.0.1:0', handoff: 'self', restart: { initialDelay: 5, maxStarts: 1 } })
  m.add('held', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['broken'] })
  const order: string[] = []
  m.on('spawn', (e) => order.push(`spawn ${e.spawn}`))
  m.on('ready', (e) => order.push(`ready ${e.spawn}`))
  await m.start()
  await ensure(m, 'app')
  t.ok(order.indexOf('ready db') < order.indexOf('spawn app'), 'app spawned only after db was ready', { order })
  await nextEvent(m, 'failed', (e) => e.spawn === 'broken')
  const held = m.status().find((s) => s.name === 'held')
  t.equal(held?.state, 'waiting')
  t.equal(held?.reason, 'waiting for broken (failed)')
  await t.rejects(m.source('held').ensure(AbortSignal.timeout(100)), { code: 'ERR_SPAWN_FAILED', message: /waits for broken, which is FAILED/ })
  t.notOk(order.includes('spawn held'), 'never spawned')
})

t.test('dependency cycles and unknown dependencies are refused', async (t) => {
  const { SpawnManager } = await import('../../src/spawn/manager.js')
  const m = new SpawnManager()
  m.add('a', { binPath: 'x', socketName: '127.0.0.1:0', dependsOn: ['b'] })
  m.add('b', { binPath: 'x', socketName: '127.0.0.1:0', dependsOn: ['a'] })
  await t.rejects(m.start(), { code: 'ERR_SPAWN_DEPENDENCY_CYCLE' })
  const n = new SpawnManager()
  n.add('a', { binPath: 'x', socketName: '127.0.0.1:0', dependsOn: ['nope'] })
  await t.rejects(n.start(), { code: 'ERR_SPAWN_UNKNOWN_DEPENDENCY' })
  await m.close()
  await n.close()
})
