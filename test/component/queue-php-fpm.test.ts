/**
 * Route admission in front of real php-fpm workers: maxConcurrent matches the workers, the rest
 * wait in FIFO order; clients that leave while queued never reach PHP (the script counts its runs);
 * a POST runs exactly once; every counter the status page shows returns to 0.
 */
import t from 'tap'
import { readFileSync, writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { request, type ClientRequest } from 'node:http'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, type Got } from '../helpers/servers.js'
import { PHP_FPM, havePeer, startPhpFpm, tempDir } from '../fastcgi/helpers/peers.js'
import { collectStatus } from '../../src/status/model.js'

guardLeaks(t, { timeoutMs: 10_000 })

// Each run appends its name, then waits for its release file (bounded: 20 s).
const SCRIPT = `<?php
$n = $_GET['n'];
file_put_contents(__DIR__ . '/runs.log', $n . "\\n", FILE_APPEND | LOCK_EX);
$body = file_get_contents('php://input');
for ($i = 0; $i < 2000 && !file_exists(__DIR__ . '/go-' . $n); $i++) usleep(10000);
echo "ran $n " . strlen($body);
`

t.test('php-fpm behind maxConcurrent: FIFO, departed clients never run, POST once, counters to 0', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  const dir = tempDir(t, 'pc-queue-fpm-')
  writeFileSync(join(dir, 'q.php'), SCRIPT)
  await startPhpFpm(t, dir, 2)
  const { url, proxy } = await proxyServer(t, {
    routes: [{ protocol: 'fastcgi', backends: [`unix:${join(dir, 'fpm.sock')}`], docroot: dir, maxConcurrent: 2, queue: 4, queueTimeout: '60s' }],
  })
  const runs = (): string[] => existsSync(join(dir, 'runs.log')) ? readFileSync(join(dir, 'runs.log'), 'utf8').split('\n').filter(Boolean) : []
  const go = (n: string): void => writeFileSync(join(dir, `go-${n}`), '')
  const status = () => { const s = collectStatus(proxy as never); const r = s.routes[0]; return { inflight: s.inflight, active: r.active, queued: r.queued, be: r.backends.reduce((n, b) => n + b.inflight, 0) } }
  const clients: ClientRequest[] = []
  const ask = (n: string, body?: string): Promise<Got | Error> => new Promise((resolve) => {
    const req = request(`${url}/q.php?n=${n}`, { method: body === undefined ? 'GET' : 'POST', agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), trailers: res.trailers, rawHeaders: res.rawHeaders }))
      res.on('error', resolve)
    })
    req.on('error', resolve)
    clients.push(req)
    req.end(body)
  })

  const a = ask('a')
  const b = ask('b', 'post-body')
  t.ok(await waitFor(() => runs().length === 2, 10_000), 'two running in php-fpm')
  const queued = ['c', 'd', 'e', 'f'].map((n) => ask(n))
  t.ok(await waitFor(() => status().queued === 4, 10_000), 'four queued')
  const full = await get(`${url}/q.php?n=g`)
  t.equal(full.status, 503)
  t.match(full.body.toString(), /ERR_QUEUE_FULL/)
  // d and e leave while queued.
  clients[3].destroy()
  clients[4].destroy()
  t.ok(await waitFor(() => status().queued === 2, 10_000), 'their places are freed at once')
  // One place frees up: it goes to the head of the queue. (Releasing both at once would let the
  // two php-fpm workers log c and f in either order.)
  go('a')
  t.ok(await waitFor(() => runs().includes('c'), 10_000), 'the first free place went to c')
  t.notOk(runs().includes('f'), 'f still waits behind it: FIFO')
  for (const n of ['b', 'c', 'f']) go(n)
  const done = await Promise.all([a, b, queued[0], queued[3]])
  t.same(done.map((r) => (r as Got).body.toString()), ['ran a 0', 'ran b 9', 'ran c 0', 'ran f 0'])
  t.same(runs().sort(), ['a', 'b', 'c', 'f'], 'departed requests never ran; the POST ran once')
  t.ok(await waitFor(() => { const s = status(); return s.inflight === 0 && s.active === 0 && s.queued === 0 && s.be === 0 }, 10_000), 'counters back to 0')
  t.same(status(), { inflight: 0, active: 0, queued: 0, be: 0 })
})
