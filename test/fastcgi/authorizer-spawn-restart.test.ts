/**
 * A spawned authorizer whose only process died waits for the process the spawn starts in its place,
 * as the route's own requests do (exchange.ts waitForRestart, spawn-wait.ts waitReplacement), within
 * the authorization's one deadline (its `timeout`): a request sent right after the SIGKILL, and one
 * whose authorizer process is killed while it has the request (its connection closed before any
 * byte of answer), both get their 200. Before, the authorizer failed over only among the backends
 * listed at the time, and with its only process gone the client got a 502.
 * php-cgi (PHP_FCGI_CHILDREN=0: one process, no master) is the spawned authorizer; its script
 * holds a request whose query has `hold` (writing a marker first) until the test kills it, once.
 */
import t, { type Test } from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'
import { havePeer, PHP_CGI, tempDir } from './helpers/peers.js'
import type { Proxy } from '../../src/index.js'

const AUTH_PHP = `<?php
if (getenv('FCGI_ROLE') !== 'AUTHORIZER') { http_response_code(500); exit; }
if (strpos($_SERVER['QUERY_STRING'] ?? '', 'hold') !== false && !file_exists(__DIR__ . '/held')) {
  touch(__DIR__ . '/held');
  sleep(20);
}
header('Variable-X-Auth-Pid: ' . getmypid());`

async function setUp (t: Test, restartDelay = '50ms', timeout = '15s'): Promise<{ url: string, proxy: Proxy, root: string }> {
  const root = tempDir(t, 'pc-authz-restart-')
  writeFileSync(join(root, 'auth.php'), AUTH_PHP)
  const up = await backend(t, (req, res) => res.end(`app ${req.url ?? ''}`))
  const { url, proxy } = await proxyServer(t, {
    spawns: {
      auth: {
        binPath: `${PHP_CGI} -n`, socketName: join(root, 'auth.sock'), environment: { PHP_FCGI_CHILDREN: '0' },
        maxProcs: 1, stopTimeout: '1s', restart: { initialDelay: restartDelay, maxDelay: restartDelay, maxStarts: 50 },
      },
    },
    routes: [{ match: { prefix: '/api/' }, protocol: 'http', backends: [up.address], authorizer: { spawn: 'auth', scriptFilename: join(root, 'auth.php'), timeout } }],
  })
  return { url, proxy, root }
}

/** The pid of the authorizer's ready process, once there is one. */
async function readyPid (proxy: Proxy): Promise<number> {
  let pid = 0
  const ok = await waitFor(() => {
    const p = proxy.spawns?.status()[0].processes.find((q) => q.state === 'ready')
    pid = p?.pid ?? 0
    return pid > 0
  }, 15_000)
  if (!ok) throw new Error('no ready authorizer process')
  return pid
}

if (havePeer(t, PHP_CGI)) {
  t.test('its only process SIGKILLed, a request sent at once waits for the restarted one: 200', async (t) => {
    guardLeaks(t, { timeoutMs: 10_000 })
    const { url, proxy } = await setUp(t)
    t.equal((await get(`${url}/api/first`)).status, 200, 'the authorizer answers')
    const got: string[] = []
    for (let i = 0; i < 5; i++) {
      const pid = await readyPid(proxy)
      process.kill(pid, 'SIGKILL')
      const r = await get(`${url}/api/after-kill-${i}`)
      got.push(`${r.status} ${r.body.toString()}`)
    }
    t.same(got, Array.from({ length: 5 }, (_, i) => `200 app /api/after-kill-${i}`), 'every request after a kill allowed')
  })

  // Warm: the authorization goes on the connection of an earlier one, and the FastCGI client sends
  // it once more on a fresh connection when that closes (connection.ts, the keep-alive race): that
  // connect is refused. Cold: the process starts for this request, whose connection is its first;
  // it is closed or reset before any byte of answer.
  for (const warm of [true, false]) {
    t.test(`its only process SIGKILLed while it has the authorization (${warm ? 'reused' : 'fresh'} connection): the restarted one answers, 200`, async (t) => {
      guardLeaks(t, { timeoutMs: 10_000 })
      const { url, proxy, root } = await setUp(t)
      if (warm) t.equal((await get(`${url}/api/first`)).status, 200, 'the authorizer answers')
      const pending = get(`${url}/api/x?hold`)
      t.ok(await waitFor(() => existsSync(join(root, 'held')), 15_000), 'the authorizer has the request')
      const pid = await readyPid(proxy)
      process.kill(pid, 'SIGKILL')
      const r = await pending
      t.equal(r.status, 200, r.body.toString())
      t.equal(r.body.toString(), 'app /api/x?hold')
      const now = await readyPid(proxy)
      t.not(now, pid, 'answered by the restarted process')
    })
  }

  t.test('a restart later than the authorization\'s timeout: the last attempt\'s failure, at that deadline', async (t) => {
    guardLeaks(t, { timeoutMs: 10_000 })
    // The restart comes after its 30 s backoff; the authorization may take 2 s from its first attempt.
    const { url, proxy, root } = await setUp(t, '30s', '2s')
    t.equal((await get(`${url}/api/first`)).status, 200, 'the authorizer answers')
    const pid = await readyPid(proxy)
    const t0 = Date.now()
    const pending = get(`${url}/api/x?hold`)
    t.ok(await waitFor(() => existsSync(join(root, 'held')), 15_000), 'the authorizer has the request')
    process.kill(pid, 'SIGKILL')
    const r = await pending
    const ms = Date.now() - t0
    t.equal(r.status, 502, r.body.toString())
    t.match(r.body.toString(), /ERR_BACKEND_(RESET|CLOSED)|ERR_CONNECT_REFUSED/, 'the last attempt\'s error')
    t.ok(ms >= 1500 && ms < 15_000, `answered at the deadline, not the restart (${ms} ms)`)
  })
}
