/**
 * ACCEPTANCE PLAN (RELIABILITY.md): resource bounds with real peers.
 * AC-58 front-side slowloris against a host configured with the case's node:http timeouts;
 * AC-80 client aborts during php-fpm requests; AC-84 backpressure from a slow client that then
 * closes (php-fpm streaming, and a shell CGI streaming /dev/zero), scaled from 512 MiB / 10 s to
 * what a per-commit run can afford (the bound is the same: host RSS growth < 64 MiB).
 */
import t, { type Test } from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { guardLeaks, openFds, processGroup, waitFor } from '../helpers/leaks.js'
import { backend, closeServer, get, listen } from '../helpers/servers.js'
import { counters, settled } from '../helpers/counters.js'
import { PHP_FPM, havePeer, startPhpFpm, tempDir } from '../fastcgi/helpers/peers.js'
import { cgiProxy, writeScripts } from '../cgi/harness.js'
import { createProxy, silentLogger, type CreateProxyOptions, type Proxy } from '../../src/index.js'

type RouteConfig = CreateProxyOptions['routes'][number]
const MiB = 1024 * 1024

/** A host as RELIABILITY's AC-58 configures it: proxy.handler on a node:http server with timeouts. */
async function host (t: Test, config: CreateProxyOptions, serverOpts: Parameters<typeof createServer>[0]): Promise<{ port: number, url: string, proxy: Proxy }> {
  const proxy = await createProxy({ logger: silentLogger, ...config })
  const server = createServer(serverOpts, proxy.handler)
  server.on('clientError', proxy.clientError)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  return { port, url: `http://127.0.0.1:${port}`, proxy }
}

t.test('AC-58 Front-side slowloris (host configured as documented)', async (t) => {
  guardLeaks(t)
  let backendRequests = 0
  const be = await backend(t, (_req, res) => { backendRequests++; res.end('ok') })
  const { port, url, proxy } = await host(t, { routes: [{ protocol: 'http', backends: [be.address] } as RouteConfig] }, {
    headersTimeout: 2000, requestTimeout: 5000, connectionsCheckingInterval: 250,
  })
  const fdsBefore = openFds().size
  const N = 200
  const head = 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(100)
  const started = Date.now()
  const conns: Array<{ sock: Socket, closedAt: number, got: string }> = []
  for (let i = 0; i < N; i++) {
    const c = { sock: connect({ host: '127.0.0.1', port }), closedAt: 0, got: '' }
    c.sock.on('data', (d: Buffer) => { c.got += d.toString('latin1') })
    c.sock.on('error', () => {})
    c.sock.on('close', () => { c.closedAt = Date.now() })
    conns.push(c)
  }
  // One header byte per second on every connection.
  let sent = 1
  const drip = setInterval(() => {
    for (const c of conns) if (c.closedAt === 0 && !c.sock.destroyed) c.sock.write(head[sent % head.length])
    sent++
  }, 1000)
  t.teardown(() => clearInterval(drip))
  for (const c of conns) c.sock.write(head[0])
  // A normal request during the attack.
  await waitFor(() => conns.every((c) => c.sock.readyState === 'open'), 5000)
  const at = Date.now()
  const normal = await get(`${url}/`)
  const normalMs = Date.now() - at
  t.equal(normal.status, 200)
  t.comment(`AC-58 normal request during the attack: ${normalMs} ms`)
  t.ok(normalMs < 1000, `AC-58 a normal request during the attack is answered promptly (${normalMs} ms; case: < 200 ms)`)
  t.ok(await waitFor(() => conns.every((c) => c.closedAt !== 0), 15_000, 20), 'AC-58 every slow connection is closed')
  clearInterval(drip)
  const last = Math.max(...conns.map((c) => c.closedAt - started))
  const first = Math.min(...conns.map((c) => c.closedAt - started))
  t.comment(`AC-58 slow connections closed between ${first} and ${last} ms`)
  t.ok(first >= 1500, `none closed long before headersTimeout (first at ${first} ms)`)
  t.ok(last <= 5000, `all closed by 2.5 s, with a 2x margin for a shared machine (last at ${last} ms)`)
  const answers = new Set(conns.map((c) => c.got === '' ? 'close' : c.got.slice(0, 12)))
  t.ok([...answers].every((a) => a === 'close' || a === 'HTTP/1.1 408'), `408 or close only: ${[...answers].join(', ')}`)
  t.equal(backendRequests, 1, 'AC-58 no backend request was started for the slow connections (only the normal one)')
  t.ok(await settled(proxy), `counters back to 0: ${JSON.stringify(counters(proxy))}`)
  const fdsOk = await waitFor(() => openFds().size <= fdsBefore, 3000, 20)
  t.ok(fdsOk, `AC-58 fds back to baseline within 3 s: ${openFds().size} vs ${fdsBefore}`)
})

