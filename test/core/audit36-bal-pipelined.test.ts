/**
 * Audit 36 (balancing, queueing): a client that pipelines requests and leaves. node:http gives a
 * pipelined request's response its socket only once the response before it is done, and when the
 * client leaves it closes only the socket's current response: the waiting ones never emit
 * 'close'; node destroys their requests instead. Such an exchange must still learn that its
 * client left: leave the route's queue at once and never reach a backend (docs/reference/config.md,
 * "Limits, balancing and failover"), or, in flight, stop and give back its slot and backend even
 * with `clientIdle: 0` (it waited forever for a 'drain' of a response nobody will read).
 * node:http backends; raw sockets for the pipelining client.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import type { ServerResponse } from 'node:http'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { counters, settled } from '../helpers/counters.js'
import { backend, proxyServer } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 20_000 })

async function client (port: number): Promise<Socket> {
  const c = connect(port, '127.0.0.1')
  await new Promise((resolve) => c.once('connect', resolve))
  c.on('error', () => {})
  c.resume()
  return c
}

t.test('a pipelined request queued behind maxConcurrent: its client leaves, it leaves the queue and never reaches the backend', async (t) => {
  const seen: string[] = []
  const held: ServerResponse[] = []
  const be = await backend(t, (req, res) => { seen.push(req.url ?? ''); req.resume(); held.push(res) })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 10, queueTimeout: '60s' }] })
  // Another client holds the route's one slot.
  const other = await client(port)
  other.write('GET /hold HTTP/1.1\r\nHost: x\r\n\r\n')
  t.ok(await waitFor(() => seen.length === 1, 10_000), 'the slot is taken')
  const c = await client(port)
  c.write('GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n')
  t.ok(await waitFor(() => counters(proxy).queued === 2, 10_000), 'both pipelined requests wait in the queue')
  c.destroy()
  t.ok(await waitFor(() => counters(proxy).queued === 0, 10_000), `both leave the queue at once (${JSON.stringify(counters(proxy))})`)
  held.shift()!.end('done')
  other.end()
  t.ok(await settled(proxy), 'counters back to 0')
  t.same(seen, ['/hold'], 'neither reached the backend')
})

t.test('a pipelined request in flight, clientIdle 0: its client leaves, its slot and backend come back', async (t) => {
  const seen: string[] = []
  const held: ServerResponse[] = []
  let aborted = 0
  const be = await backend(t, (req, res) => {
    seen.push(req.url ?? '')
    req.resume()
    held.push(res)
    res.on('close', () => { if (!res.writableFinished) aborted++ })
    // /p2: more than the proxy queues for a client before it stops reading the backend.
    if (req.url === '/p2') for (let i = 0; i < 3; i++) res.write(Buffer.alloc(1 << 20, 120))
  })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { clientIdle: 0, idle: 0 } }] })
  const c = await client(port)
  c.write('GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n')
  t.ok(await waitFor(() => seen.length === 2, 10_000), 'both reached the backend')
  c.destroy()
  t.ok(await waitFor(() => counters(proxy).inflight === 0, 10_000), `both exchanges end while the backend still holds them (${JSON.stringify(counters(proxy))})`)
  t.ok(await settled(proxy), 'counters back to 0')
  t.ok(await waitFor(() => aborted === 2, 10_000), `the backend sees both requests aborted (${aborted})`)
  for (const res of held) res.destroy()
})
