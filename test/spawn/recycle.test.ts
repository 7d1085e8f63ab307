import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, nextEvent, nodeBackend } from './fixtures/manager.js'
import { drive } from './fixtures/drive.js'
import { get } from './fixtures/http.js'
import { childrenOf } from '../helpers/leaks.js'

leakTest(t, 'maxRequests recycles make-before-break: 0 failed requests under concurrent load', async (t, defer) => {
  const m = manager(defer)
  m.add('rc', { binPath: nodeBackend(), socketName: '127.0.0.1:0', maxRequests: 5, minProcs: 2, maxProcs: 2, idleTimeout: 0 })
  let recycles = 0
  let maxChildren = 0
  m.on('recycle', () => { recycles++ })
  m.on('spawn', () => { maxChildren = Math.max(maxChildren, childrenOf().length) })
  await m.start()
  await ensure(m, 'rc')
  const src = m.source('rc')
  const res = await drive(src, 200, 20, async (address) => {
    const r = await get(address, '/?delay=2')
    if (r.status !== 200) throw new Error(`status ${r.status}`)
    return r.body
  })
  t.equal(res.failed, 0, 'no failed request', { errors: res.errors })
  t.equal(res.ok, 200)
  const pids = new Set(res.bodies)
  t.ok(pids.size >= 40, `>= 40 distinct backend pids (got ${pids.size})`)
  t.ok(recycles >= 38, `recycle events (${recycles})`)
  // 2 routable + those still draining their last requests + at most 2 replacements starting.
  t.ok(maxChildren <= 2 + 20 + 2, `live children bounded (max seen ${maxChildren})`)
  for (const p of m.status()[0].processes) t.ok(p.requests <= 5 + 20, 'no process far past maxRequests')
})

leakTest(t, 'a process handed maxRequests leaves list() at once, is held until its successor is up, and stops when its in-flight reaches 0', async (t, defer) => {
  const m = manager(defer)
  m.add('one', { binPath: nodeBackend(), socketName: '127.0.0.1:0', maxRequests: 2 })
  await m.start()
  await ensure(m, 'one')
  const src = m.source('one')
  const [ep] = src.list()
  let notified = 0
  const off = src.subscribe(() => { notified++ })
  defer(off)
  src.requestStarted(ep.id)
  src.requestStarted(ep.id)
  t.notOk(src.list().some((e) => e.id === ep.id), 'left list()')
  t.ok(notified > 0, 'subscribers notified')
  const held = m.status()[0].processes.find((p) => p.id === ep.id)
  t.equal(held?.state, 'held', 'held, not stopped: its successor is still booting')
  t.equal(held?.inflight, 2)
  const exited = nextEvent(m, 'exit', (e) => e.id === ep.id)
  await ensure(m, 'one')
  const old = m.status()[0].processes.find((p) => p.id === ep.id)
  t.equal(old?.state, 'draining', 'retired once the successor is ready')
  t.equal(old?.inflight, 2)
  t.equal((await get(ep.address)).status, 200, 'draining process still serves its in-flight requests')
  src.requestDone(ep.id)
  t.equal(m.status()[0].processes.find((p) => p.id === ep.id)?.state, 'draining', 'still draining with 1 in flight')
  src.requestDone(ep.id)
  const e = await exited
  t.equal(e.expected, true, 'stopped by the manager, not counted as a crash')
  t.equal(m.status()[0].processes.length, 1, 'replacement serving')
  t.equal(m.status()[0].processes[0].restarts, 0, 'recycling is not a restart')
})