/** This process's unix-domain sockets (its FastCGI connections to php-fpm; the HTTP ones are TCP). */
function unixSockets (): number {
  const inodes = new Set(readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1).map((l) => l.trim().split(/\s+/)[6]).filter(Boolean))
  let n = 0
  for (const target of openFds().values()) {
    const m = /^socket:\[(\d+)\]$/.exec(target)
    if (m !== null && inodes.has(m[1])) n++
  }
  return n
}

t.test('AC-80 Client abort during a FastCGI request (php-fpm, pm=static, max_children=2)', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-acb-')
  writeFileSync(join(dir, 'sleep.php'), "<?php sleep(10); echo 'late';\n")
  writeFileSync(join(dir, 'ok.php'), "<?php echo 'ok ', getmypid();\n")
  const fpm = await startPhpFpm(t, dir, 2, 'request_terminate_timeout = 3s')
  const { port, url, proxy } = await host(t, { routes: [{ protocol: 'fastcgi', backends: [`unix:${fpm.socketPath}`], docroot: dir, timeouts: { headers: 30_000 } } as RouteConfig] }, {})
  const fdsBefore = openFds().size
  const unixBefore = unixSockets()
  const clients = [0, 1].map(() => {
    const s = connect({ host: '127.0.0.1', port })
    s.on('error', () => {})
    s.write('GET /sleep.php HTTP/1.1\r\nHost: x\r\n\r\n')
    return s
  })
  t.ok(await waitFor(() => counters(proxy).backendInflight === 2, 5000), 'both requests reached php-fpm')
  t.ok(await waitFor(() => unixSockets() >= unixBefore + 2, 5000), `two FastCGI connections open: ${unixSockets() - unixBefore}`)
  const sentAt = Date.now()
  await waitFor(() => Date.now() - sentAt >= 200, 1000, 20)
  const abortAt = Date.now()
  for (const s of clients) s.destroy()
  t.ok(await waitFor(() => counters(proxy).inflight === 0 && counters(proxy).backendInflight === 0, 2000, 5), 'AC-80 the in-flight count drops at once')
  const dropMs = Date.now() - abortAt
  t.ok(await waitFor(() => unixSockets() <= unixBefore, 1000, 5), `AC-80 both FastCGI connections closed (200 ms in the case, 5x margin): ${unixSockets() - unixBefore} left after ${Date.now() - abortAt} ms`)
  t.comment(`AC-80 in-flight 0 after ${dropMs} ms`)
  t.ok(dropMs < 1000, `within 200 ms in the case, ${dropMs} ms measured (5x margin)`)
  const next = await Promise.all([get(`${url}/ok.php`), get(`${url}/ok.php`)])
  const doneMs = Date.now() - abortAt
  t.same(next.map((r) => r.status), [200, 200], 'AC-80 the two new requests complete')
  t.comment(`AC-80 new requests done ${doneMs} ms after the aborts (request_terminate_timeout 3 s)`)
  t.ok(doneMs < 8000, `within 4 s in the case (workers freed by request_terminate_timeout), ${doneMs} ms measured (2x margin)`)
  t.ok(await settled(proxy), 'counters back to 0')
  // The new requests leave kept-alive FastCGI connections in the pool: those are not leaks.
  const kept = unixSockets() - unixBefore
  t.ok(await waitFor(() => openFds().size <= fdsBefore + kept, 3000, 20), `AC-80 H-FD Δ ≤ 0 besides ${kept} pooled FastCGI connection(s): ${openFds().size} vs ${fdsBefore}`)
})

