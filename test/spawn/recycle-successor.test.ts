/**
 * Recycling is make-before-break and keeps the limit: a process's successor starts a tenth of
 * maxRequests ahead (here, maxRequests 3: at request 2) and waits on standby, out of rotation;
 * at maxRequests the two swap in one step. A successor still booting at the limit holds its
 * predecessor out of rotation (not stopped); only a successor that fails to start leaves its
 * predecessor serving past the limit, so a routine recycle never takes a site down. The backend here boots its
 * first instance at once and holds every later one (the successors) before listen() until the
 * test writes `go`, or makes them exit 1 while `fail` exists: a boot as slow, or as broken, as
 * the test needs, with no sleep. `/hang` closes its listener (a health check then fails).
 */
import t from 'tap'
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest, type Defer } from './fixtures/guard.js'
import { ensure, manager, nextEvent, tempDir } from './fixtures/manager.js'
import { get } from './fixtures/http.js'
import { alive, waitFor } from '../helpers/leaks.js'
import type { SpawnSource } from '../../src/spawn/manager.js'
import type { SpawnSpec } from '../../src/spawn/types.js'

const GATED = `
import http from 'node:http'
import { appendFileSync, existsSync, readFileSync } from 'node:fs'
const dir = process.argv[2]
appendFileSync(dir + '/starts', process.pid + '\\n')
const n = readFileSync(dir + '/starts', 'utf8').split('\\n').filter(Boolean).length
const server = http.createServer((req, res) => {
  if (req.url === '/hang') server.close()
  res.end(String(process.pid))
})
const listen = () => server.listen(Number(process.env.PORT), process.env.HOST)
if (n === 1) listen()
else if (existsSync(dir + '/fail')) process.exit(1)
else { const poll = setInterval(() => { if (existsSync(dir + '/go')) { clearInterval(poll); listen() } }, 10) }
`

function gated (defer: Defer): { dir: string, spec: (extra?: SpawnSpec) => SpawnSpec } {
  const dir = tempDir(defer)
  const script = join(dir, 'gated.mjs')
  writeFileSync(script, GATED)
  return {
    dir,
    // handoff self: ready means listening, so a held successor stays 'starting'.
    spec: (extra = {}) => ({ binPath: [process.execPath, script, dir], socketName: '127.0.0.1:0', handoff: 'self', maxRequests: 3, minProcs: 1, maxProcs: 1, idleTimeout: 0, startTimeout: 60_000, stopTimeout: 2000, ...extra }),
  }
}

/** One request as the core makes it, without waiting: null when nothing is routable now. */
async function serveNow (src: SpawnSource): Promise<string | null> {
  const [ep] = src.list()
  if (ep === undefined) return null
  src.requestStarted(ep.id)
  try {
    const r = await get(ep.address)
    if (r.status !== 200) throw new Error(`status ${r.status}`)
    return r.body
  } finally {
    src.requestDone(ep.id)
  }
}

/** The gated spawn `web` (`before` may listen to the manager first), started, its first process ready. */
async function webSpawn (defer: Defer, extra: SpawnSpec = {}, before: (m: Manager) => void = () => {}) {
  const g = gated(defer)
  const m = manager(defer)
  m.add('web', g.spec(extra))
  before(m)
  await m.start()
  await ensure(m, 'web')
  const src = m.source('web')
  const [old] = src.list()
  return { g, m, src, old, oldPid: m.status()[0].processes[0].pid as number }
}

/** Serve requests 1 and 2 (of maxRequests 3): the second starts the successor; its spawn event. */
async function untilSuccessor (m: Manager, src: SpawnSource, oldId: string): Promise<{ id: string, pid: number }> {
  const spawned = nextEvent(m, 'spawn', (e) => e.id !== oldId)
  for (let i = 0; i < 2; i++) await serveNow(src)
  return await spawned
}

type Manager = ReturnType<typeof manager>

leakTest(t, 'maxProcs 1: the successor starts ahead and waits on standby; at maxRequests the two swap, nothing waits, the limit is kept', async (t, defer) => {
  const recycles: Array<{ id: string, requests: number }> = []
  const { g, m, src, old, oldPid: pid } = await webSpawn(defer, {}, (m) => m.on('recycle', (e) => recycles.push(e)))
  const oldPid = String(pid)
  const successorSpawned = nextEvent(m, 'spawn', (e) => e.id !== old.id)
  t.equal(await serveNow(src), oldPid, 'request 1 by the old process')
  t.equal(await serveNow(src), oldPid, 'request 2 by the old process')
  const successor = await successorSpawned
  t.pass('its successor was started at request 2, ahead of the limit')
  const ready = nextEvent(m, 'ready', (e) => e.id === successor.id)
  writeFileSync(join(g.dir, 'go'), '')
  await ready
  t.same(src.list().map((e) => e.id), [old.id], 'ready, the successor waits on standby: the old process alone is in rotation')
  t.same(recycles, [], 'no recycle yet')
  const oldExit = nextEvent(m, 'exit', (e) => e.id === old.id)
  t.equal(await serveNow(src), oldPid, 'request 3 (maxRequests) by the old process')
  t.same(src.list().map((e) => e.id), [successor.id], 'at the limit the successor replaced it in list() in one step')
  t.same(recycles, [{ spawn: 'web', id: old.id, requests: 3 }], 'one recycle event, at the hand-over, after exactly maxRequests')
  t.equal((await oldExit).expected, true, 'old process stopped by the manager')
  t.equal(await serveNow(src), String(successor.pid), 'request 4 by the successor: none waited for a boot')
  const now = m.status()[0]
  t.equal(now.processes.length, 1)
  t.equal(now.processes[0].restarts, 0, 'a recycle is not a restart')
})

