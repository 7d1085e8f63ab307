/**
 * Route admission through a real proxy and node:http backends: the wait queue is FIFO, a client
 * that leaves frees its place at once, and the status counters (active, queued, in flight, backend
 * in flight) return to 0 after every way out — success, client abort while queued or in flight,
 * queue timeout, backend error, head timeout, and proxy.close() with requests still queued.
 */
import t from 'tap'
import { request, type ClientRequest } from 'node:http'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { ZERO, counters, settled } from '../helpers/counters.js'
import { backend, get, proxyServer, type Got } from '../helpers/servers.js'

guardLeaks(t)

interface Tap { teardown (fn: () => unknown): void }

/** A backend that holds every request until released, and records the order requests arrived in. */
async function holding (t: Tap) {
  const order: string[] = []
  const held: Array<() => void> = []
  const be = await backend(t, (req, res) => {
    order.push(req.url ?? '')
    req.resume()
    held.push(() => res.end(`done ${req.url}`))
  })
  return { ...be, order, held }
}


/** A request whose ClientRequest the test can destroy (a client that goes away). */
function open (url: string): { req: ClientRequest, done: Promise<Got | Error> } {
  let req!: ClientRequest
  const done = new Promise<Got | Error>((resolve) => {
    req = request(url, { agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), trailers: res.trailers, rawHeaders: res.rawHeaders }))
      res.on('error', resolve)
    })
    req.on('error', resolve)
    req.end()
  })
  return { req, done }
}

t.test('the queue is FIFO and every slot and place comes back', async (t) => {
  const be = await holding(t)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 10, queueTimeout: '60s' }] })
  const pending: Array<Promise<Got>> = [get(`${url}/0`)]
  t.ok(await waitFor(() => be.order.length === 1, 5000), 'first in flight')
  for (let i = 1; i <= 5; i++) {
    pending.push(get(`${url}/${i}`))
    t.ok(await waitFor(() => counters(proxy).queued === i, 5000), `${i} queued`)
  }
  for (let i = 0; i <= 5; i++) {
    t.ok(await waitFor(() => be.held.length > 0, 5000), `request ${i} reached the backend`)
    be.held.shift()!()
  }
  const all = await Promise.all(pending)
  t.same(all.map((r) => r.status), [200, 200, 200, 200, 200, 200])
  t.same(be.order, ['/0', '/1', '/2', '/3', '/4', '/5'], 'served in arrival order')
  t.ok(await settled(proxy), 'counters back to 0')
  t.same(counters(proxy), ZERO)
})

t.test('a client that leaves while queued frees its place at once; one that leaves in flight frees its slot', async (t) => {
  const be = await holding(t)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 1, queueTimeout: '60s' }] })
  const first = open(`${url}/first`)
  t.ok(await waitFor(() => be.order.length === 1, 5000), 'first in flight')
  const queued = open(`${url}/queued`)
  t.ok(await waitFor(() => counters(proxy).queued === 1, 5000), 'second queued')
  const full = await get(`${url}/full`)
  t.equal(full.status, 503, 'queue full')
  t.match(full.body.toString(), /ERR_QUEUE_FULL/)
  t.ok(full.headers['retry-after'], 'Retry-After')
  queued.req.destroy()
  t.ok(await waitFor(() => counters(proxy).queued === 0, 5000), 'the place is freed without waiting for a slot')
  t.equal(counters(proxy).active, 1, 'the slot is still the first one\'s')
  // The freed place takes a new request.
  const third = open(`${url}/third`)
  t.ok(await waitFor(() => counters(proxy).queued === 1, 5000), 'a new request queues in the freed place')
  // The first client leaves while its request is at the backend: the slot passes to the next one.
  first.req.destroy()
  t.ok(await waitFor(() => be.order.length === 2, 5000), 'the queued request got the slot')
  t.same(be.order, ['/first', '/third'], 'the departed queued request never reached the backend')
  be.held[1]()
  const r = await third.done
  t.equal((r as Got).status, 200)
  t.ok(await settled(proxy), 'counters back to 0')
  t.same(counters(proxy), ZERO)
  t.equal(proxy.routes[0].stats.dropped, 1, 'only the full-queue refusal counted as a drop')
  be.held[0]()
})

t.test('queue timeout: 503 ERR_QUEUE_TIMEOUT with Retry-After; counters back to 0', async (t) => {
  const be = await holding(t)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 5, queueTimeout: '200ms' }] })
  const first = get(`${url}/a`)
  t.ok(await waitFor(() => be.order.length === 1, 5000))
  const late = await get(`${url}/b`)
  t.equal(late.status, 503)
  t.match(late.body.toString(), /ERR_QUEUE_TIMEOUT/)
  t.ok(late.headers['retry-after'], 'Retry-After')
  t.equal(counters(proxy).queued, 0, 'place freed')
  be.held.shift()!()
  t.equal((await first).status, 200)
  t.ok(await settled(proxy))
  t.same(be.order, ['/a'], 'the timed-out request never reached the backend')
})

t.test('backend errors and head timeouts release slot and backend', async (t) => {
  const be = await backend(t, (req, res) => {
    req.resume()
    if (req.url === '/reset') { req.socket.destroy(); return }
    if (req.url === '/never') return
    res.end('ok')
  })
  const { url, proxy } = await proxyServer(t, {
    routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 5, queueTimeout: '60s', timeouts: { headers: '300ms' } }],
  })
  const rs = await Promise.all([get(`${url}/reset`), get(`${url}/never`), get(`${url}/ok`)])
  t.same(rs.map((r) => r.status), [502, 504, 200])
  t.ok(await settled(proxy))
  t.same(counters(proxy), ZERO)
})

t.test('proxy.close() with queued requests: 503 ERR_SHUTTING_DOWN, counters back to 0', async (t) => {
  const be = await holding(t)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 5, queueTimeout: '60s' }] })
  const first = get(`${url}/a`)
  t.ok(await waitFor(() => be.order.length === 1, 5000))
  const q = [get(`${url}/b`), get(`${url}/c`)]
  t.ok(await waitFor(() => counters(proxy).queued === 2, 5000))
  const closing = proxy.close(10_000)
  const refused = await Promise.all(q)
  t.same(refused.map((r) => r.status), [503, 503])
  t.match(refused[0].body.toString(), /ERR_SHUTTING_DOWN/)
  t.equal(counters(proxy).queued, 0)
  be.held.shift()!()
  t.equal((await first).status, 200, 'the one in flight finishes')
  await closing
  t.same(counters(proxy), ZERO)
  t.same(be.order, ['/a'])
})