/** Read `url` at about `rate` bytes/s for `ms`, then close; the peak RSS seen meanwhile. */
async function slowRead (port: number, path: string, rate: number, ms: number): Promise<{ got: number, head: string, peakRss: number, baseRss: number }> {
  global.gc?.()
  const baseRss = process.memoryUsage().rss
  let peakRss = baseRss
  return await new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port })
    s.on('error', () => {})
    let got = 0
    let head = ''
    const start = Date.now()
    s.on('data', (d: Buffer) => {
      if (head === '' || !head.includes('\r\n\r\n')) head += d.toString('latin1', 0, Math.min(d.length, 400))
      got += d.length
      peakRss = Math.max(peakRss, process.memoryUsage().rss)
      const due = ((Date.now() - start) / 1000) * rate
      if (got > due) { s.pause(); setTimeout(() => s.resume(), Math.min(1000, ((got - due) / rate) * 1000)) }
      if (Date.now() - start >= ms) { s.destroy(); resolve({ got, head, peakRss, baseRss }) }
    })
    s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`)
  })
}

t.test('AC-84 Backpressure with a slow client', async (t) => {
  t.test('AC-84 php-fpm streaming 512 MiB to a 5 MiB/s client that closes after 3 s', async (t) => {
    if (!havePeer(t, PHP_FPM)) return
    guardLeaks(t)
    const dir = tempDir(t, 'pc-acb-')
    writeFileSync(join(dir, 'stream.php'), "<?php header('Content-Type: application/octet-stream'); $c = str_repeat('z', 65536); for ($i = 0; $i < 8192; $i++) { echo $c; flush(); }\n")
    writeFileSync(join(dir, 'ok.php'), "<?php echo 'ok';\n")
    const fpm = await startPhpFpm(t, dir, 1, 'request_terminate_timeout = 20s\nphp_admin_value[output_buffering] = 0')
    const { port, url, proxy } = await host(t, { routes: [{ protocol: 'fastcgi', backends: [`unix:${fpm.socketPath}`], docroot: dir, timeouts: { headers: 30_000 } } as RouteConfig] }, {})
    const unixBefore = unixSockets()
    const r = await slowRead(port, '/stream.php', 5 * MiB, 3000)
    const growth = (r.peakRss - r.baseRss) / MiB
    t.match(r.head, /^HTTP\/1\.1 200 /)
    t.comment(`AC-84 php-fpm: read ${(r.got / MiB).toFixed(1)} MiB in 3 s, host RSS growth ${growth.toFixed(1)} MiB`)
    t.ok(r.got < 64 * MiB, 'the client set the pace')
    t.ok(growth < 64, `AC-84 host RSS growth ${growth.toFixed(1)} MiB < 64 MiB`)
    const closedAt = Date.now()
    t.ok(await settled(proxy), 'AC-84 the exchange ends after the client closes')
    t.ok(await waitFor(() => unixSockets() <= unixBefore, 5000, 10), `AC-84 the FastCGI connection is closed: ${unixSockets() - unixBefore} left`)
    // One php worker: it is free again only when the streaming script stopped.
    const next = await get(`${url}/ok.php`)
    const freedMs = Date.now() - closedAt
    t.equal(next.status, 200)
    t.comment(`AC-84 php worker free ${freedMs} ms after the close`)
    t.ok(freedMs < 20_000, `AC-84 the worker is freed within request_terminate_timeout (${freedMs} ms)`)
  })

  t.test('AC-84 shell CGI `head -c 512M /dev/zero`: the process group is killed after the client closes', async (t) => {
    guardLeaks(t)
    const dir = tempDir(t, 'pc-acb-')
    writeScripts(join(dir, 'www'), { 'zero.sh': '#!/bin/sh\nprintf "Content-Type: application/octet-stream\\r\\nX-Pgid: %s\\r\\n\\r\\n" "$(ps -o pgid= $$ | tr -d " ")"\nexec head -c 536870912 /dev/zero\n' })
    const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: join(dir, 'www'), match: { prefix: '/' } } as RouteConfig])
    const r = await slowRead(p.port, '/zero.sh', 5 * MiB, 3000)
    const growth = (r.peakRss - r.baseRss) / MiB
    t.match(r.head, /^HTTP\/1\.1 200 /)
    const pgid = Number(/\r\nx-pgid: (\d+)\r\n/i.exec(r.head)?.[1] ?? 0)
    t.ok(pgid > 0, `the script told its process group: ${pgid}`)
    t.comment(`AC-84 CGI: read ${(r.got / MiB).toFixed(1)} MiB in 3 s, host RSS growth ${growth.toFixed(1)} MiB`)
    t.ok(growth < 64, `AC-84 host RSS growth ${growth.toFixed(1)} MiB < 64 MiB`)
    t.ok(await waitFor(() => processGroup(pgid).length === 0, 10_000, 20), `AC-84 the CGI process group is gone after the close: ${processGroup(pgid).map((x) => `${x.pid} ${x.comm} ${x.state}`).join(', ')}`)
  })
})
