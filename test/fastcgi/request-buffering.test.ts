/**
 * Request buffering in front of real php-fpm (nginx `fastcgi_request_buffering on`, the route's
 * default `requestBuffering: true`): the whole request body is read before php-fpm is contacted.
 *
 * - A client that hangs up, or is cut with 408 (clientIdle, minUploadRate), halfway through its
 *   Content-Length body never runs the script: php-fpm would otherwise run it on a short body
 *   (php://input empty or cut). The oracle is a marker file the script appends to, read after a
 *   follow-up request completed on the pool's single worker (which took connections in order).
 * - A slow upload holds no php-fpm worker: with one worker, a fast request is served meanwhile.
 * - Expect: 100-continue uploads (1 MiB in memory→disk, 20 MiB on disk) arrive byte-exact.
 * - `requestBuffering: false` streams again: the single worker then waits on the slow upload.
 * - A buffered POST whose first backend refuses the connection is sent whole to the next one.
 *
 * Between the proxy and php-fpm sits a byte-counting unix-socket relay: it tells the test whether
 * php-fpm was contacted at all, and when a streamed body has reached it.
 */
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer as createHttpServer } from 'node:http'
import { connect, createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import type { RouteConfig } from '../../src/config/schema.js'
import { collectStatus } from '../../src/status/model.js'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { createProxy, silentLogger } from '../../src/index.js'
import { closeServer, get, listen } from '../helpers/servers.js'
import { Raw, postHead } from '../helpers/raw-client.js'
import { PHP_CGI, PHP_FPM, havePeer, startPhpFpm, tempDir } from './helpers/peers.js'

const SCRIPTS: Record<string, string> = {
  // Appends the length of the body it got, answers with the length and its sha256.
  'mark.php': `<?php
$in = file_get_contents('php://input');
file_put_contents(__DIR__ . '/marks.log', strlen($in) . "\\n", FILE_APPEND | LOCK_EX);
header('Content-Type: text/plain');
echo strlen($in), ' ', hash('sha256', $in);
`,
  'fast.php': "<?php echo 'fast';\n",
}

/** Counts the bytes the proxy sends towards php-fpm, and the connections it opens. */
async function relay (t: Test, dir: string, target: string) {
  const path = join(dir, 'relay.sock')
  const sockets = new Set<Socket>()
  const stats = { bytes: 0, connections: 0 }
  const server = createServer((down) => {
    stats.connections++
    const up = connect(target)
    sockets.add(down).add(up)
    down.on('data', (d: Buffer) => { stats.bytes += d.length })
    down.pipe(up).pipe(down)
    const gone = (): void => { down.destroy(); up.destroy(); sockets.delete(down); sockets.delete(up) }
    down.on('error', gone).on('close', gone)
    up.on('error', gone).on('close', gone)
  })
  await new Promise<void>((resolve) => server.listen(path, resolve))
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await closeServer(server)
  })
  return { path, stats }
}

const body = (n: number): Buffer => {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 7 + (i >> 11)) & 0xff
  return b
}
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
/** The spool's temp files are unlinked at once: their open fds are what is left of them. */
const spoolClosed = async (): Promise<boolean> => await waitFor(() => ![...openFds().values()].some((p) => p.includes('proxycore-spool-')), 10_000)

/** php-fpm with ONE worker behind the relay, and a proxy in front of it. */
async function rig (t: Test, route: Partial<RouteConfig> = {}, backendsFirst: string[] = []) {
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = tempDir(t, 'pc-rbuf-')
  for (const [name, text] of Object.entries(SCRIPTS)) writeFileSync(join(dir, name), text)
  const fpm = await startPhpFpm(t, dir, 1, 'php_admin_value[post_max_size] = 64M\nrequest_terminate_timeout = 60s')
  const r = await relay(t, dir, fpm.socketPath)
  // With the proxy's checkContinue listener, as the gateway registers it (node would answer 100 itself).
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'fastcgi', backends: [...backendsFirst, `unix:${r.path}`], docroot: dir, ...route } as RouteConfig] })
  const server = createHttpServer(proxy.handler)
  server.on('checkContinue', proxy.checkContinue)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const url = `http://127.0.0.1:${port}`
  const marks = (): string => existsSync(join(dir, 'marks.log')) ? readFileSync(join(dir, 'marks.log'), 'utf8') : ''
  const inflight = (): number => collectStatus(proxy as never).inflight
  return { dir, fpm, relay: r.stats, url, port, marks, inflight }
}

