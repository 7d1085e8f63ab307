/**
 * The live view over a real WebSocket: a snapshot on connect, one per interval, one soon after a
 * state change (faster than the interval), read-only, and closed cleanly by `close()`.
 */
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { backend, closeServer, get } from '../helpers/servers.js'
import { liveClient, statusRig } from './harness.js'

t.test('pushes: on connect, every interval, and on a backend state change', async (t) => {
  guardLeaks(t)
  // Stopped mid-test and expected refused: a port no listen(0) elsewhere can take meanwhile.
  const a = await backend(t, (_req, res) => res.end('a'), await freePort())
  const b = await backend(t, (_req, res) => res.end('b'))
  // A long interval makes the event-driven push observable on its own.
  const rig = await statusRig(t, { routes: [{ name: 'api', protocol: 'http', backends: [a.address, b.address], balance: 'round-robin', disableTime: '60s' }] }, { live: { intervalMs: 60_000, coalesceMs: 20 } })
  const live = await liveClient(`ws://127.0.0.1:${rig.port}/server-status/live`)
  t.teardown(() => live.close())
  const first = await live.next()
  t.equal(first.type, 'snapshot')
  t.equal(first.seq, 1)
  t.equal(first.snapshot.routes[0].backends.filter((x) => x.state === 'up').length, 2)

  await closeServer(a.server)
  const started = Date.now()
  for (let i = 0; i < 2; i++) t.equal((await get(`${rig.url}/x${i}`)).status, 200, 'failover')
  const pushed = await live.next((m) => m.snapshot.routes[0].backends.some((x) => x.state === 'disabled'), 5000)
  t.ok(Date.now() - started < 5000, 'pushed on the event, not on the 60 s tick')
  t.ok(pushed.seq > first.seq, 'sequence grows')
  t.equal(pushed.snapshot.routes[0].availPercent, 50)
})

t.test('periodic pushes carry fresh counters; clients cannot write; close() ends clients', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('ok'))
  const rig = await statusRig(t, { routes: [{ name: 'api', protocol: 'http', backends: [be.address] }] }, { live: { intervalMs: 50 } })
  const live = await liveClient(`ws://127.0.0.1:${rig.port}/server-status/live`)
  await live.next()
  t.equal((await get(`${rig.url}/one`)).status, 200)
  const tick = await live.next((m) => m.snapshot.routes[0].requests === 1)
  t.ok(tick.seq >= 2, 'a timer push saw the new request')
  const seqs = [(await live.next()).seq, (await live.next()).seq]
  t.ok(seqs[1] > seqs[0], 'pushes keep coming')

  const other = await liveClient(`ws://127.0.0.1:${rig.port}/server-status/live`)
  const closed = new Promise<number>((resolve) => other.ws.once('close', (code) => resolve(code)))
  other.ws.send('hello')
  t.equal(await closed, 1003, 'a client message closes the socket (read-only view)')

  const gone = new Promise<number>((resolve) => live.ws.once('close', (code) => resolve(code)))
  await rig.status.close()
  t.equal(await gone, 1001, 'close() says going away')
})
