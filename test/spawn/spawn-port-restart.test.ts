/**
 * A slot on `127.0.0.1:0` keeps the port the kernel first gave it: a crash restart (fd 0 and
 * handoff self) asks for it again; when another socket took it meanwhile, the new process gets a
 * fresh port (an 'address-changed' event) instead of failing. A recycle's successor runs beside
 * its predecessor, so it has a port of its own, which the slot keeps once it took over.
 */
import t from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import { leakTest, type Defer } from './fixtures/guard.js'
import { ensure, manager, nextEvent, nodeBackend } from './fixtures/manager.js'
import { get, target } from './fixtures/http.js'
import { freePort } from '../helpers/ports.js'
import type { SpawnManager } from '../../src/spawn/manager.js'
import type { SpawnSpec } from '../../src/spawn/types.js'

function current (m: SpawnManager): { id: string, pid: number, address: string } {
  const p = m.status()[0].processes.find((q) => q.state === 'ready')
  if (p === undefined || p.pid === null) throw new Error('no ready process')
  return { id: p.id, pid: p.pid, address: p.address }
}

/** SIGKILL the ready process; resolves with the address of the one that replaces it. */
async function killAndRestart (m: SpawnManager): Promise<string> {
  const victim = current(m)
  const ready = nextEvent(m, 'ready', (e) => e.id !== victim.id)
  process.kill(victim.pid, 'SIGKILL')
  return (await ready).address
}

async function hold (defer: Defer, address: string): Promise<net.Server> {
  const { host, port } = target(address)
  const server = net.createServer((s) => s.destroy())
  server.listen({ host, port })
  await once(server, 'listening')
  defer(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return server
}

for (const handoff of ['fd0', 'self'] as const) {
  leakTest(t, `handoff ${handoff}: crash restarts keep the kernel-assigned port`, async (t, defer) => {
    const m = manager(defer)
    m.add('k', { binPath: nodeBackend(), socketName: '127.0.0.1:0', handoff, restart: { initialDelay: 10 } })
    await m.start()
    await ensure(m, 'k')
    const first = current(m).address
    t.match(first, /^127\.0\.0\.1:\d+$/)
    t.not(first, '127.0.0.1:0', 'the kernel chose a port')
    for (let i = 0; i < 3; i++) {
      t.equal(await killAndRestart(m), first, `restart ${i + 1} listens at ${first}`)
      t.equal((await get(first)).status, 200, 'and serves there')
    }
    t.equal(m.status()[0].restarts, 3)
  })

  leakTest(t, `handoff ${handoff}: the remembered port taken meanwhile: a fresh port, logged, no failed start`, async (t, defer) => {
    const m = manager(defer)
    // The restart waits 1 s: ample time to take the port once the crashed process is reaped.
    m.add('k', { binPath: nodeBackend(), socketName: '127.0.0.1:0', handoff, restart: { initialDelay: 1000 } })
    await m.start()
    await ensure(m, 'k')
    const first = current(m)
    const changed = nextEvent(m, 'address-changed')
    const ready = nextEvent(m, 'ready', (e) => e.id !== first.id)
    const exited = nextEvent(m, 'exit', (e) => e.id === first.id)
    process.kill(first.pid, 'SIGKILL')
    await exited
    await hold(defer, first.address)
    const e = await changed
    t.equal(e.wanted, first.address, 'asked for the remembered address first')
    t.not(e.address, first.address, 'then took another')
    t.match(e.reason, /in use/)
    const r = await ready
    t.equal(r.address, e.address, 'the new process listens at the fresh port')
    t.equal((await get(r.address)).status, 200, 'and serves there')
    t.equal(m.status()[0].state, 'running')
    t.equal(m.status()[0].lastCrash?.error ?? null, null, 'no failed start recorded')
    t.equal(await killAndRestart(m), r.address, 'the fresh port is the one remembered now')
  })
}

leakTest(t, 'a configured port stays the first choice; taken by another program it is still ERR_SPAWN_ADDRESS_IN_USE', async (t, defer) => {
  // Not a port a closed listen(0) gave back: the next listen(0) of any test alongside may take it
  // before the spawn binds it, or between a kill and the restart (see helpers/ports.ts).
  const port = await freePort()
  const m = manager(defer)
  const spec: SpawnSpec = { binPath: nodeBackend(), socketName: `127.0.0.1:${port}`, restart: { initialDelay: 1000 } }
  m.add('fixed', spec)
  await m.start()
  await ensure(m, 'fixed')
  t.equal(await killAndRestart(m), `127.0.0.1:${port}`, 'restarted on the configured port')
  const victim = current(m)
  const exited = nextEvent(m, 'exit', (e) => e.id === victim.id)
  // restarts: 1 (first kill), 2 (this kill), 3 (the start that finds the port taken).
  const failedStart = nextEvent(m, 'restart', (e) => e.restarts === 3)
  let changed = 0
  m.on('address-changed', () => { changed++ })
  process.kill(victim.pid, 'SIGKILL')
  await exited
  await hold(defer, `127.0.0.1:${port}`)
  await failedStart
  t.match(m.status()[0].lastCrash?.error, /in use/, 'a failed start: no silent move off a configured port')
  t.equal(changed, 0, 'no address-changed event')
})

leakTest(t, 'recycling: the successor listens on its own port beside its predecessor; the slot keeps it after', async (t, defer) => {
  const m = manager(defer)
  m.add('rc', { binPath: nodeBackend(), socketName: '127.0.0.1:0', maxRequests: 2, idleTimeout: 0, restart: { initialDelay: 10 } })
  await m.start()
  await ensure(m, 'rc')
  const src = m.source('rc')
  const [old] = src.list()
  const successorReady = nextEvent(m, 'ready', (e) => e.id !== old.id)
  src.requestStarted(old.id)
  const next = await successorReady
  t.not(next.address, old.address, 'the successor has a port of its own while both run')
  t.equal((await get(old.address)).status, 200, 'the predecessor still serves at its own')
  const oldExit = nextEvent(m, 'exit', (e) => e.id === old.id)
  src.requestDone(old.id)
  src.requestStarted(old.id)
  src.requestDone(old.id)
  await oldExit
  t.same(src.list().map((e) => e.address), [next.address], 'the successor took the slot')
  t.equal(await killAndRestart(m), next.address, 'a crash restart keeps the successor\'s port')
})
