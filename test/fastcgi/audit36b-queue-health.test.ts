/**
 * Audit 36b: FastCGI requests that wait in the adapter's own queue behind `maxConnections` (a busy
 * but healthy backend) were never sent, yet they timed out with 504 ERR_HEADERS_TIMEOUT and each
 * counted as a failed attempt for passive health: the busy backend was disabled. The wait is the
 * route's queueTimeout's (503 ERR_QUEUE_TIMEOUT), as for an http route's `connections`, and no
 * failed attempt; timeouts.headers counts once the request has its connection.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { recordStates } from '../helpers/backend-states.js'
import { settled } from '../helpers/counters.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, rawBackend, type Got } from '../helpers/servers.js'
import { havePeer, PHP_CGI, startPhpCgi, tempDir } from './helpers/peers.js'

t.test('php-cgi busy behind maxConnections 1: the requests that wait for its connection get 503 ERR_QUEUE_TIMEOUT and never disable it', async (t) => {
  guardLeaks(t, { timeoutMs: 30_000 })
  if (!havePeer(t, PHP_CGI)) return
  const events = recordStates(t)
  const dir = tempDir(t)
  const release = join(dir, 'release')
  // The first request holds the one connection until the test releases it (bounded: 30 s at most).
  writeFileSync(join(dir, 'hold.php'), `<?php for ($i = 0; $i < 600; $i++) { clearstatcache(); if (file_exists(${JSON.stringify(release)})) break; usleep(50000); } echo "held";`)
  const a = await startPhpCgi(t, dir, 1)
  const b = await startPhpCgi(t, tempDir(t), 1)
  const { url, proxy } = await proxyServer(t, {
    routes: [{
      protocol: 'fastcgi', backends: [`unix:${a.socketPath}`, `unix:${b.socketPath}`], docroot: dir,
      // hash: one URL, one backend, so every request queues on it. The queue's wait (500 ms) is a
      // tenth of the head's (5 s): the first request, held until the others are answered, stays
      // well inside its headers timeout. Before the fix all eight ended at 5 s with 504.
      balance: 'hash', disableTime: '60s', queueTimeout: '500ms', timeouts: { headers: '5s' }, options: { maxConnections: 1 },
    } as never],
  })
  const done: Got[] = []
  const all = Promise.all(Array.from({ length: 8 }, async () => {
    const r = await get(`${url}/hold.php`)
    done.push(r)
    return r
  }))
  t.ok(await waitFor(() => done.length >= 7, 20_000), 'seven requests answered while the first holds the connection')
  writeFileSync(release, '')
  const rs = await all
  const codes = rs.map((r) => r.status === 200 ? r.body.toString() : `${r.status} ${/ERR_[A-Z_]+/.exec(r.body.toString())?.[0] ?? ''}`)
  t.equal(codes.filter((c) => c === 'held').length, 1, `the first is served (${codes.join(', ')})`)
  t.equal(codes.filter((c) => c === '503 ERR_QUEUE_TIMEOUT').length, 7, 'the others waited queueTimeout for the connection: 503 ERR_QUEUE_TIMEOUT')
  const pool = proxy.routes[0]!.pool
  t.same(pool.backends.map((x) => x.state), ['up', 'up'], 'no backend disabled')
  t.same(events.filter((e) => e.kind === 'backend:disabled'), [], 'no backend:disabled event')
  t.ok(await settled(proxy), 'counters back to 0')
})

t.test('a request that waits for discovery waits for a connect, not behind the cap: no 503 ERR_QUEUE_TIMEOUT', async (t) => {
  guardLeaks(t, { timeoutMs: 30_000 })
  // A fault no real peer gives: it accepts and never answers, GET_VALUES included.
  const silent = await rawBackend(t, () => {})
  const { url, proxy } = await proxyServer(t, {
    routes: [{
      protocol: 'fastcgi', backends: [silent.address], scriptFilename: '/x.php',
      // Discovery gives up after 1.5 s, seven times queueTimeout; the head is late at 3 s.
      queueTimeout: '200ms', timeouts: { headers: '3s' }, options: { maxConnections: 1, discoveryTimeout: 1500 },
    } as never],
  })
  const r = await get(`${url}/x.php`)
  t.equal(`${r.status} ${/ERR_[A-Z_]+/.exec(r.body.toString())?.[0] ?? ''}`, '504 ERR_HEADERS_TIMEOUT', 'the request was sent after discovery; the silent backend is late with its head')
  t.ok(await settled(proxy), 'counters back to 0')
})
