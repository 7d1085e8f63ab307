/**
 * status() tells the truth about processes recycling keeps out of rotation: a successor that is
 * up before its predecessor's limit is `standby`, a predecessor at its limit whose successor is
 * still booting is `held`. Both are alive (checked in /proc) and neither is in list(), so neither
 * may show as `ready`. The backend boots its first instance at once and holds every later one
 * before listen() until the test writes `go` (as in recycle-successor.test.ts).
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest, type Defer } from './fixtures/guard.js'
import { ensure, manager, nextEvent, tempDir } from './fixtures/manager.js'
import { get } from './fixtures/http.js'
import { GATED } from './fixtures/gated.js'
import { alive } from '../helpers/leaks.js'
import type { SpawnSource } from '../../src/spawn/manager.js'
import type { SpawnSpec } from '../../src/spawn/types.js'


function gatedSpec (defer: Defer, extra: SpawnSpec = {}): { dir: string, spec: SpawnSpec } {
  const dir = tempDir(defer)
  const script = join(dir, 'gated.mjs')
  writeFileSync(script, GATED)
  return { dir, spec: { binPath: [process.execPath, script, dir], socketName: '127.0.0.1:0', handoff: 'self', maxRequests: 3, minProcs: 1, maxProcs: 1, idleTimeout: 0, startTimeout: 60_000, stopTimeout: 2000, ...extra } }
}

async function serveNow (src: SpawnSource): Promise<string | null> {
  const [ep] = src.list()
  if (ep === undefined) return null
  src.requestStarted(ep.id)
  try {
    return (await get(ep.address)).body
  } finally {
    src.requestDone(ep.id)
  }
}

/** A manager with the gated app as spawn `web`, its first process up. */
async function gatedWeb (defer: Defer) {
  const g = gatedSpec(defer)
  const m = manager(defer)
  m.add('web', g.spec)
  await m.start()
  await ensure(m, 'web')
  const src = m.source('web')
  const [old] = src.list()
  return { g, m, src, old }
}

leakTest(t, 'a successor up before the limit shows as standby, not ready', async (t, defer) => {
  const { g, m, src, old } = await gatedWeb(defer)
  const spawned = nextEvent(m, 'spawn', (e) => e.id !== old.id)
  await serveNow(src)
  await serveNow(src)
  const successor = await spawned
  const ready = nextEvent(m, 'ready', (e) => e.id === successor.id)
  writeFileSync(join(g.dir, 'go'), '')
  await ready
  t.same(src.list().map((e) => e.id), [old.id], 'only the old process is in rotation')
  const st = m.status()[0]
  t.same(st.processes.map((p) => [p.id, p.state]), [[old.id, 'ready'], [successor.id, 'standby']], 'the successor on standby is shown as standby')
  t.equal(st.state, 'running')
  t.ok(alive(successor.pid), 'the standby process is alive')
  // At the limit they swap: the standby one is ready, the old one draining.
  await serveNow(src)
  const after = m.status()[0].processes.find((p) => p.id === successor.id)
  t.equal(after?.state, 'ready', 'ready once it took over')
})

leakTest(t, 'a predecessor at its limit whose successor still boots shows as held, not ready', async (t, defer) => {
  const { g, m, src, old } = await gatedWeb(defer)
  const oldPid = m.status()[0].processes[0].pid as number
  const spawned = nextEvent(m, 'spawn', (e) => e.id !== old.id)
  for (let i = 0; i < 3; i++) await serveNow(src)
  const successor = await spawned
  t.same(src.list(), [], 'nothing in rotation')
  const st = m.status()[0]
  t.same(st.processes.map((p) => [p.id, p.state]), [[old.id, 'held'], [successor.id, 'starting']], 'the predecessor is held, its successor starting')
  t.ok(alive(oldPid), 'the held process is alive')
  const ready = nextEvent(m, 'ready', (e) => e.id === successor.id)
  const oldExit = nextEvent(m, 'exit', (e) => e.id === old.id)
  writeFileSync(join(g.dir, 'go'), '')
  await ready
  t.equal(m.status()[0].processes.find((p) => p.id === successor.id)?.state, 'ready', 'the successor is ready once it is in rotation')
  t.equal((await oldExit).expected, true)
  t.notOk(alive(oldPid), 'the held process was stopped after the hand-over')
})
