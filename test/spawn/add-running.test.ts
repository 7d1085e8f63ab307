/**
 * add() on a manager that already started: what start() would reject must not become an unhandled
 * rejection (Node ends the process on one), but an error of add() or a FAILED spawn.
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, nextEvent, nodeBackend } from './fixtures/manager.js'

function watchRejections (defer: (fn: () => unknown) => void): unknown[] {
  const seen: unknown[] = []
  const on = (reason: unknown): void => { seen.push(reason) }
  process.prependListener('unhandledRejection', on)
  defer(() => process.off('unhandledRejection', on))
  return seen
}

leakTest(t, 'add() after start(): an unknown dependency or a cycle is thrown by add(), nothing is registered', async (t, defer) => {
  const rejections = watchRejections(defer)
  const m = manager(defer)
  m.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0' })
  await m.start()
  t.throws(() => m.add('late', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['nope'] }), { code: 'ERR_SPAWN_UNKNOWN_DEPENDENCY' })
  t.throws(() => m.add('self', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['self'] }), { code: 'ERR_SPAWN_DEPENDENCY_CYCLE' })
  t.same(m.status().map((s) => s.name), ['web'], 'refused spawns are not registered')
  // A valid late spawn depending on a running one still comes up.
  m.add('late', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['web'] })
  await ensure(m, 'late')
  // Give a stray rejection a chance to surface (it is reported after the microtask queue drains).
  await new Promise<void>((resolve) => setImmediate(resolve))
  t.same(rejections, [], 'no unhandled rejection')
})

leakTest(t, 'add() after start(): a spawn refused by the start checks goes FAILED with the reason', async (t, defer) => {
  const rejections = watchRejections(defer)
  const m = manager(defer)
  await m.start()
  const failed = nextEvent(m, 'failed', (e) => e.spawn === 'ghost', 5000)
  m.add('ghost', { binPath: nodeBackend(), socketName: '127.0.0.1:0', tenant: 'nobody-configured' })
  const e = await failed
  t.match(e.reason, /ERR_IDENTITY_UNKNOWN_TENANT/, 'reason carries the code')
  const st = m.status().find((s) => s.name === 'ghost')
  t.equal(st?.state, 'failed')
  t.same(st?.processes, [], 'nothing started')
  await t.rejects(ensure(m, 'ghost', 2000), { code: 'ERR_SPAWN_FAILED' })
  await new Promise<void>((resolve) => setImmediate(resolve))
  t.same(rejections, [], 'no unhandled rejection')
})

leakTest(t, 'a cwd that does not exist is named in the failure, not reported as the program missing', async (t, defer) => {
  const m = manager(defer)
  m.add('nocwd', { binPath: nodeBackend(), socketName: '127.0.0.1:0', cwd: '/nonexistent-pc-cwd', restart: { maxStarts: 0 } })
  const failed = nextEvent(m, 'failed', (e) => e.spawn === 'nocwd', 10_000)
  await m.start().catch(() => {})
  const e = await failed
  t.match(e.reason, /cannot exec .*: cwd \/nonexistent-pc-cwd is not a directory/, e.reason)
})
