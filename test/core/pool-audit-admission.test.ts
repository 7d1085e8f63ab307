/**
 * Audit (H7): admission under a burst and per-backend connection caps, through a real proxy.
 *
 * - a burst over maxConcurrent + queue: the slots are taken, the queue fills, the rest get
 *   503 ERR_QUEUE_FULL at once, the queued ones 503 ERR_QUEUE_TIMEOUT at queueTimeout, each with
 *   Retry-After, every drop counted; afterwards every counter is back to 0;
 * - an Upgrade request that waits in the queue frees its place when its client leaves (reset or FIN);
 * - the per-backend connection cap (http `connections`, fastcgi `maxConnections`) is never exceeded,
 *   counted at the backend, also when the backend closes or resets connections (raw fakes: those
 *   faults and the count are what a real peer cannot give on cue).
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect, type Socket } from 'node:net'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { counters, settled, ZERO } from '../helpers/counters.js'
import { backend, get, proxyServer, rawBackend, type Got } from '../helpers/servers.js'
import { startFake, respond } from '../fastcgi/helpers/fake.js'
import { tempDir } from '../fastcgi/helpers/peers.js'
import { collectStatus } from '../../src/status/model.js'

guardLeaks(t, { timeoutMs: 10_000 })

const code = (r: Got): string => /ERR_[A-Z_]+/.exec(r.body.toString())?.[0] ?? ''

t.test('a burst: 2 in flight, 3 queued then timed out, 5 refused at once; all counted; counters back to 0', async (t) => {
  const held: Array<() => void> = []
  const be = await backend(t, (req, res) => { req.resume(); held.push(() => res.end('x')) })
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 2, queue: 3, queueTimeout: '3s' }] })
  const results: Array<Got | null> = Array(10).fill(null)
  const answeredAt: number[] = Array(10).fill(0)
  const started = Date.now()
  const pending = Array.from({ length: 10 }, (_, i) => get(`${url}/${i}`).then((r) => { results[i] = r; answeredAt[i] = Date.now() - started; return r }))
  t.ok(await waitFor(() => held.length === 2 && counters(proxy).queued === 3 && results.filter((r) => r !== null).length === 5, 10_000),
    'two slots taken, three queued, five answered')
  const refused = results.filter((r): r is Got => r !== null)
  t.same(refused.map((r) => `${r.status} ${code(r)}`), Array(5).fill('503 ERR_QUEUE_FULL'), 'beyond the queue: 503 ERR_QUEUE_FULL')
  for (const r of refused) t.ok(Number(r.headers['retry-after']) >= 1, 'with Retry-After')
  t.ok(await waitFor(() => results.filter((r) => r !== null).length === 8, 15_000), 'the queued three time out')
  const timedOut = results.filter((r): r is Got => r !== null && code(r) === 'ERR_QUEUE_TIMEOUT')
  t.equal(timedOut.length, 3)
  for (const r of timedOut) { t.equal(r.status, 503); t.ok(Number(r.headers['retry-after']) >= 1, 'with Retry-After') }
  t.ok(Math.max(...answeredAt.filter((ms, i) => results[i] !== null && code(results[i]!) === 'ERR_QUEUE_TIMEOUT')) >= 2500, 'not before queueTimeout')
  t.equal(collectStatus(proxy as never).routes[0].dropped, 8, 'every drop counted')
  t.same({ active: counters(proxy).active, queued: counters(proxy).queued }, { active: 2, queued: 0 })
  while (held.length > 0) held.shift()!()
  const all = await Promise.all(pending)
  t.equal(all.filter((r) => r.status === 200).length, 2, 'the two admitted are served')
  t.ok(await settled(proxy), 'counters back to 0')
  t.same(counters(proxy), ZERO)
})

for (const how of ['reset', 'FIN'] as const) {
  t.test(`an Upgrade waiting in the queue: its client leaves (${how}), its place is freed`, async (t) => {
    const held: Array<() => void> = []
    const be = await backend(t, (req, res) => { req.resume(); held.push(() => res.end('x')) })
    const { url, port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 3, queueTimeout: '60s' }] })
    const first = get(`${url}/first`)
    t.ok(await waitFor(() => held.length === 1, 10_000))
    const s = connect({ host: '127.0.0.1', port })
    t.teardown(() => { s.destroy() })
    s.on('error', () => {})
    s.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
    t.ok(await waitFor(() => counters(proxy).queued === 1, 10_000), 'queued')
    if (how === 'reset') s.resetAndDestroy()
    else s.end()
    t.ok(await waitFor(() => counters(proxy).queued === 0, 10_000), 'the queue place is freed')
    held.shift()!()
    t.equal((await first).status, 200)
    t.ok(await settled(proxy))
    t.equal(held.length, 0, 'the upgrade never reached the backend')
  })
}

t.test('http connections: 2 is never exceeded at the backend under 12 concurrent requests', async (t) => {
  let open = 0
  let max = 0
  const be = await rawBackend(t, (s: Socket) => {
    open++
    max = Math.max(max, open)
    s.on('close', () => { open-- })
    let buf = ''
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1')
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        buf = buf.slice(end + 4)
        // Answered on the next turn: the requests overlap.
        setImmediate(() => { if (!s.destroyed) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok') })
      }
    })
  })
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], options: { connections: 2 } }] })
  const all = await Promise.all(Array.from({ length: 12 }, (_, i) => get(`${url}/${i}`)))
  t.same(all.map((r) => r.status), Array(12).fill(200))
  t.ok(max <= 2, `at most 2 connections at once (saw ${max})`)
  t.ok(await settled(proxy))
})

for (const mode of ['keep', 'close-after', 'reset-some'] as const) {
  t.test(`fastcgi maxConnections: 2 is never exceeded at the backend (${mode})`, async (t) => {
    const dir = tempDir(t, 'pc-h7-fcgi-')
    writeFileSync(join(dir, 'x.php'), '')
    let open = 0
    let max = 0
    let n = 0
    const gone = new WeakSet<Socket>()
    /** The backend is done with a connection once it ended it, or it closed. */
    const done = (s: Socket): void => { if (!gone.has(s)) { gone.add(s); open-- } }
    const fake = await startFake(t, dir, {
      tcp: true,
      onRequest: (req) => {
        const i = n++
        setImmediate(() => {
          if (mode === 'reset-some' && i % 3 === 0) { done(req.sock); req.sock.resetAndDestroy(); return }
          respond(req)
          if (mode === 'close-after') { done(req.sock); req.sock.end() }
        })
      },
    })
    fake.server.on('connection', (s: Socket) => { open++; max = Math.max(max, open); s.on('close', () => done(s)) })
    const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'fastcgi', backends: [fake.endpoint.id], docroot: dir, options: { maxConnections: 2, discovery: false } }] })
    const all = await Promise.all(Array.from({ length: 12 }, (_, i) => get(`${url}/x.php?${i}`)))
    const statuses = all.map((r) => r.status)
    if (mode === 'reset-some') {
      for (const r of all) t.ok(r.status === 200 || (r.status === 502 && code(r) === 'ERR_BACKEND_RESET'), `${r.status} ${code(r)}`)
    } else {
      t.same(statuses, Array(12).fill(200))
    }
    t.ok(max <= 2, `at most 2 connections at once (saw ${max}, accepted ${fake.accepted})`)
    t.ok(await settled(proxy))
  })
}
