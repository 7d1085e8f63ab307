/**
 * Passive health after the connect (nginx max_fails / fail_timeout): a backend that accepts and
 * then resets before the response head, or never answers (headers timeout), is disabled after
 * maxFails (3) such failures within disableTime, gets nothing for disableTime, then is tried again.
 * Through createProxy (proxyServer) with real peers: node:http backends (one destroys the socket
 * on receipt), two php-cgi in a FastCGI pool (one started with HANG=1, where the script sleeps
 * beyond the headers timeout). What never counts: a client's abort, any
 * status the backend answers, and failures with a success in between; a pool's last usable
 * backend is never disabled this way.
 */
import t, { type Test } from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { recordStates } from '../helpers/backend-states.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, get, proxyServer, rawRequest, upgradeBackend } from '../helpers/servers.js'
import { havePeer, PHP_CGI, startPhpCgi, tempDir } from '../fastcgi/helpers/peers.js'
import { collectStatus } from '../../src/status/model.js'
import type { CreateProxyOptions } from '../../src/index.js'

type RouteConfig = CreateProxyOptions['routes'][number]

/** A node:http backend that answers its name, or a 503 for /busy, and counts what it got. */
async function good (t: Test, name: string) {
  const seen: string[] = []
  const be = await backend(t, (req, res) => {
    seen.push(req.url ?? '')
    if (req.url === '/busy') { res.writeHead(503); res.end('busy'); return }
    res.end(name)
  })
  return { ...be, seen }
}

/** A node:http backend that destroys the connection when a request arrives (a crashing worker). */
async function resetting (t: Test, only?: string) {
  const seen: string[] = []
  const be = await backend(t, (req, res) => {
    seen.push(req.url ?? '')
    if (only === undefined || req.url === only) req.socket.destroy()
    else res.end('ok')
  })
  return { ...be, seen }
}

t.test('a backend that resets every request: disabled after 3, skipped for disableTime, then tried again', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const events = recordStates(t)
  const a = await good(t, 'a')
  const bad = await resetting(t)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [a.address, bad.address], balance: 'round-robin', disableTime: '4s' }] })
  const pool = proxy.routes[0].pool
  const b = pool.backends.find((x) => x.endpoint.id === bad.address)!
  // Each GET that lands on the bad one is sent again to `a` (reset before any byte, idempotent).
  for (let i = 0; i < 12 && bad.seen.length < 3; i++) t.equal((await get(`${url}/w${i}`)).status, 200)
  t.equal(bad.seen.length, 3, 'the bad backend got three requests')
  t.equal(b.state, 'disabled', 'and is disabled after its third failure')
  t.equal(b.failures, 0, 'no connect failed')
  t.match(b.lastError, /^ERR_BACKEND_(RESET|CLOSED)$/)
  const ev = events.filter((e) => e.kind === 'backend:disabled' && e.backend === bad.address)
  t.equal(ev.length, 1, 'one backend:disabled event')
  t.match(ev[0]?.reason ?? '', /^ERR_BACKEND_(RESET|CLOSED) \(3 failed attempts within 4000 ms\)$/, `the reason names the failure (${ev[0]?.reason})`)
  const row = collectStatus(proxy).routes[0].backends.find((x) => x.id === bad.address)
  t.equal(row?.state, 'disabled', 'the status shows it disabled')

  const seenA = a.seen.length
  for (let i = 0; i < 10; i++) t.equal((await get(`${url}/d${i}`)).body.toString(), 'a')
  t.ok(Date.now() < b.disabledUntil, 'still within disableTime (else the machine is too slow for this test)')
  t.equal(bad.seen.length, 3, 'no request reached the disabled backend')
  t.equal(a.seen.length, seenA + 10)

  t.ok(await waitFor(() => Date.now() >= b.disabledUntil, 20_000), 'disableTime over')
  for (let i = 0; i < 4 && bad.seen.length === 3; i++) t.equal((await get(`${url}/again${i}`)).status, 200)
  t.equal(bad.seen.length, 4, 'tried again once disableTime is over')
  t.ok(events.some((e) => e.kind === 'backend:enabled' && e.backend === bad.address), 'backend:enabled')
  t.notOk(events.some((e) => e.kind === 'pool:down'), 'the pool never went down')
})