leakTest(t, 'a successor still booting at maxRequests: its predecessor is held out of rotation, not stopped, until the successor is up', async (t, defer) => {
  const { g, m, src, old, oldPid } = await webSpawn(defer)
  const successorSpawned = nextEvent(m, 'spawn', (e) => e.id !== old.id)
  for (let i = 0; i < 3; i++) t.equal(await serveNow(src), String(oldPid), `request ${i + 1} by the old process`)
  const successor = await successorSpawned
  t.same(src.list(), [], 'at the limit it left rotation: no request past maxRequests')
  t.same(m.status()[0].processes.map((p) => [p.id, p.state]), [[old.id, 'held'], [successor.id, 'starting']], 'held (not stopped), the successor booting')
  t.ok(alive(oldPid), 'the old process is alive')
  const ready = nextEvent(m, 'ready', (e) => e.id === successor.id)
  const oldExit = nextEvent(m, 'exit', (e) => e.id === old.id)
  writeFileSync(join(g.dir, 'go'), '')
  await ready
  t.same(src.list().map((e) => e.id), [successor.id], 'the successor is in rotation once ready')
  t.equal((await oldExit).expected, true, 'then the old process is stopped')
  t.equal(await serveNow(src), String(successor.pid))
})

leakTest(t, 'a successor that cannot start: the old process keeps serving; at the start limit FAILED without stopping it; clear() recycles', async (t, defer) => {
  const g = gated(defer)
  writeFileSync(join(g.dir, 'fail'), '')
  const m = manager(defer)
  m.add('web', g.spec({ restart: { initialDelay: 10, maxDelay: 20, maxStarts: 2, window: 60_000 } }))
  const restarts: number[] = []
  m.on('restart', (e) => restarts.push(e.delay))
  const recycles: string[] = []
  m.on('recycle', (e) => recycles.push(e.id))
  await m.start()
  await ensure(m, 'web')
  const src = m.source('web')
  const [old] = src.list()
  const oldPid = String(m.status()[0].processes[0].pid)
  const failed = nextEvent(m, 'failed')
  for (let i = 0; i < 2; i++) t.equal(await serveNow(src), oldPid)
  const f = await failed
  t.match(f.reason, new RegExp(`^recycle of ${old.id.replace('#', '\\#')} failed: start-limit-hit`), 'the reason names the recycle and the start limit')
  t.same(restarts, [10, 20], 'the failed starts were retried with the slot backoff')
  for (let i = 0; i < 5; i++) t.equal(await serveNow(src), oldPid, `request ${i + 3}: the old process still serves, past maxRequests`)
  await ensure(m, 'web')
  t.pass('ensure() resolves: a process is routable')
  const st = m.status()[0]
  t.equal(st.state, 'failed', 'the spawn reports FAILED')
  t.match(st.reason, /^recycle of .* failed: start-limit-hit/)
  t.same(st.processes.map((p) => [p.id, p.state]), [[old.id, 'ready']], 'only the old process, still ready')
  t.ok(alive(Number(oldPid)), 'old process alive')
  t.same(recycles, [])
  // The operator fixes the program and clears: the recycle that was held up completes.
  rmSync(join(g.dir, 'fail'))
  writeFileSync(join(g.dir, 'go'), '')
  const ready = nextEvent(m, 'ready', (e) => e.id !== old.id)
  const oldExit = nextEvent(m, 'exit', (e) => e.id === old.id)
  m.clear('web')
  const r = await ready
  t.equal((await oldExit).expected, true)
  t.same(recycles, [old.id], 'recycled after clear()')
  t.equal(m.status()[0].state, 'running')
  t.equal(await serveNow(src), String(r.pid), 'the successor serves')
})

