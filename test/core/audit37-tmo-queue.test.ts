/**
 * Audit 37: queueTimeout's two waits are honoured to its unit, whatever the route's other timeouts:
 * the admission queue (maxConcurrent) and the wait for a connection behind the adapter's cap (http
 * `connections`), each 503 ERR_QUEUE_TIMEOUT after about queueTimeout, with the default 60 s
 * headers/idle/clientIdle on the route.
 */
import t, { type Test } from 'tap'
import type { Socket } from 'node:net'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { settled } from '../helpers/counters.js'
import { fetchRaw } from '../cgi/harness.js'
import { proxyServer, rawBackend } from '../helpers/servers.js'

async function queueWait (t: Test, path: string): Promise<void> {
  guardLeaks(t, { timeoutMs: 10_000 })
  const be = await rawBackend(t, (s: Socket) => { s.on('data', () => {}) })
  const { url, proxy } = await proxyServer(t, {
    routes: [
      { match: { prefix: '/adm' }, protocol: 'http', backends: [be.address], maxConcurrent: 1, queueTimeout: '200ms', timeouts: { headers: '5s' } },
      { match: { prefix: '/conn' }, protocol: 'http', backends: [be.address], options: { connections: 1 }, queueTimeout: '200ms', timeouts: { headers: '5s' } },
    ],
  })
  const first = fetchRaw(`${url}${path}/first`)
  t.ok(await waitFor(() => proxy.routes.some((r) => r.pool.inflight === 1), 10_000), 'the first request holds the slot')
  const started = Date.now()
  const r = await fetchRaw(`${url}${path}/second`)
  const took = Date.now() - started
  t.equal(r.status, 503, '503')
  t.match(r.body.toString(), /ERR_QUEUE_TIMEOUT/)
  t.ok(took >= 180 && took < 900, `after about 200 ms (${took} ms)`)
  t.equal((await first).status, 504, 'the first one ends with the headers timeout')
  t.ok(await settled(proxy))
}

t.test('queueTimeout 200ms, admission queue (maxConcurrent): 503 ERR_QUEUE_TIMEOUT after about 200 ms', (t) => queueWait(t, '/adm'))

// The wait behind the adapter's connection cap is ended by the runtime's sweep, whose period
// (src/core/compile.ts) was derived from headers, idle, clientIdle and uploadGrace but not
// queueTimeout: with the other timeouts at 5 s and more the 503 came after ~1 s.
t.test('queueTimeout 200ms, wait for a connection (http connections: 1): 503 ERR_QUEUE_TIMEOUT after about 200 ms', (t) => queueWait(t, '/conn'))