t.test('php-cgi next to a php-cgi whose script hangs: 504s until 3 headers timeouts, then all to php-cgi', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const events = recordStates(t)
  const dir = tempDir(t)
  // The same script hangs (20 s, beyond every wait here) in the php-cgi started with HANG=1.
  writeFileSync(join(dir, 'index.php'), '<?php if (getenv("HANG") === "1") { file_put_contents(__DIR__ . "/hung.log", "x", FILE_APPEND | LOCK_EX); sleep(20); } echo "php";')
  const php = await startPhpCgi(t, dir, 2)
  const hungPeer = await startPhpCgi(t, tempDir(t), 4, { HANG: '1' })
  const hungRuns = (): number => { try { return readFileSync(join(dir, 'hung.log'), 'utf8').length } catch { return 0 } }
  const hung = { address: `unix:${hungPeer.socketPath}` }
  const phpAddr = `unix:${php.socketPath}`
  const { url, proxy } = await proxyServer(t, {
    routes: [{ protocol: 'fastcgi', backends: [hung.address, phpAddr], docroot: dir, balance: 'round-robin', disableTime: '8s', timeouts: { headers: '1s' } } as RouteConfig],
  })
  const pool = proxy.routes[0].pool
  const h = pool.backends.find((x) => x.endpoint.id === hung.address)!
  const statuses: number[] = []
  for (let i = 0; i < 12 && h.state === 'up'; i++) statuses.push((await get(`${url}/index.php?w=${i}`)).status)
  t.equal(statuses.filter((s) => s === 504).length, 3, `three headers timeouts (${statuses.join(',')})`)
  t.ok(statuses.every((s) => s === 504 || s === 200), 'the rest served by php-cgi')
  t.equal(hungRuns(), 3, 'the hung php-cgi got three requests')
  t.equal(h.state, 'disabled')
  t.equal(h.lastError, 'ERR_HEADERS_TIMEOUT')
  t.match(events.find((e) => e.kind === 'backend:disabled' && e.backend === hung.address)?.reason ?? '', /^ERR_HEADERS_TIMEOUT \(3 /)
  for (let i = 0; i < 8; i++) {
    const r = await get(`${url}/index.php?d=${i}`)
    t.same([r.status, r.body.toString()], [200, 'php'], 'served by php-cgi')
  }
  t.ok(Date.now() < h.disabledUntil, 'still within disableTime')
  t.equal(hungRuns(), 3, 'nothing more reached the hung php-cgi')
  const p = pool.backends.find((x) => x.endpoint.id === phpAddr)!
  t.equal(p.state, 'up')
  t.equal(p.attemptFails, 0)
})

t.test('failures with successes in between never disable (a request that crashes its worker)', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  // Both backends crash on /boom and serve everything else: the query of death.
  const x = await resetting(t, '/boom')
  const y = await resetting(t, '/boom')
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [x.address, y.address], balance: 'round-robin', disableTime: '60s' }] })
  const pool = proxy.routes[0].pool
  for (let i = 0; i < 6; i++) {
    t.equal((await get(`${url}/boom`)).status, 502, 'the crashing request fails (on each backend once)')
    t.equal((await get(`${url}/ok${i}a`)).status, 200)
    t.equal((await get(`${url}/ok${i}b`)).status, 200)
  }
  t.ok(x.seen.filter((u) => u === '/boom').length >= 3 && y.seen.filter((u) => u === '/boom').length >= 3, 'each backend crashed at least 3 times')
  t.same(pool.backends.map((b) => b.state), ['up', 'up'], 'neither is disabled: a success resets the count')
})

