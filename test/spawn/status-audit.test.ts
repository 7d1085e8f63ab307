/**
 * status() against the processes that really exist (/proc), through a crash with backoff, FAILED,
 * clear(), growth under load and idle shrink; and the window after a crash while the crashed
 * process's group is still being stopped (a member that ignores SIGTERM keeps it alive until the
 * SIGKILL step, stopTimeout later): the spawn is not `idle` then, and a recycle's successor on
 * standby takes over at once instead of waiting, out of rotation, for that group to die.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest, type Defer } from './fixtures/guard.js'
import { ensure, listed, manager, nextEvent, nodeBackend, tempDir } from './fixtures/manager.js'
import { get } from './fixtures/http.js'
import { alive, childrenOf, processGroup, waitFor } from '../helpers/leaks.js'
import type { SpawnManager } from '../../src/spawn/manager.js'

/** Node backend on fd 0 that first forks a shell ignoring SIGTERM into its own process group. */
const STUBBORN = `
import http from 'node:http'
import { spawn } from 'node:child_process'
spawn('/bin/sh', ['-c', 'trap "" TERM; while :; do sleep 0.1; done'], { stdio: 'ignore' })
http.createServer((req, res) => res.end(String(process.pid))).listen({ fd: 0 })
`

function stubborn (defer: Defer): string[] {
  const dir = tempDir(defer)
  writeFileSync(join(dir, 'stubborn.mjs'), STUBBORN)
  return [process.execPath, join(dir, 'stubborn.mjs')]
}

const LIVE_STATES = new Set(['starting', 'ready', 'standby', 'held', 'draining'])

/**
 * What status() says that /proc contradicts: a process in a live state whose pid is gone, an
 * exited one still listed, a child of ours not listed, a spawn state its processes contradict.
 */
function contradictions (m: SpawnManager): string[] {
  const out: string[] = []
  const listedPids = new Set<number>()
  for (const s of m.status()) {
    for (const p of s.processes) {
      if (p.pid !== null) listedPids.add(p.pid)
      if (p.state === 'exited') out.push(`${p.id}: exited, still listed`)
      if (p.pid !== null && LIVE_STATES.has(p.state) && !alive(p.pid)) out.push(`${p.id}: ${p.state} but pid ${p.pid} is gone`)
    }
    const routable = m.source(s.name).list().length
    const ready = s.processes.filter((p) => p.state === 'ready').length
    if (ready !== routable) out.push(`${s.name}: ${ready} ready in status(), ${routable} in list()`)
    if (s.state === 'running' && routable === 0) out.push(`${s.name}: running with nothing routable`)
    if (s.state === 'idle' && s.processes.some((p) => p.state !== 'draining' && p.state !== 'stopping')) out.push(`${s.name}: idle with a process ${s.processes.map((p) => p.state).join(',')}`)
  }
  for (const c of childrenOf()) {
    if (c.state !== 'Z' && !listedPids.has(c.pid)) out.push(`child ${c.pid} (${c.comm}) not in status()`)
  }
  return out
}

leakTest(t, 'crash, backoff, FAILED, clear(), growth and idle shrink: status() matches /proc at each step', async (t, defer) => {
  const m = manager(defer)
  m.add('a', { binPath: nodeBackend(), socketName: '127.0.0.1:0', minProcs: 1, maxProcs: 3, maxLoadPerProc: 1, idleTimeout: 200, stopTimeout: 2000, restart: { initialDelay: 300, maxDelay: 300, maxStarts: 2, window: 60_000 } })
  await m.start()
  await ensure(m, 'a')
  t.same(contradictions(m), [], 'started')

  const first = m.status()[0].processes[0]
  const crashed = nextEvent(m, 'exit', (e) => e.id === first.id)
  process.kill(first.pid as number, 'SIGKILL')
  await crashed
  t.same(contradictions(m), [], 'in backoff')
  t.equal(m.status()[0].state, 'backoff')
  t.same(m.status()[0].processes, [], 'no process while the restart waits')
  await ensure(m, 'a')
  t.same(contradictions(m), [], 'restarted')

  // Growth: the one process busy (maxLoadPerProc 1), a second starts.
  const src = m.source('a')
  const [ep] = src.list()
  src.requestStarted(ep.id)
  await listed(src, 2)
  t.same(contradictions(m), [], 'grown to two')
  t.equal(m.status()[0].processes.filter((p) => p.state === 'ready').length, 2)
  // Idle shrink: the extra one stops after idleTimeout, back to minProcs.
  src.requestDone(ep.id)
  t.ok(await waitFor(() => m.status()[0].processes.length === 1, 10_000), 'shrunk to minProcs')
  t.same(contradictions(m), [], 'shrunk')

  // Two more crashes: over maxStarts 2 within the window, FAILED.
  const failed = nextEvent(m, 'failed')
  for (let i = 0; i < 2; i++) {
    const p = m.status()[0].processes.find((x) => x.state === 'ready')
    if (p === undefined) break
    const e = nextEvent(m, 'exit', (x) => x.id === p.id)
    process.kill(p.pid as number, 'SIGKILL')
    await e
    t.same(contradictions(m), [], `after crash ${i + 2}`)
    if (i === 0) await ensure(m, 'a')
  }
  await failed
  t.equal(m.status()[0].state, 'failed')
  t.same(m.status()[0].processes, [], 'FAILED: nothing runs')
  t.same(contradictions(m), [], 'FAILED')
  m.clear('a')
  t.same(contradictions(m), [], 'right after clear()')
  await ensure(m, 'a')
  t.same(contradictions(m), [], 'running again after clear()')
  t.equal(m.status()[0].state, 'running')
})

