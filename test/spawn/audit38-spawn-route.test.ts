/**
 * What the gateway's routes see of a spawn that a reload replaces on its fixed port (SpawnRoute,
 * src/gateway/spawn-set.ts): while the old process is stopped first, nothing is routable and a
 * request waits instead of failing ("spawn app is shutting down" before); once the new process is
 * up the old routes list it, its id tagged with the turn (`app#0@1`: both managers number their
 * processes from 0), and each request is counted on the process it ran on — a late end of a
 * request on the old `app#0` never touches the new `app#0`.
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { backendScript } from './fixtures/manager.js'
import { waitFor } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { SpawnSet } from '../../src/gateway/spawn-set.js'
import type { SpawnLayerConfig } from '../../src/config/spawns.js'
import { silentLogger } from '../../src/logger.js'

leakTest(t, 'the old routes of a spawn replaced on its fixed port hold, then follow the new process', async (t, defer) => {
  const port = await freePort()
  // The fixture backend listens on fd 0: the host binds the port, which the old process holds until it exits.
  const config = (tag: string): SpawnLayerConfig => ({
    spawns: { app: { binPath: [process.execPath, backendScript], socketName: `127.0.0.1:${port}`, stopTimeout: '10s', environment: { TAG: tag } } },
  })
  const first = await SpawnSet.empty(silentLogger).next(config('v1'))
  let current = first.set
  defer(() => current.close())
  const old = first.set.sources().app
  // As a pool follows it.
  defer(old.subscribe(() => {}))
  await old.ensure(AbortSignal.timeout(10_000))
  const [p0] = old.list()
  t.equal(p0?.id, 'app#0')
  // A request in flight on it: the reload's stop of the old process waits for it (stopTimeout).
  old.requestStarted?.(p0.id)

  const reload = first.set.next(config('v2'), new AbortController().signal)
  t.ok(await waitFor(() => first.set.status()[0].state === 'stopping', 10_000), 'the old spawn is being stopped first')
  t.same(old.list(), [], 'nothing routable meanwhile')
  let outcome = 'waiting'
  const held = old.ensure(AbortSignal.timeout(30_000)).then(() => { outcome = 'ready' }, (err: Error) => { outcome = err.message })
  // The old request ends: the old process stops, then the new one starts.
  old.requestDone?.(p0.id)
  const { set, retired } = await reload
  current = set
  defer(() => first.set.retire(retired))
  await held
  t.equal(outcome, 'ready', 'the request that arrived meanwhile waited for the new process')

  const [p1] = old.list()
  t.equal(p1?.id, 'app#0@1', 'the old routes list the new process, its id tagged with the turn')
  t.equal(p1?.address, `127.0.0.1:${port}`)
  const inflight = (): number | undefined => set.status()[0].processes[0]?.inflight
  old.requestStarted?.(p1.id)
  t.equal(inflight(), 1, 'a request of the old routes counts on the new process')
  old.requestDone?.(p0.id)
  t.equal(inflight(), 1, 'a late end on the old app#0 leaves the new app#0 alone')
  old.requestDone?.(p1.id)
  t.equal(inflight(), 0)
})
