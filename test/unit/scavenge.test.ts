/**
 * BodyScavenger: a young-generation collection every `everyBytes` a watched client socket moves
 * (read + written), counted from the sockets' counters on a tick and when a body ends; nothing
 * while no body is watched. gcFromV8 hands out V8's real gc() without touching globalThis.
 */
import t from 'tap'
import { PerformanceObserver, constants } from 'node:perf_hooks'
import { BodyScavenger, gcFromV8, type GcFunction } from '../../src/core/scavenge.js'

function spy (): { gc: GcFunction, calls: unknown[] } {
  const calls: unknown[] = []
  return { gc: (o) => { calls.push(o) }, calls }
}

const socket = (): { bytesRead: number, bytesWritten: number } => ({ bytesRead: 0, bytesWritten: 0 })

t.test('one minor collection per `everyBytes` moved, both directions counted', async (t) => {
  const { gc, calls } = spy()
  const s = new BodyScavenger(gc, 1000, 60_000)
  const a = socket()
  a.bytesRead = 5000 // before the watch: not counted
  s.watch(a)
  t.ok(s.running, 'the tick runs while a body is watched')
  a.bytesRead += 600
  s.tick()
  t.equal(calls.length, 0, '600 B: not yet')
  a.bytesWritten += 500
  s.tick()
  t.same(calls, [{ type: 'minor' }], '1100 B: one scavenge, of the young generation')
  a.bytesRead += 999
  s.tick()
  t.equal(calls.length, 1, 'the count starts again from zero after a scavenge')
  const b = socket()
  s.watch(b)
  b.bytesWritten += 1
  s.tick()
  t.equal(calls.length, 2, 'bytes of all watched sockets add up')
  t.equal(s.requested, 2)
  s.stop()
})

t.test('a body that ends between ticks still counts; the tick stops with the last body', async (t) => {
  const { gc, calls } = spy()
  const s = new BodyScavenger(gc, 1000, 60_000)
  const a = socket()
  const b = socket()
  s.watch(a)
  s.watch(a)
  t.equal(s.watching, 1, 'a socket is watched once')
  s.watch(b)
  a.bytesRead += 700
  s.unwatch(a)
  t.equal(calls.length, 0)
  t.ok(s.running, 'still running for the other body')
  b.bytesRead += 300
  s.unwatch(b)
  t.equal(calls.length, 1, 'the ended bodies made the threshold')
  t.notOk(s.running, 'no timer once nothing is watched')
  s.unwatch(b)
  t.equal(s.watching, 0, 'unwatching twice is harmless')
})

t.test('the timer ticks by itself while a body is watched', async (t) => {
  let fired: () => void = () => {}
  // The scavenger's timer is unref'd (it must not keep a server's process alive): a deadline keeps
  // the loop running until the call, and fails the test if it never comes.
  let deadline: NodeJS.Timeout | undefined
  const called = new Promise<void>((resolve, reject) => {
    fired = () => { clearTimeout(deadline); resolve() }
    deadline = setTimeout(() => reject(new Error('no tick within 5 s')), 5000)
  })
  const s = new BodyScavenger(() => fired(), 10, 1)
  const a = socket()
  s.watch(a)
  a.bytesRead += 10
  await called
  t.equal(s.requested, 1)
  s.unwatch(a)
  t.notOk(s.running)
})

t.test('gcFromV8: V8\'s gc() runs a minor collection, and globalThis gets no gc', async (t) => {
  const had = typeof (globalThis as { gc?: unknown }).gc
  const gc = gcFromV8()
  t.equal(typeof gc, 'function')
  t.equal(typeof (globalThis as { gc?: unknown }).gc, had, 'globalThis unchanged')
  const minor = new Promise<void>((resolve, reject) => {
    // Node hands GC entries over on a later turn of the loop, and only when the loop turns for
    // something else: poll every 5 ms, up to a deadline.
    const poll = setInterval(() => {}, 5)
    const deadline = setTimeout(() => { clearInterval(poll); obs.disconnect(); reject(new Error('no minor GC within 5 s')) }, 5000)
    const obs = new PerformanceObserver((list) => {
      if (list.getEntries().some((e) => (e as unknown as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR)) {
        obs.disconnect()
        clearInterval(poll)
        clearTimeout(deadline)
        resolve()
      }
    })
    obs.observe({ entryTypes: ['gc'] })
  })
  gc({ type: 'minor' })
  await minor
  t.pass('a minor GC was observed')
  t.equal(BodyScavenger.exposedGc(), had === 'function' ? (globalThis as { gc?: GcFunction }).gc : null, 'exposedGc reads only globalThis')
})

t.test('a gc function that throws turns scavenging off instead of throwing out of a timer', async (t) => {
  let calls = 0
  const s = new BodyScavenger(() => { calls++; throw new Error('not a gc') }, 10, 60_000)
  const a = socket()
  s.watch(a)
  a.bytesRead += 10
  t.doesNotThrow(() => s.tick())
  t.equal(calls, 1)
  t.ok(s.disabled)
  t.notOk(s.running, 'the timer is gone')
  s.watch(a)
  a.bytesRead += 100
  s.tick()
  s.unwatch(a)
  t.equal(calls, 1, 'never called again')
})