leakTest(t, 'a crashed process whose group is still being stopped: the spawn is in backoff, not idle', async (t, defer) => {
  const m = manager(defer)
  m.add('a', { binPath: stubborn(defer), socketName: '127.0.0.1:0', minProcs: 1, stopTimeout: 5000, restart: { initialDelay: 100 } })
  await m.start()
  await ensure(m, 'a')
  const [ep] = m.source('a').list()
  await get(ep.address)
  const pid = m.status()[0].processes[0].pid as number
  t.ok(await waitFor(() => processGroup(pid).length >= 2, 10_000), 'the backend forked its stubborn member')
  const exited = nextEvent(m, 'exit', (e) => e.id === ep.id, 30_000)
  process.kill(pid, 'SIGKILL')
  t.ok(await waitFor(() => m.status()[0].processes[0]?.state === 'stopping', 10_000), 'leader gone, group being stopped')
  const members = processGroup(pid).filter((x) => x.state !== 'Z')
  t.ok(members.length > 0, `group members still alive (${members.map((x) => x.pid).join(',')})`)
  t.equal(m.status()[0].state, 'backoff', 'a crash waiting to be restarted, not idle')
  t.same(contradictions(m), [])
  t.equal((await exited).expected, false)
  await ensure(m, 'a', 30_000)
  t.equal(m.status()[0].state, 'running')
})

leakTest(t, 'the predecessor of a successor on standby crashes: the successor takes over at once, not after the crashed group is stopped', async (t, defer) => {
  const m = manager(defer)
  m.add('a', { binPath: stubborn(defer), socketName: '127.0.0.1:0', minProcs: 1, maxProcs: 1, maxRequests: 10, stopTimeout: 5000, restart: { initialDelay: 100 } })
  let restarts = 0
  m.on('restart', () => { restarts++ })
  await m.start()
  await ensure(m, 'a')
  const src = m.source('a')
  const [old] = src.list()
  const successorReady = nextEvent(m, 'ready', (e) => e.id !== old.id)
  for (let i = 0; i < 9; i++) {
    src.requestStarted(old.id)
    try { await get(old.address) } finally { src.requestDone(old.id) }
  }
  const successor = await successorReady
  t.same(m.status()[0].processes.map((p) => [p.id, p.state]), [[old.id, 'ready'], [successor.id, 'standby']], 'successor on standby')
  const oldPid = m.status()[0].processes[0].pid as number
  t.ok(await waitFor(() => processGroup(oldPid).length >= 2, 10_000), 'the old backend forked its stubborn member')
  const exited = nextEvent(m, 'exit', (e) => e.id === old.id, 30_000)
  process.kill(oldPid, 'SIGKILL')
  t.ok(await waitFor(() => src.list().some((e) => e.id === successor.id), 30_000), 'the successor enters rotation')
  t.same(src.list().map((e) => e.id), [successor.id], 'the successor alone is in rotation')
  const members = processGroup(oldPid).filter((x) => x.state !== 'Z')
  t.ok(members.length > 0, `while the crashed group is still being stopped (${members.map((x) => x.pid).join(',')})`)
  const st = m.status()[0]
  t.equal(st.state, 'running')
  t.same(st.processes.map((p) => [p.id, p.state]), [[old.id, 'stopping'], [successor.id, 'ready']])
  t.same(st.processes.find((p) => p.id === successor.id)?.lastExit?.signal, 'SIGKILL', 'the crash is the slot\'s last exit')
  t.same(contradictions(m), [])
  t.equal((await exited).expected, false, 'still reported as a crash')
  t.equal(restarts, 0, 'no restart: the successor took the slot')
  t.equal(m.status()[0].processes.length, 1, 'no second replacement')
  t.equal((await get(successor.address)).body, String(successor.pid))
})

leakTest(t, 'idle shrink to zero while the group is still being stopped: idle, not backoff', async (t, defer) => {
  const m = manager(defer)
  m.add('a', { binPath: stubborn(defer), socketName: '127.0.0.1:0', minProcs: 0, idleTimeout: 200, stopTimeout: 3000 })
  await m.start()
  await ensure(m, 'a')
  const src = m.source('a')
  const [ep] = src.list()
  src.requestStarted(ep.id)
  try { await get(ep.address) } finally { src.requestDone(ep.id) }
  const pid = m.status()[0].processes[0].pid as number
  const exited = nextEvent(m, 'exit', (e) => e.id === ep.id, 30_000)
  t.ok(await waitFor(() => m.status()[0].processes[0]?.state === 'stopping', 10_000), 'stopped after idleTimeout')
  t.ok(processGroup(pid).some((x) => x.state !== 'Z'), 'its group is still being stopped')
  t.equal(m.status()[0].state, 'idle', 'scaled to zero on purpose: idle')
  t.same(contradictions(m), [])
  t.equal((await exited).expected, true)
  t.equal(m.status()[0].state, 'idle')
})
