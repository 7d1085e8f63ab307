/**
 * A buffered request body (the route's `requestBuffering`, default on: the core spools it whole,
 * memory up to 64 KiB, then an unlinked temp file) is replayed on the next backend when the first
 * one answers FCGI_OVERLOADED after reading it, as nginx's `fastcgi_next_upstream` does with a
 * buffered body. The first backend is FAKE-FCGI (php-fpm never answers FCGI_OVERLOADED), the second
 * a real php-cgi that echoes what it read. A streamed body (`requestBuffering: false`) is still
 * never sent twice (retry-replay.test.ts), and the replays stop at the route's `retries`.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { isReplayable, replayBody, spoolBody } from '../../src/core/body-spool.js'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { privateSpoolDir } from '../helpers/spool.js'
import { type Fake, startFake } from './helpers/fake.js'
import { endBody, rec } from './helpers/records.js'
import { PHP_CGI, havePeer, startPhpCgi, tempDir } from './helpers/peers.js'

const OVERLOADED = 2
const ECHO_PHP = "<?php header('Content-Type: application/octet-stream'); echo file_get_contents('php://input');\n"

/** FAKE-FCGI that reads each whole request, STDIN included, then refuses it with FCGI_OVERLOADED. */
async function overloadedAfterStdin (t: Test, dir: string): Promise<Fake> {
  return await startFake(t, dir, { tcp: true, onRequest: (req) => { req.sock.write(rec(3, req.id, endBody(0, OVERLOADED))) } })
}

function pattern (n: number): Buffer {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 8)) & 0xff
  return b
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

async function readAll (r: Readable): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of r) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

for (const [label, size, memoryBytes] of [['memory', 5000, 64 * 1024], ['temp file', 300_000, 1000]] as const) {
  t.test(`spool (${label}): replayBody gives the whole body again from its first byte, until cleanup`, async (t) => {
    guardLeaks(t)
    const { spoolFds } = privateSpoolDir(t, 'pc-ovl-spool-')
    const body = pattern(size)
    const s = await spoolBody(Readable.from([body.subarray(0, 1234), body.subarray(1234)], { objectMode: false }), { maxBytes: 1 << 20, memoryBytes })
    t.equal(spoolFds().length, label === 'memory' ? 0 : 1, `the body is in ${label}`)
    t.ok(isReplayable(s.body))
    t.equal(sha(await readAll(s.body)), sha(body), 'first reader: the whole body')
    const again = replayBody(s.body)!
    t.ok(again !== null && again !== s.body, 'a fresh reader')
    // A reader that stops half way (the adapter destroys it): the file stays open for the next one.
    const half = replayBody(again)!
    await new Promise<void>((resolve) => half.once('data', () => { half.destroy(); resolve() }))
    t.equal(sha(await readAll(again)), sha(body), 'second reader, made after the first ended')
    t.equal(sha(await readAll(replayBody(half)!)), sha(body), 'a reader made after another was destroyed mid-body')
    t.equal(spoolFds().length, label === 'memory' ? 0 : 1, 'readers ending do not close the file')
    const open = replayBody(s.body)!
    await s.cleanup()
    t.ok(open.destroyed, 'cleanup ends a reader still open')
    t.same(spoolFds(), [], 'cleanup closes the file')
    await s.cleanup()
  })
}

t.test('a client stream is not replayable', async (t) => {
  const p = new PassThrough()
  t.equal(isReplayable(p), false)
  t.equal(replayBody(p), null)
  t.equal(replayBody(null), null)
})

async function setUp (t: Test, route: Record<string, unknown> = {}) {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'echo.php'), ECHO_PHP)
  const fake = await overloadedAfterStdin(t, dir)
  const php = await startPhpCgi(t, dir, 1)
  const { url, proxy } = await proxyServer(t, {
    routes: [{
      protocol: 'fastcgi', backends: [fake.endpoint.id, `unix:${php.socketPath}`], balance: 'round-robin',
      // A regression that leaves the second attempt waiting on a dead reader fails in 10 s, not 60.
      docroot: dir, options: { discovery: false }, timeouts: { headers: 10_000 }, ...route,
    }],
  })
  return { fake, url, proxy }
}

