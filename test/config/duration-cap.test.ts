/**
 * Durations longer than a timer can wait. Node.js sets a setTimeout above 2^31-1 ms (24.8 days) to
 * 1 ms, so `drainTimeout: 30d` (an operator's "wait as long as it takes") cut every in-flight
 * request at once on stop and reload. parseDuration caps such values at 2^31-1 ms.
 */
import t from 'tap'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { guardLeaks } from '../helpers/leaks.js'
import { parseDuration } from '../../src/config/units.js'
import { createProxy } from '../../src/index.js'

const MAX = 2_147_483_647

t.test('parseDuration: at most 2^31-1 ms; ordinary values unchanged', async (t) => {
  t.equal(parseDuration('1.5s'), 1500)
  t.equal(parseDuration('24d'), 24 * 86_400_000)
  t.equal(parseDuration('30d'), MAX)
  t.equal(parseDuration('99999999999999999999999d'), MAX)
  t.equal(parseDuration(1e308), MAX)
  t.equal(parseDuration(MAX), MAX)
  t.equal(parseDuration(Infinity), null)
  t.equal(parseDuration(-1), null)
  t.equal(parseDuration('-1s'), null)
})

async function listen (s: Server): Promise<number> {
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  return (s.address() as AddressInfo).port
}

t.test('drainTimeout 30d: closing waits for the in-flight request instead of cutting it', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  let answer: (() => void) | undefined
  const backend = createServer((req, res) => { answer = () => res.end('done') })
  const bport = await listen(backend)
  t.teardown(() => new Promise<void>((resolve) => { backend.closeAllConnections(); backend.close(() => resolve()) }))
  const proxy = await createProxy({ routes: [{ protocol: 'http', backends: [`127.0.0.1:${bport}`] }] })
  const front = createServer(proxy.handler)
  const fport = await listen(front)
  t.teardown(() => new Promise<void>((resolve) => { front.closeAllConnections(); front.close(() => resolve()) }))
  const res = fetch(`http://127.0.0.1:${fport}/`).then(async (r) => `${r.status} ${await r.text()}`)
  const deadline = Date.now() + 5000
  while (answer === undefined && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve))
  t.ok(answer !== undefined, 'the backend has the request')
  const closed = proxy.close(parseDuration('30d') ?? 0)
  // The drain has begun; the backend answers only now.
  await new Promise((resolve) => setImmediate(resolve))
  answer?.()
  t.equal(await res, '200 done', 'the in-flight request completed')
  await closed
})
