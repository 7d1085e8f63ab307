/**
 * An upgrade goes through the HTTP adapter's undici Pool as a request does, so past the backend's
 * `connections` it waits for one of them to come free (undici queues it, and never sends it on a
 * connection with a request in flight). As for a request (test/component/queue-wait-http-
 * connections.test.ts): that wait is bounded by the route's `queueTimeout` (503 ERR_QUEUE_TIMEOUT),
 * and `timeouts.headers` counts from the moment the upgrade got its connection. Real node:http
 * backends (a plain handler that holds the connection, an upgrade handler that answers 101).
 */
import t from 'tap'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { createServer } from 'node:http'
import type { Duplex } from 'node:stream'
import { get, listen, proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

interface Tap { teardown (fn: () => void | Promise<void>): void }

const UPGRADE = (path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n`

/** A node:http backend: plain answers are held open until released; upgrades get a 101, 'hi' and the close. */
async function holdingBackend (t: Tap): Promise<{ address: string, held: Array<() => void>, upgrades: number[] }> {
  const held: Array<() => void> = []
  const upgrades: number[] = []
  const sockets: Duplex[] = []
  // The head and a first byte go out at once: the request holding the connection is no late head.
  const server = createServer((req, res) => { req.resume(); res.writeHead(200, { 'content-type': 'text/plain' }); res.write('a'); held.push(() => res.end('late')) })
  server.on('upgrade', (_req, socket: Duplex) => {
    sockets.push(socket)
    upgrades.push(Date.now())
    socket.on('error', () => {})
    socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\nhi')
  })
  const port = await listen(server)
  t.teardown(async () => {
    for (const f of held.splice(0)) f()
    for (const s of sockets) s.destroy()
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { address: `127.0.0.1:${port}`, held, upgrades }
}

t.test('an upgrade queued behind connections longer than timeouts.headers gets its 101 once a connection is free', async (t) => {
  const be = await holdingBackend(t)
  // headers 300 ms; the only connection is held by a plain answer for 1.5 s (5x): the upgrade
  // waits for it in the adapter's queue, then is answered at once.
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0, queueTimeout: '10s', timeouts: { headers: '300ms' }, options: { connections: 1 } }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const slow = get(`http://127.0.0.1:${port}/slow`)
  t.ok(await waitFor(() => be.held.length === 1), 'a plain answer holds the only connection')
  const release = setTimeout(() => { for (const f of be.held.splice(0)) f() }, 1500)
  t.teardown(() => clearTimeout(release))
  const started = Date.now()
  const out = await rawRequest(port, UPGRADE('/ws'))
  t.ok(Date.now() - started >= 1000, `the upgrade waited for the connection (${Date.now() - started} ms)`)
  t.match(out, /^HTTP\/1\.1 101 Switching Protocols\r\n[^]*\r\n\r\nhi$/, 'the 101 and the tunnel', { out })
  t.equal(be.upgrades.length, 1, 'the backend got the upgrade')
  const first = await slow
  t.same([first.status, first.body.toString()], [200, 'alate'], 'the plain answer that held the connection')
  t.ok(await waitFor(() => ends.length === 2), 'request:end for both')
  t.same(ends.map((e) => [e.url, e.status, e.error ?? null]).sort(), [['/slow', 200, null], ['/ws', 101, null]])
})

t.test('an upgrade that waits for a connection longer than queueTimeout: 503 ERR_QUEUE_TIMEOUT, never sent, nothing counted against the backend', async (t) => {
  const be = await holdingBackend(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0, queueTimeout: '300ms', timeouts: { headers: '5s' }, options: { connections: 1 } }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const slow = get(`http://127.0.0.1:${port}/slow`)
  t.ok(await waitFor(() => be.held.length === 1), 'a plain request holds the only connection')
  const out = await rawRequest(port, UPGRADE('/ws'))
  t.match(out, /^HTTP\/1\.1 503 [^]*\r\nretry-after: \d+\r\n[^]*\r\n\r\n503 Service Unavailable\nERR_QUEUE_TIMEOUT\n$/, '503 ERR_QUEUE_TIMEOUT', { out })
  t.ok(await waitFor(() => ends.length === 1), 'request:end')
  t.match(ends, [{ url: '/ws', status: 503, error: 'ERR_QUEUE_TIMEOUT' }])
  const b = proxy.routes[0].pool.backends[0]
  t.same([b.state, b.attemptFails], ['up', 0], 'not a failed attempt of the backend')
  for (const f of be.held.splice(0)) f()
  t.equal((await slow).status, 200, 'the plain request is answered once released')
  // The queued upgrade was given up: when the connection comes free it is not sent. A request
  // queued behind it goes on the connection after it would have.
  const after = get(`http://127.0.0.1:${port}/after`)
  t.ok(await waitFor(() => be.held.length === 1), 'the next request reached the backend')
  for (const f of be.held.splice(0)) f()
  t.equal((await after).status, 200)
  t.equal(be.upgrades.length, 0, 'the backend never got the upgrade')
})
