/**
 * Scale-down must not count a slot that has no process: one whose process crashed and whose
 * restart waits out its backoff. minProcs 1, maxProcs 2: the pool grew to two processes, one was
 * killed (SIGKILL, as the OOM killer does) and waits `restart.initialDelay` for its restart; the
 * other, idle past idleTimeout, is the only process left and must stay. Before, it was shrunk
 * (two "active" slots > minProcs 1), leaving nothing routable until the restart: requests waited
 * out the backoff (up to maxDelay, 15 s by default) or failed at their timeout. Real node backends.
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { ensure, listed, manager, nextEvent, nodeBackend } from './fixtures/manager.js'
import { waitFor } from '../helpers/leaks.js'

const IDLE_MS = 150
const BACKOFF_MS = 30_000

leakTest(t, 'an idle process is not shrunk below minProcs while the other slot waits out a crash backoff', async (t, defer) => {
  const m = manager(defer)
  m.add('pool', { binPath: nodeBackend(), socketName: '127.0.0.1:0', handoff: 'self', minProcs: 1, maxProcs: 2, maxLoadPerProc: 1, idleTimeout: IDLE_MS, restart: { initialDelay: BACKOFF_MS, maxDelay: BACKOFF_MS } })
  await m.start()
  await ensure(m, 'pool')
  const src = m.source('pool')
  const first = src.list()[0]
  // Busy: the pool grows to its second process.
  src.requestStarted(first.id)
  await listed(src, 2)
  const second = src.list().find((e) => e.id !== first.id)
  if (second === undefined) throw new Error('no second process')
  src.requestStarted(second.id)
  src.requestDone(first.id)
  // The first one is killed; its restart is due only after the backoff.
  const firstPid = m.status()[0].processes.find((p) => p.id === first.id)?.pid as number
  const restart = nextEvent(m, 'restart')
  process.kill(firstPid, 'SIGKILL')
  const r = await restart
  t.equal(r.delay, BACKOFF_MS, 'its restart waits out the backoff')
  await listed(src, 1)
  t.same(src.list().map((e) => e.id), [second.id], 'the second process serves')
  // Its request ends: idle from now on. Many idleTimeouts later it still serves.
  const exits: string[] = []
  m.on('exit', (e) => exits.push(e.id))
  src.requestDone(second.id)
  const shrunk = await waitFor(() => src.list().length === 0 || exits.includes(second.id), IDLE_MS * 10)
  t.notOk(shrunk, 'the only live process is not shrunk while the crashed slot waits for its restart')
  t.same(src.list().map((e) => e.id), [second.id], 'still routable')
  const t0 = Date.now()
  await ensure(m, 'pool', 5000)
  t.ok(Date.now() - t0 < 1000, 'a request finds it at once, not after the backoff')
  t.equal(m.status()[0].state, 'running')
})