/**
 * After an aborted upload: the proxy is done with it, the script did not run within a deadline,
 * and still had not once a follow-up request was served by the same (single) worker.
 */
async function scriptNeverRan (t: Test, s: Awaited<ReturnType<typeof rig>>): Promise<void> {
  t.ok(await waitFor(() => s.inflight() === 0, 10_000), 'the proxy finished the aborted exchange')
  t.equal(s.relay.connections, 0, 'php-fpm was never contacted for it')
  t.notOk(await waitFor(() => s.marks() !== '', 2000), 'the script did not run', { marks: s.marks() })
  const next = await get(`${s.url}/fast.php`)
  t.equal(next.status, 200, 'a follow-up request is served by the single worker')
  t.equal(next.body.toString(), 'fast')
  t.equal(s.marks(), '', 'the script never ran on the short body')
}

t.test('a client that hangs up halfway through its Content-Length body never runs the script', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  const s = await rig(t)
  const c = new Raw(s.port, postHead('/mark.php', 5000))
  await c.send(body(2500))
  t.ok(await waitFor(() => s.inflight() === 1, 10_000), 'the request is in flight')
  // Streamed (requestBuffering: false), the half body reaches php-fpm at once: give it the time.
  await waitFor(() => s.relay.bytes >= 2500, 2000)
  c.socket.destroy()
  await scriptNeverRan(t, s)
})

t.test('408 by clientIdle in the middle of the body: the script never runs', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  const s = await rig(t, { timeouts: { clientIdle: '1s' } })
  const c = new Raw(s.port, postHead('/mark.php', 5000))
  await c.send(body(2500))
  t.ok(await c.answered(), 'answered')
  t.equal(c.status(), 408)
  t.match(c.raw, /ERR_REQUEST_TIMEOUT/)
  c.socket.destroy()
  await scriptNeverRan(t, s)
})

t.test('408 by minUploadRate in the middle of the body: the script never runs', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  const s = await rig(t, { timeouts: { clientIdle: 0, minUploadRate: 10_000, uploadGrace: '1s' } })
  const c = new Raw(s.port, postHead('/mark.php', 100_000))
  await c.send(body(100))
  t.ok(await c.answered(), 'answered')
  t.equal(c.status(), 408)
  t.match(c.raw, /ERR_UPLOAD_TOO_SLOW/)
  c.socket.destroy()
  await scriptNeverRan(t, s)
})

t.test('a slow upload holds no php-fpm worker: with one worker, another request is served meanwhile', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  const s = await rig(t)
  const whole = body(10_000)
  const slow = new Raw(s.port, postHead('/mark.php', whole.length))
  await slow.send(whole.subarray(0, 1000))
  t.ok(await waitFor(() => s.inflight() === 1, 10_000), 'the upload is in flight')
  let fast: string | null = null
  void get(`${s.url}/fast.php`).then((r) => { fast = `${r.status} ${r.body.toString()}` }, (err: Error) => { fast = err.message })
  t.ok(await waitFor(() => fast !== null, 15_000), 'the fast request completed while the upload is pending')
  t.equal(fast, '200 fast')
  t.equal(slow.raw, '', 'the upload is not answered yet')
  await slow.send(whole.subarray(1000))
  t.ok(await slow.answered(), 'the upload is answered once complete')
  t.equal(slow.status(), 200)
  t.equal(slow.body(), `10000 ${sha256(whole)}`)
  t.equal(s.marks(), '10000\n', 'the script ran once, on the whole body')
  slow.socket.destroy()
})

t.test('requestBuffering: false streams the body: the single worker waits on the slow upload', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  const s = await rig(t, { requestBuffering: false })
  const whole = body(10_000)
  const slow = new Raw(s.port, postHead('/mark.php', whole.length))
  await slow.send(whole.subarray(0, 1000))
  t.ok(await waitFor(() => s.relay.bytes >= 1000, 10_000), 'the first bytes of the body reached php-fpm')
  let fast: string | null = null
  void get(`${s.url}/fast.php`).then((r) => { fast = `${r.status} ${r.body.toString()}` }, (err: Error) => { fast = err.message })
  t.notOk(await waitFor(() => fast !== null, 1500), 'the fast request waits for the only worker')
  await slow.send(whole.subarray(1000))
  t.ok(await slow.answered(), 'the upload is answered')
  t.equal(slow.body(), `10000 ${sha256(whole)}`)
  t.ok(await waitFor(() => fast !== null, 15_000), 'then the fast request is served')
  t.equal(fast, '200 fast')
  slow.socket.destroy()
})

