/**
 * Idle scale-down leaves a recycle under way alone (group.ts armIdle): a process held at
 * maxRequests, or one whose successor started ahead of its limit, that goes idle while the
 * successor boots (a boot longer than idleTimeout) is not shrunk together with that successor;
 * the successor comes up and takes the slot, and is shrunk in its turn if it stays idle (above
 * minProcs). Before, both were stopped at idleTimeout: a wasted boot, the next request a cold
 * start. The app (fixtures/gated.ts) boots its first start at once and holds every later one
 * before listen() until the test writes `go`; each start appends its pid to `starts`.
 */
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest, type Defer } from './fixtures/guard.js'
import { GATED } from './fixtures/gated.js'
import { ensure, manager, nextEvent, tempDir } from './fixtures/manager.js'
import { get } from './fixtures/http.js'
import { waitFor } from '../helpers/leaks.js'
import type { SpawnSource } from '../../src/spawn/manager.js'
import type { SpawnSpec } from '../../src/spawn/types.js'

const IDLE_MS = 200

async function serveOne (src: SpawnSource): Promise<void> {
  const [ep] = src.list()
  if (ep === undefined) throw new Error('nothing routable')
  src.requestStarted(ep.id)
  try {
    const r = await get(ep.address)
    if (r.status !== 200) throw new Error(`status ${r.status}`)
  } finally {
    src.requestDone(ep.id)
  }
}

async function gatedSpawn (defer: Defer, minProcs: number, extra: Partial<SpawnSpec> = {}) {
  const dir = tempDir(defer)
  const script = join(dir, 'gated.mjs')
  writeFileSync(script, GATED)
  const m = manager(defer)
  // handoff self: ready means listening, so a held successor stays 'starting'.
  m.add('web', { binPath: [process.execPath, script, dir], socketName: '127.0.0.1:0', handoff: 'self', maxRequests: 3, minProcs, maxProcs: 1, idleTimeout: IDLE_MS, startTimeout: 60_000, stopTimeout: 2000, ...extra })
  const exits: string[] = []
  m.on('exit', (e) => exits.push(e.id))
  await m.start()
  await ensure(m, 'web')
  const src = m.source('web')
  const [old] = src.list()
  const starts = (): number => readFileSync(join(dir, 'starts'), 'utf8').split('\n').filter(Boolean).length
  return { dir, m, src, old, exits, starts }
}

const cases = [
  { requests: 3, minProcs: 0, what: 'held at maxRequests' },
  { requests: 2, minProcs: 0, what: 'still serving, its successor started ahead' },
  { requests: 3, minProcs: 1, what: 'held at maxRequests (minProcs 1)' },
]

for (const c of cases) {
  leakTest(t, `idle, ${c.what}, while its successor boots past idleTimeout: neither is stopped; the successor takes the slot`, async (t, defer) => {
    const { dir, m, src, old, exits, starts } = await gatedSpawn(defer, c.minProcs)
    const spawned = nextEvent(m, 'spawn', (e) => e.id !== old.id)
    for (let i = 0; i < c.requests; i++) await serveOne(src)
    const successor = await spawned
    // Many idleTimeouts with both idle and the successor still booting.
    const shrunk = await waitFor(() => exits.length > 0, IDLE_MS * 10)
    t.notOk(shrunk, `nothing stopped while the successor boots (exits: ${exits.join(',')})`)
    t.same(m.status()[0].processes.map((p) => [p.id, p.state]), [[old.id, c.requests === 3 ? 'held' : 'ready'], [successor.id, 'starting']], 'the recycle is still under way')
    const oldExit = nextEvent(m, 'exit', (e) => e.id === old.id)
    writeFileSync(join(dir, 'go'), '')
    t.equal((await oldExit).expected, true, 'once the successor is up, the recycled process is stopped')
    t.same(exits, [old.id], 'and only that one')
    if (c.minProcs === 0) {
      const successorExit = nextEvent(m, 'exit', (e) => e.id === successor.id)
      t.equal((await successorExit).expected, true, 'idle above minProcs, the successor is shrunk in its turn')
      t.ok(await waitFor(() => m.status()[0].state === 'idle', 5000), 'scaled to zero')
    } else {
      t.ok(await waitFor(() => src.list().length === 1, 5000), 'the successor serves')
      t.same(src.list().map((e) => e.id), [successor.id])
      const shrunkBelow = await waitFor(() => exits.length > 1, IDLE_MS * 10)
      t.notOk(shrunkBelow, 'minProcs 1: the successor is not shrunk')
      t.equal(m.status()[0].state, 'running')
    }
    t.equal(starts(), 2, 'no start was wasted: the first process and its successor')
  })
}

leakTest(t, 'idle while its successor boots, then the successor fails its start: the idle process is shrunk after all', async (t, defer) => {
  // The successor never listens: its start times out (a failed start, retried after a long backoff).
  const { m, src, old, exits, starts } = await gatedSpawn(defer, 0, { startTimeout: IDLE_MS * 5, restart: { initialDelay: 60_000, maxDelay: 60_000 } })
  const spawned = nextEvent(m, 'spawn', (e) => e.id !== old.id)
  for (let i = 0; i < 2; i++) await serveOne(src)
  const successor = await spawned
  const successorExit = nextEvent(m, 'exit', (e) => e.id === successor.id)
  t.equal((await successorExit).expected, false, 'the successor\'s start failed')
  const oldExit = nextEvent(m, 'exit', (e) => e.id === old.id)
  t.equal((await oldExit).expected, true, 'the idle process is shrunk once nothing boots for it')
  t.ok(await waitFor(() => m.status()[0].state === 'idle', 5000), 'scaled to zero, the retry cancelled')
  t.same(exits, [successor.id, old.id])
  t.equal(starts(), 2)
})