leakTest(t, 'the old process crashes while its successor boots: the successor takes the slot, no second replacement', async (t, defer) => {
  let spawns = 0
  let restarts = 0
  const { g, m, src, old, oldPid } = await webSpawn(defer, { restart: { initialDelay: 10 } }, (m) => {
    m.on('spawn', () => { spawns++ })
    m.on('restart', () => { restarts++ })
  })
  const successor = await untilSuccessor(m, src, old.id)
  t.same(src.list().map((e) => e.id), [old.id], 'old still in rotation')
  const crashed = nextEvent(m, 'exit', (e) => e.id === old.id)
  process.kill(oldPid, 'SIGKILL')
  t.equal((await crashed).expected, false, 'a crash')
  t.same(src.list(), [], 'nothing routable until the successor is ready')
  const st = m.status()[0]
  t.equal(st.state, 'starting')
  t.same(st.processes.map((p) => [p.id, p.state]), [[successor.id, 'starting']], 'the successor holds the slot')
  const ready = nextEvent(m, 'ready', (e) => e.id === successor.id)
  writeFileSync(join(g.dir, 'go'), '')
  await ready
  t.same(src.list().map((e) => e.id), [successor.id])
  t.equal(spawns, 2, 'no second replacement was spawned')
  t.equal(restarts, 0, 'no crash restart scheduled')
  t.equal(await serveNow(src), String(successor.pid))
})

leakTest(t, 'close() while a successor boots stops both processes', async (t, defer) => {
  let readies = 0
  const { m, src, old, oldPid } = await webSpawn(defer, {}, (m) => m.on('ready', () => { readies++ }))
  const successor = await untilSuccessor(m, src, old.id)
  t.same(src.list().map((e) => e.id), [old.id], 'old still in rotation while the successor boots')
  const exits = new Map<string, boolean>()
  m.on('exit', (e) => exits.set(e.id, e.expected))
  await m.close()
  t.same([...exits.entries()].sort(), [[old.id, true], [successor.id, true]].sort(), 'both stopped by the manager')
  t.equal(readies, 1, 'the successor never became ready')
  t.ok(await waitFor(() => !alive(oldPid) && !alive(successor.pid), 5000), 'neither process is alive')
  t.equal(m.status()[0].state, 'stopped')
  t.same(m.status()[0].processes, [])
})

// An idle process whose successor boots is no longer shrunk with it: test/spawn/audit35-idle-recycle-boot.test.ts.

leakTest(t, 'the old process fails its health check while its successor boots: the successor takes the slot', async (t, defer) => {
  let spawns = 0
  let restarts = 0
  const { g, m, src, old } = await webSpawn(defer, { restart: { initialDelay: 10 }, healthCheck: { type: 'connect', interval: 50, timeout: 2000, failures: 2 } }, (m) => {
    m.on('spawn', () => { spawns++ })
    m.on('restart', () => { restarts++ })
  })
  const successor = await untilSuccessor(m, src, old.id)
  const stopped = nextEvent(m, 'exit', (e) => e.id === old.id)
  await get(old.address, '/hang')
  t.equal((await stopped).expected, false, 'stopped as unhealthy (a crash)')
  t.same(m.status()[0].processes.map((p) => [p.id, p.state]), [[successor.id, 'starting']], 'the successor holds the slot')
  const ready = nextEvent(m, 'ready', (e) => e.id === successor.id)
  writeFileSync(join(g.dir, 'go'), '')
  await ready
  t.same(src.list().map((e) => e.id), [successor.id])
  t.equal(spawns, 2, 'no second replacement')
  t.equal(restarts, 0)
})

leakTest(t, 'a recycle failing at the start limit lets retired processes finish their in-flight requests', async (t, defer) => {
  const g = gated(defer)
  const m = manager(defer)
  m.add('web', g.spec({ restart: { initialDelay: 10, maxDelay: 20, maxStarts: 1, window: 60_000 } }))
  await m.start()
  await ensure(m, 'web')
  const src = m.source('web')
  const [a] = src.list()
  const aPid = m.status()[0].processes[0].pid as number
  // One request of A's still in flight (its third, maxRequests) when B takes over.
  for (let i = 0; i < 2; i++) await serveNow(src)
  src.requestStarted(a.id)
  const bReady = nextEvent(m, 'ready', (e) => e.id !== a.id)
  writeFileSync(join(g.dir, 'go'), '')
  const b = await bReady
  t.equal(m.status()[0].processes.find((p) => p.id === a.id)?.state, 'draining', 'A retired, 1 request in flight')
  // B's successors cannot start: B's recycle ends in FAILED.
  writeFileSync(join(g.dir, 'fail'), '')
  const failed = nextEvent(m, 'failed')
  for (let i = 0; i < 2; i++) t.equal(await serveNow(src), String(b.pid))
  await failed
  t.equal(await serveNow(src), String(b.pid), 'B serves on past its limit')
  const st = m.status()[0]
  t.same(st.processes.map((p) => [p.id, p.state]), [[a.id, 'draining'], [b.id, 'ready']], 'A still draining, B still serving')
  t.ok(alive(aPid), 'A was not killed with its request in flight')
  t.equal((await get(a.address)).status, 200, 'A still answers its in-flight request')
  const aExit = nextEvent(m, 'exit', (e) => e.id === a.id)
  src.requestDone(a.id)
  t.equal((await aExit).expected, true, 'A stopped once its last request ended')
  t.equal(await serveNow(src), String(b.pid))
})