for (const size of [1024 * 1024, 20 * 1024 * 1024]) {
  t.test(`Expect: 100-continue upload of ${size >> 20} MiB arrives byte-exact (raw client waits for the 100)`, async (t) => {
    if (!havePeer(t, PHP_FPM)) return
    const s = await rig(t)
    const whole = body(size)
    const c = new Raw(s.port, postHead('/mark.php', size, 'Expect: 100-continue\r\n'))
    t.ok(await waitFor(() => /^HTTP\/1\.1 100 Continue\r\n\r\n/.test(c.raw), 10_000), '100 Continue before any body byte', { raw: c.raw })
    t.equal(s.relay.connections, 0, 'php-fpm not contacted yet')
    await c.send(whole)
    t.ok(await c.answered(60_000), 'answered')
    t.equal(c.status(), 200)
    t.equal(c.body(), `${size} ${sha256(whole)}`)
    c.socket.destroy()
    t.ok(await spoolClosed(), 'the spool fd is closed')
  })
}

t.test('curl -T of 20 MiB (Expect: 100-continue) arrives byte-exact', async (t) => {
  if (!havePeer(t, PHP_FPM) || !havePeer(t, '/usr/bin/curl')) return
  const s = await rig(t)
  const whole = body(20 * 1024 * 1024)
  const file = join(s.dir, 'upload.bin')
  writeFileSync(file, whole)
  const out = await new Promise<{ stdout: string, stderr: string }>((resolve, reject) => {
    execFile('/usr/bin/curl', ['-sS', '-v', '--expect100-timeout', '60', '-H', 'Expect: 100-continue', '-H', 'Content-Type: application/octet-stream', '-T', file, `${s.url}/mark.php`],
      { timeout: 120_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => { if (err !== null) reject(err); else resolve({ stdout, stderr }) })
  })
  t.match(out.stderr, /< HTTP\/1\.1 100 Continue/, 'curl got its 100')
  t.equal(out.stdout, `${whole.length} ${sha256(whole)}`)
})

t.test('a buffered POST whose first backend refuses the connection goes whole to the next one', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  // Listed first: least-connection takes it first (ties go in list order at the start).
  const s = await rig(t, {}, ['unix:/nonexistent/pc-rbuf-dead.sock'])
  const whole = body(1024 * 1024)
  const c = new Raw(s.port, postHead('/mark.php', whole.length))
  await c.send(whole)
  t.ok(await c.answered(), 'answered')
  t.equal(c.status(), 200)
  t.equal(c.body(), `${whole.length} ${sha256(whole)}`)
  t.equal(s.marks(), `${whole.length}\n`, 'the script ran once')
  c.socket.destroy()
  t.ok(await spoolClosed(), 'the spool fd is closed after the retry')
})


t.test('an upload longer than the headers timeout to a spawn started on demand: the wait for its process counts from the end of the body', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = tempDir(t, 'pc-rbuf-spawn-')
  writeFileSync(join(dir, 'mark.php'), SCRIPTS['mark.php'])
  const proxy = await createProxy({
    logger: silentLogger,
    spawns: { php: { binPath: PHP_CGI, socketName: '127.0.0.1:0', minProcs: 0, environment: { PHP_FCGI_CHILDREN: '0' }, stopTimeout: '2s' } },
    routes: [{ protocol: 'fastcgi', spawn: 'php', docroot: dir, timeouts: { headers: '1s' } }],
  })
  const server = createHttpServer(proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const whole = body(10)
  const c = new Raw(port, postHead('/mark.php', whole.length))
  await c.send(whole.subarray(0, 5))
  // Longer than the 1 s headers timeout (the floor of the wait for a process): not answered meanwhile.
  t.notOk(await waitFor(() => c.raw !== '', 2500), 'no answer while the body is still arriving')
  await c.send(whole.subarray(5))
  t.ok(await c.answered(30_000), 'answered')
  t.equal(c.status(), 200, c.raw.slice(0, 300))
  t.equal(c.body(), `10 ${sha256(whole)}`, 'the script got the whole body')
  c.socket.destroy()
})
