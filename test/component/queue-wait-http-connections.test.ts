/**
 * The HTTP adapter's per-backend `connections` cap: a request beyond it waits in the adapter's
 * queue for a free connection. That wait is no backend slowness: `timeouts.headers` counts from the
 * moment the request got its connection (as nginx's proxy_read_timeout starts once the request is
 * sent), and the wait itself is bounded by the route's `queueTimeout` (HAProxy's `timeout queue`
 * for a server's maxconn queue: 503 ERR_QUEUE_TIMEOUT). Real node:http backends.
 */
import t from 'tap'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

const SERVICE_MS = 300

t.test('a burst above connections: each request answered within timeouts.headers gets its 200, however long it queued', async (t) => {
  let inFlight = 0
  let maxInFlight = 0
  const be = await backend(t, (req, res) => {
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    req.resume()
    setTimeout(() => { inFlight--; res.end(req.url) }, SERVICE_MS)
  })
  // 20 requests over 2 connections at 300 ms each: the last ones wait ~2.7 s for a connection,
  // past the 2 s head timeout, though each is answered 300 ms after it was sent (6x margin).
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0, timeouts: { headers: '2s' }, options: { connections: 2 } }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const started = Date.now()
  const got = await Promise.all(Array.from({ length: 20 }, (_, i) => get(`${url}/r${i}`)))
  const took = Date.now() - started
  t.ok(took > 2000, `the burst took longer than timeouts.headers (${took} ms), so later requests did queue past it`)
  t.same(got.map((r) => [r.status, r.body.toString()]), Array.from({ length: 20 }, (_, i) => [200, `/r${i}`]), 'every request answered 200 with its own response')
  t.ok(await waitFor(() => ends.length === 20), 'request:end for each')
  t.same(ends.filter((e) => e.error != null).map((e) => e.error), [], 'no error logged')
  t.equal(maxInFlight, 2, 'never more than 2 at the backend at once')
})

t.test('a request that waits for a connection longer than queueTimeout: 503 ERR_QUEUE_TIMEOUT; a slow head is still ERR_HEADERS_TIMEOUT', async (t) => {
  const held: Array<() => void> = []
  const be = await backend(t, (req, res) => {
    req.resume()
    if (req.url === '/slow') { held.push(() => res.end('late')); return }
    res.end('ok')
  })
  t.teardown(() => { for (const f of held) f() })
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0, queueTimeout: '1s', timeouts: { headers: '3s' }, options: { connections: 1 } }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const slow = get(`${url}/slow`)
  t.ok(await waitFor(() => held.length === 1), 'the first request holds the only connection')
  const queued = await get(`${url}/queued`)
  t.equal(queued.status, 503, 'the queued request gets 503')
  t.match(queued.body.toString(), /ERR_QUEUE_TIMEOUT/, 'ERR_QUEUE_TIMEOUT')
  const first = await slow
  t.equal(first.status, 504, 'the request on the connection is bounded by timeouts.headers')
  t.match(first.body.toString(), /ERR_HEADERS_TIMEOUT/, 'ERR_HEADERS_TIMEOUT')
  t.ok(await waitFor(() => ends.length === 2), 'request:end for both')
  t.same(ends.map((e) => [e.url, e.status, e.error]).sort(), [['/queued', 503, 'ERR_QUEUE_TIMEOUT'], ['/slow', 504, 'ERR_HEADERS_TIMEOUT']])
})