for (const [label, size] of [['in memory (11 bytes)', 11], ['in the temp file (1 MiB)', 1 << 20]] as const) {
  t.test(`a buffered POST body ${label} that one backend refused with FCGI_OVERLOADED after reading it goes whole to the next`, async (t) => {
    if (!havePeer(t, PHP_CGI)) return
    guardLeaks(t)
    const { spoolGone } = privateSpoolDir(t, 'pc-ovl-spool-')
    const { fake, url } = await setUp(t)
    const body = size === 11 ? Buffer.from('hello world') : pattern(size)
    const r = await get(`${url}/echo.php`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } })
    t.equal(r.status, 200, r.status === 200 ? 'answered by the second backend' : r.body.toString().slice(0, 300))
    t.equal(r.body.length, size)
    t.equal(sha(r.body), sha(body), 'the exact body, from the second backend')
    t.equal(fake.requests.length, 1, 'the first backend was asked once')
    t.equal(fake.requests[0].stdin.length, size)
    t.equal(sha(fake.requests[0].stdin), sha(body), 'the first backend read the whole body too')
    t.ok(await spoolGone(), 'no spool fd or file left')
  })
}

t.test('replays of a buffered body stop at the route\'s retries: every backend overloaded → 503', async (t) => {
  guardLeaks(t)
  const { spoolGone } = privateSpoolDir(t, 'pc-ovl-spool-')
  const dir = tempDir(t)
  writeFileSync(join(dir, 'echo.php'), ECHO_PHP)
  const fakes = [await overloadedAfterStdin(t, dir), await overloadedAfterStdin(t, dir), await overloadedAfterStdin(t, dir)]
  const { url } = await proxyServer(t, {
    routes: [{
      protocol: 'fastcgi', backends: fakes.map((f) => f.endpoint.id), balance: 'round-robin',
      docroot: dir, options: { discovery: false }, retries: 1, timeouts: { headers: 10_000 },
    }],
  })
  const body = pattern(200_000)
  const r = await get(`${url}/echo.php`, { method: 'POST', body })
  t.equal(r.status, 503)
  t.match(r.body.toString(), /ERR_BACKEND_OVERLOADED/)
  const sent = fakes.map((f) => f.requests.length)
  t.equal(sent.reduce((a, b) => a + b, 0), 2, `the body went out 1 + retries (1) times: ${sent.join(',')}`)
  for (const f of fakes) for (const q of f.requests) t.equal(sha(q.stdin), sha(body), 'each attempt got the whole body')
  t.ok(await spoolGone(), 'no spool fd or file left')
})

/** POST `body` to the proxy in chunks (Transfer-Encoding: chunked), or with its Content-Length. */
async function post (url: string, body: Buffer, chunked: boolean): Promise<{ status: number, body: Buffer }> {
  return await new Promise((resolve, reject) => {
    const req = request(`${url}/echo.php`, { method: 'POST', agent: false, headers: chunked ? {} : { 'content-length': String(body.length) } }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (c: Buffer) => parts.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    if (chunked) { req.write(body.subarray(0, 1000)); req.end(body.subarray(1000)) } else req.end(body)
  })
}

t.test('requestBuffering false: a chunked body (spooled for its length) is replayed', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const { spoolGone } = privateSpoolDir(t, 'pc-ovl-spool-')
  const { fake, url } = await setUp(t, { requestBuffering: false })
  const body = pattern(100_000)
  const c = await post(url, body, true)
  t.equal(c.status, 200, c.status === 200 ? 'chunked: answered by the second backend' : c.body.toString().slice(0, 300))
  t.equal(sha(c.body), sha(body), 'the exact body')
  t.equal(fake.requests.length, 1)
  t.equal(sha(fake.requests[0].stdin), sha(body), 'the first backend read it whole')
  t.ok(await spoolGone(), 'no spool fd or file left')
})

t.test('requestBuffering false: a streamed Content-Length body one backend refused with FCGI_OVERLOADED is not sent again', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const { fake, url } = await setUp(t, { requestBuffering: false })
  const body = pattern(100_000)
  const s = await post(url, body, false)
  t.equal(s.status, 503)
  t.match(s.body.toString(), /ERR_BACKEND_OVERLOADED/)
  t.equal(fake.requests.length, 1)
  t.equal(sha(fake.requests[0].stdin), sha(body), 'the streamed body went to the first backend only')
})