t.test('answers (a 503 included) and client aborts never count', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const a = await good(t, 'a')
  // Answers /busy with a 503 too; holds every other request until the client goes.
  const held: string[] = []
  const slow = await backend(t, (req, res) => {
    if (req.url === '/busy') { res.writeHead(503); res.end('busy'); return }
    held.push(req.url ?? '')
  })
  const { url, port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [a.address, slow.address], balance: 'round-robin', disableTime: '60s', timeouts: { headers: '30s' } }] })
  const pool = proxy.routes[0].pool
  const [pa, ps] = [a.address, slow.address].map((id) => pool.backends.find((x) => x.endpoint.id === id)!)
  for (let i = 0; i < 8; i++) t.equal((await get(`${url}/busy`)).status, 503)
  t.same([pa.state, ps.state], ['up', 'up'], 'a 503 is an answer')
  let aborted = 0
  for (let i = 0; i < 10 && aborted < 4; i++) {
    const before = held.length
    const req = request({ port, path: `/abort${i}` })
    req.on('error', () => {})
    const answered = new Promise<boolean>((resolve) => { req.on('response', (r) => { r.resume(); r.on('end', () => resolve(true)) }) })
    req.end()
    const where = await Promise.race([answered, waitFor(() => held.length > before, 10_000).then(() => false)])
    if (!where) { req.destroy(); aborted++ }
  }
  t.ok(aborted >= 4, `four clients went away while the slow backend held them (${aborted})`)
  t.ok(await waitFor(() => ps.inflight === 0, 10_000), 'the aborted exchanges are over')
  t.same([pa.state, ps.state], ['up', 'up'])
  t.same([pa.attemptFails, ps.attemptFails], [0, 0], 'nothing counted')
})

t.test('the last usable backend is never disabled', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const only = await resetting(t)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [only.address], disableTime: '60s' }] })
  for (let i = 0; i < 5; i++) t.equal((await get(`${url}/x${i}`)).status, 502)
  t.ok(only.seen.length >= 5, 'every request tried it')
  t.equal(proxy.routes[0].pool.backends[0].state, 'up')

  const p = await resetting(t)
  const q = await resetting(t)
  const two = await proxyServer(t, { routes: [{ protocol: 'http', backends: [p.address, q.address], balance: 'round-robin', disableTime: '60s' }] })
  for (let i = 0; i < 8; i++) t.equal((await get(`${two.url}/y${i}`)).status, 502)
  const states = two.proxy.routes[0].pool.backends.map((b) => b.state)
  t.equal(states.filter((s) => s === 'up').length, 1, `one of two always-failing backends stays routable (${states.join(',')})`)
  t.ok(p.seen.length + q.seen.length >= 8)
})

t.test('upgrades: a backend that closes before its 101 is disabled after 3; the 101s reset nothing else', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const events = recordStates(t)
  const ok = await upgradeBackend(t, (_req, socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x-test\r\n\r\nhi')
    socket.end()
  })
  const bad = await upgradeBackend(t, (_req, socket) => { socket.destroy() })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [ok.address, bad.address], balance: 'round-robin', disableTime: '60s' }] })
  const b = proxy.routes[0].pool.backends.find((x) => x.endpoint.id === bad.address)!
  const upgrade = async (i: number): Promise<string> =>
    (await rawRequest(port, `GET /u${i} HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: x-test\r\n\r\n`)).split('\r\n')[0]
  const lines: string[] = []
  for (let i = 0; i < 12 && b.state === 'up'; i++) lines.push(await upgrade(i))
  t.equal(bad.sockets.length, 3, `the closing backend got three upgrades (${lines.join(' | ')})`)
  t.equal(lines.filter((l) => l.startsWith('HTTP/1.1 502')).length, 3)
  t.equal(b.state, 'disabled')
  t.match(events.find((e) => e.kind === 'backend:disabled' && e.backend === bad.address)?.reason ?? '', /^ERR_BACKEND_CLOSED \(3 /)
  for (let i = 0; i < 5; i++) t.match(await upgrade(100 + i), /^HTTP\/1\.1 101 /)
  t.equal(bad.sockets.length, 3, 'nothing more reached it')
})

t.test('the route option maxFails: 1 disables at the first failed attempt, 0 never', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  for (const [maxFails, after] of [[1, 1], [0, 0]] as const) {
    const a = await good(t, 'a')
    const bad = await resetting(t)
    const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [a.address, bad.address], balance: 'round-robin', disableTime: '30s', maxFails }] })
    const b = proxy.routes[0].pool.backends.find((x) => x.endpoint.id === bad.address)!
    for (let i = 0; i < 8; i++) t.equal((await get(`${url}/m${i}`)).status, 200)
    if (after > 0) {
      t.equal(bad.seen.length, after, `maxFails ${maxFails}: the bad backend got ${after} request(s), then none`)
      t.equal(b.state, 'disabled')
    } else {
      t.ok(bad.seen.length >= 4, `maxFails 0: it keeps its share, every other request at least (${bad.seen.length} of 8)`)
      t.equal(b.state, 'up')
    }
  }
})
