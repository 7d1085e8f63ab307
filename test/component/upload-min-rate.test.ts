/**
 * `timeouts.minUploadRate` (mod_reqtimeout `body=,MinRate=`): a client that trickles its request
 * body, never pausing for clientIdle, still gets 408 ERR_UPLOAD_TOO_SLOW once the body fell
 * `uploadGrace` behind the minimum rate, with the backend request aborted and the admission slot
 * freed; a client above the rate completes; 0 turns the check off; time the proxy itself holds the
 * client back (a backend that does not read yet) does not count against the client.
 *
 * Real peers: a node:http backend, php-fpm (FastCGI), uWSGI in SCGI mode (chunked bodies are
 * spooled), sh CGI scripts. Clients are raw sockets that send on a catch-up schedule (the bytes due
 * by now, not a fixed amount per timer tick), so a late timer on a loaded machine does not change
 * their average rate. Rates are far apart from the limit (10x) and every wait is bounded generously.
 */
import t, { type Test } from 'tap'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SpawnManager } from '../../src/spawn/manager.js'
import type { RouteConfig } from '../../src/config/schema.js'
import type { BackendSource, ProcessStarter, SourceEndpoint } from '../../src/core/types.js'
import { createProxy, type Proxy } from '../../src/index.js'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { Raw } from '../helpers/raw-client.js'
import { backend, closeServer, get, listen, proxyServer } from '../helpers/servers.js'
import { captureLogger, tempDir, writeScripts, type LogLine } from '../cgi/harness.js'
import { PHP_FPM, havePeer, startPhpFpm } from '../fastcgi/helpers/peers.js'
import { ECHO_APP, startUwsgi, uwsgiSkip } from '../scgi/uwsgi-peer.js'

/** The limit the tests run against: 100 bytes/s after a 300 ms credit. */
const RATE = 100
const GRACE = 300
const SLOW = RATE / 10
const FAST = RATE * 10
/** Generous bound for an answer that is due after one to seven seconds. */
const ANSWER_WITHIN = 30_000

interface Trickle { raw: () => string, closed: () => boolean, sent: () => number, stop: () => void }

/**
 * Send `head`, then `body` at `perSecond` on average: every 25 ms, whatever is due by now. With
 * `chunked`, every write is one chunk, and the last chunk follows the body.
 */
function trickle (port: number, head: string, body: Buffer, perSecond: number, chunked = false, burst = 0, gate: Promise<void> = Promise.resolve()): Trickle {
  const c = new Raw(port, head)
  const socket = c.socket
  // Once `gate` resolved, `burst` bytes at once (a body big enough to be spooled to disk), then the trickle.
  let sent = 0
  let started = Infinity
  void gate.then(() => {
    started = Date.now()
    if (burst === 0 || c.closed) return
    sent = burst
    socket.write(chunked ? `${burst.toString(16)}\r\n${body.toString('latin1', 0, burst)}\r\n` : body.subarray(0, burst))
  })
  const timer = setInterval(() => {
    if (c.closed || sent >= body.length) { clearInterval(timer); return }
    if (started === Infinity) return
    const due = Math.min(body.length, burst + Math.floor((Date.now() - started) * perSecond / 1000))
    if (due <= sent) return
    const part = body.subarray(sent, due)
    sent = due
    if (chunked) socket.write(`${part.length.toString(16)}\r\n${part.toString('latin1')}\r\n${sent === body.length ? '0\r\n\r\n' : ''}`)
    else socket.write(part)
  }, 25)
  const stop = (): void => { clearInterval(timer); socket.destroy() }
  return { raw: () => c.raw, closed: () => c.closed, sent: () => sent, stop }
}

function headFor (path: string, length: number | 'chunked'): string {
  const framing = length === 'chunked' ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`
  return `POST ${path} HTTP/1.1\r\nHost: localhost\r\n${framing}\r\n\r\n`
}

const spoolFds = (): number => [...openFds().values()].filter((p) => p.includes('proxycore-spool-')).length

function timeouts (minUploadRate: number | string, extra: Record<string, unknown> = {}): RouteConfig['timeouts'] {
  return { minUploadRate, uploadGrace: GRACE, clientIdle: '30s', ...extra }
}

/** A too-slow body: 408 ERR_UPLOAD_TOO_SLOW, the connection closed, the slot free, the log naming the setting. */
async function expectCut (t: Test, proxy: Proxy, port: number, path: string, lines: LogLine[], length: number | 'chunked', opts: { burst?: number, rate?: number, notBefore?: number, gate?: () => Promise<void>, whileTrickling?: () => Promise<void> } = {}): Promise<void> {
  const burst = opts.burst ?? 0
  const body = Buffer.alloc(length === 'chunked' ? burst + 5000 : length, 'x')
  let started = Date.now()
  const gate = (opts.gate ?? (async () => {}))().then(() => { started = Date.now() })
  const c = trickle(port, headFor(path, length), body, SLOW, length === 'chunked', burst, gate)
  t.teardown(c.stop)
  await opts.whileTrickling?.()
  t.ok(await waitFor(() => c.raw().includes('\r\n\r\n') || c.closed(), ANSWER_WITHIN), 'answered while still trickling')
  t.match(c.raw(), /^HTTP\/1\.1 408 /, '408', { raw: c.raw().slice(0, 300) })
  t.match(c.raw(), /ERR_UPLOAD_TOO_SLOW/)
  t.ok(c.sent() < body.length, `cut before the body was complete (${c.sent()} of ${body.length} bytes sent)`)
  const took = Date.now() - started
  t.ok(took < ANSWER_WITHIN, 'within a bound')
  // Bytes received before the trickle (a burst, bytes buffered while queued) buy time: one second per `rate` bytes.
  if (opts.notBefore !== undefined) t.ok(took >= opts.notBefore, `not before the credit of the bytes received ran out (${took} ms)`)
  t.ok(await waitFor(() => c.closed(), 5000), 'the connection is closed')
  const route = proxy.routes[0]
  t.ok(await waitFor(() => route.admission.active === 0 && route.admission.queued === 0 && route.pool.inflight === 0, 5000), 'admission and pool counters back to 0')
  const line = lines.find((l) => l.obj.code === 'ERR_UPLOAD_TOO_SLOW')
  t.ok(line, 'logged')
  t.match(line?.msg ?? '', new RegExp(`timeouts\\.minUploadRate ${opts.rate ?? RATE} bytes/s`), 'the log names the setting')
  t.match(line?.msg ?? '', /\(\d+ bytes\/s;/, 'and the measured rate')
}

async function logged (t: Test, config: Parameters<typeof proxyServer>[1]): Promise<{ proxy: Proxy, port: number, lines: LogLine[] }> {
  const { logger, lines } = captureLogger()
  const { proxy, port } = await proxyServer(t, { logger, ...config })
  return { proxy, port, lines }
}

/** An HTTP backend that records what it got of each request body. */
async function recordingBackend (t: Test) {
  const seen: Array<{ bytes: number, ended: boolean, closed: boolean }> = []
  const up = await backend(t, (req, res) => {
    const s = { bytes: 0, ended: false, closed: false }
    seen.push(s)
    req.on('data', (c: Buffer) => { s.bytes += c.length })
    req.on('end', () => { s.ended = true; res.end(`got ${s.bytes}`) })
    req.on('close', () => { s.closed = true })
  })
  return { ...up, seen }
}

t.test('HTTP backend: a trickled Content-Length body is cut, the backend request aborted', async (t) => {
  guardLeaks(t)
  const up = await recordingBackend(t)
  const { proxy, port, lines } = await logged(t, { routes: [{ protocol: 'http', backends: [up.address], maxConcurrent: 1, queue: 0, timeouts: timeouts(RATE) }] })
  await expectCut(t, proxy, port, '/up', lines, 5000)
  t.ok(await waitFor(() => up.seen.length === 1 && up.seen[0].closed, 5000), 'the backend request was closed')
  t.equal(up.seen[0]?.ended, false, 'the backend never got the whole body')
  const after = await get(`http://127.0.0.1:${port}/up`, { method: 'POST', body: 'abc' })
  t.equal(after.status, 200, 'the only slot is free again')
})

t.test('HTTP backend: a trickled chunked body is cut', async (t) => {
  guardLeaks(t)
  const up = await recordingBackend(t)
  const { proxy, port, lines } = await logged(t, { routes: [{ protocol: 'http', backends: [up.address], timeouts: timeouts(RATE) }] })
  await expectCut(t, proxy, port, '/up', lines, 'chunked')
  t.ok(await waitFor(() => up.seen.every((s) => s.closed), 5000), 'the backend request was closed')
  t.notOk(up.seen.some((s) => s.ended), 'the backend never got the whole body')
})

t.test('HTTP backend: body bytes that arrived while the request was queued count', async (t) => {
  guardLeaks(t)
  // One slot: a first request holds it until released; the second arrives with 48 KiB of its body
  // (buffered, unread, while it waits), then trickles. At 8 KiB/s those bytes buy 6 s after the
  // second request got its slot; without them it would be cut at the first tick.
  let release = (): void => {}
  const up = await backend(t, (req, res) => {
    if (req.url === '/hold') { release = () => res.end('held'); req.resume(); return }
    req.resume()
    req.on('end', () => res.end('done'))
  })
  const { proxy, port, lines } = await logged(t, { routes: [{ protocol: 'http', backends: [up.address], maxConcurrent: 1, queue: 1, timeouts: timeouts('8KiB') }] })
  const holder = get(`http://127.0.0.1:${port}/hold`)
  const route = proxy.routes[0]
  t.ok(await waitFor(() => route.admission.active === 1, 10_000), 'the slot is taken')
  await expectCut(t, proxy, port, '/up', lines, 100_000, {
    burst: 48 << 10,
    rate: 8 << 10,
    notBefore: 4000,
    // Queued with its bytes buffered, then admitted: the clock starts there.
    whileTrickling: async () => {
      t.ok(await waitFor(() => route.admission.queued === 1, 10_000), 'queued')
      release()
      t.equal((await holder).status, 200)
    },
  })
})

/** A body well above the rate, and one below it with the check off: both complete with 200. */
async function expectComplete (t: Test, port: number, path: string, perSecond: number, size: number, chunked: boolean): Promise<string> {
  const body = Buffer.alloc(size, 'y')
  const c = trickle(port, headFor(path, chunked ? 'chunked' : size), body, perSecond, chunked)
  t.teardown(c.stop)
  t.ok(await waitFor(() => /\r\n\r\n[\s\S]*got \d+|\r\n0\r\n\r\n/.test(c.raw()) || c.closed(), 60_000), 'answered')
  t.match(c.raw(), /^HTTP\/1\.1 200 /, '200', { raw: c.raw().slice(0, 300) })
  return c.raw()
}

t.test('HTTP backend: a body above the rate completes, a slow one with minUploadRate 0 too', async (t) => {
  guardLeaks(t)
  const up = await recordingBackend(t)
  const { proxy, port, lines } = await logged(t, {
    routes: [
      { match: { prefix: '/on' }, protocol: 'http', backends: [up.address], timeouts: timeouts(RATE) },
      { match: { prefix: '/off' }, protocol: 'http', backends: [up.address], timeouts: timeouts(0) },
    ],
  })
  // 1500 bytes at 10x the rate: 1.5 s, five times the grace.
  t.match(await expectComplete(t, port, '/on', FAST, 1500, false), /got 1500/)
  t.match(await expectComplete(t, port, '/on', FAST, 1500, true), /got 1500/)
  // 20 bytes at a tenth of the rate: 2 s, far past the point where /on cuts such a body.
  t.match(await expectComplete(t, port, '/off', SLOW, 20, false), /got 20/)
  t.equal(lines.filter((l) => l.obj.code === 'ERR_UPLOAD_TOO_SLOW').length, 0, 'nothing cut')
  t.ok(await waitFor(() => proxy.routes.every((r) => r.admission.active === 0), 5000), 'slots released')
})

t.test('HTTP backend: time the proxy holds the client back does not count', async (t) => {
  guardLeaks(t)
  // The backend reads nothing for HOLD ms: the proxy stops reading the client meanwhile. A limit
  // the held upload cannot meet by its buffered bytes alone (4 MiB/s after 300 ms), which a
  // loopback upload meets easily once the backend reads.
  const HOLD = 6000
  const SIZE = 16 << 20
  const up = await backend(t, (req, res) => {
    req.pause()
    const timer = setTimeout(() => {
      let bytes = 0
      req.on('data', (c: Buffer) => { bytes += c.length })
      req.on('end', () => res.end(`got ${bytes}`))
      req.resume()
    }, HOLD)
    res.on('close', () => clearTimeout(timer))
  })
  const { proxy, port, lines } = await logged(t, { routes: [{ protocol: 'http', backends: [up.address], timeouts: { minUploadRate: '4MiB', uploadGrace: GRACE, clientIdle: '30s' } }] })
  const body = Buffer.alloc(SIZE, 'z')
  const c = trickle(port, headFor('/hold', SIZE), body, Number.MAX_SAFE_INTEGER)
  t.teardown(c.stop)
  t.ok(await waitFor(() => /got \d+/.test(c.raw()) || c.closed(), 60_000), 'answered')
  t.match(c.raw(), /^HTTP\/1\.1 200 [\s\S]*got 16777216/, 'the whole body went through', { raw: c.raw().slice(0, 300) })
  t.equal(lines.filter((l) => l.obj.code === 'ERR_UPLOAD_TOO_SLOW').length, 0, 'not cut')
  t.ok(await waitFor(() => proxy.routes[0].admission.active === 0, 5000), 'slot released')
})

/** An on-demand backend: nothing routable until ensure() was asked, then after `delay` ms (a spawn starting). */
class LateSource implements BackendSource {
  readonly name = 'late'
  private ready = false
  private readonly listeners = new Set<() => void>()
  private readonly timers = new Set<NodeJS.Timeout>()
  constructor (private readonly address: string, private readonly delay: number) {}
  list (): SourceEndpoint[] { return this.ready ? [{ id: 'late#1', address: this.address }] : [] }
  subscribe (fn: () => void): () => void { this.listeners.add(fn); return () => { this.listeners.delete(fn) } }
  ensure (): Promise<void> {
    if (this.ready) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer)
        this.ready = true
        for (const fn of this.listeners) fn()
        resolve()
      }, this.delay)
      this.timers.add(timer)
    })
  }

  close (): void { for (const timer of this.timers) clearTimeout(timer) }
}

t.test('Expect: 100-continue: the wait for the 100 does not count', async (t) => {
  guardLeaks(t)
  // The 100 goes out when the body is first read, once the backend is up HOLD ms later; the
  // client sends nothing before it. Without the discount the body would be cut at the first tick.
  const HOLD = 3000
  const up = await recordingBackend(t)
  const source = new LateSource(up.address, HOLD)
  t.teardown(() => source.close())
  const { logger, lines } = captureLogger()
  const proxy = await createProxy({ logger, sources: { late: source }, routes: [{ protocol: 'http', spawn: 'late', timeouts: { ...timeouts(RATE), headers: '30s' } }] })
  const server = createServer(proxy.handler)
  server.on('checkContinue', proxy.checkContinue)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const socket = connect({ host: '127.0.0.1', port })
  t.teardown(() => socket.destroy())
  let raw = ''
  let sent = false
  socket.on('error', () => {})
  socket.on('data', (d: Buffer) => {
    raw += d.toString('latin1')
    if (!sent && raw.includes('100 Continue')) { sent = true; socket.write(Buffer.alloc(300, 'c')) }
  })
  const started = Date.now()
  socket.write('POST /c HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 300\r\n\r\n')
  t.ok(await waitFor(() => /got \d+|HTTP\/1\.1 [2-5]\d\d /.test(raw), 30_000), 'answered')
  t.ok(Date.now() - started >= HOLD - 100, 'the backend came up only after the hold')
  t.match(raw, /HTTP\/1\.1 100 Continue[\s\S]*HTTP\/1\.1 200 [\s\S]*got 300/, 'the body went through', { raw: raw.slice(0, 300) })
  t.equal(lines.filter((l) => l.obj.code === 'ERR_UPLOAD_TOO_SLOW').length, 0, 'not cut')
})

/** Per-request sh CGI scripts from a real SpawnManager pipe spawn. */
async function cgiSetup (t: Test, dir: string, minUploadRate: number | string) {
  const manager = new SpawnManager()
  t.teardown(() => manager.close())
  manager.add('sh', { socketType: 'pipe', copyEnvironment: ['PATH'], stopTimeout: 500 })
  const processStarters: Record<string, ProcessStarter> = { sh: manager.pipeStarter('sh') }
  await manager.start()
  return logged(t, { processStarters, routes: [{ protocol: 'cgi', spawn: 'sh', docroot: dir, match: { prefix: '/' }, maxConcurrent: 1, queue: 0, timeouts: timeouts(minUploadRate) }] })
}

t.test('CGI: a streamed Content-Length body and a spooled chunked one are cut, the script killed', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  const marker = join(dir, 'done')
  // Writes the marker only once it read its whole stdin.
  writeScripts(dir, { 'up.sh': `#!/bin/sh\nn=$(wc -c)\necho "$n" > '${marker}'\nprintf 'Content-Type: text/plain\\r\\n\\r\\ngot %s' "$n"\n` })
  const { proxy, port, lines } = await cgiSetup(t, dir, RATE)
  await expectCut(t, proxy, port, '/up.sh', lines, 5000)
  await expectCut(t, proxy, port, '/up.sh', lines, 'chunked')
  t.ok(await waitFor(() => spoolFds() === 0, 5000), 'no spool fd left')
  t.notOk(existsSync(marker), 'the script never read a whole body')
  const ok = await get(`http://127.0.0.1:${port}/up.sh`, { method: 'POST', body: 'abcd' })
  t.equal(ok.status, 200, 'the only slot is free again')
  t.equal(ok.body.toString(), 'got 4')
})

t.test('CGI: a chunked body spooled to disk, then trickled, is cut and its spool file closed', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  const marker = join(dir, 'done')
  writeScripts(dir, { 'up.sh': `#!/bin/sh\nwc -c > '${marker}'\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok'\n` })
  // Once the exchange started, 100 KiB at once (past the 64 KiB the spool keeps in memory), then
  // 10 bytes/s: at 64 KiB/s the burst buys 1.6 s more than the grace, then the body is cut.
  const { proxy, port, lines } = await cgiSetup(t, dir, '64KiB')
  await expectCut(t, proxy, port, '/up.sh', lines, 'chunked', {
    burst: 100 << 10,
    gate: () => waitFor(() => proxy.routes[0].admission.active === 1, 10_000).then(() => {}),
    rate: 64 << 10,
    whileTrickling: async () => { t.ok(await waitFor(() => spoolFds() === 1, 10_000), 'the body is being spooled to a file') },
    notBefore: 1500,
  })
  t.ok(await waitFor(() => spoolFds() === 0, 5000), 'the spool file is closed')
  t.notOk(existsSync(marker), 'the script never ran')
})

t.test('FastCGI (php-fpm): a trickled body is cut and the worker is free again', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  guardLeaks(t)
  const dir = tempDir(t)
  const marker = join(dir, 'done')
  writeFileSync(join(dir, 'up.php'), `<?php $in = file_get_contents('php://input'); file_put_contents('${marker}', strlen($in) . ' of ' . ($_SERVER['CONTENT_LENGTH'] ?? '-') . "\\n", FILE_APPEND); echo 'got ', strlen($in);\n`)
  // One worker: a request that still held it would starve the check below.
  const fpm = await startPhpFpm(t, dir, 1)
  const { proxy, port, lines } = await logged(t, { routes: [{ protocol: 'fastcgi', backends: [`unix:${fpm.socketPath}`], docroot: dir, match: { extension: '.php' }, timeouts: timeouts(RATE) }] })
  await expectCut(t, proxy, port, '/up.php', lines, 5000)
  await expectCut(t, proxy, port, '/up.php', lines, 'chunked')
  // php-fpm runs the script even when its FastCGI connection closes mid-body (php://input then
  // returns what came): what matters here is that it never got the whole body.
  const ran = existsSync(marker) ? readFileSync(marker, 'utf8') : ''
  t.notMatch(ran, /^5000 of|^(\d+) of \1$/m, 'the script never got a whole body', { ran })
  const ok = await get(`http://127.0.0.1:${port}/up.php`, { method: 'POST', body: 'abcd' })
  t.equal(ok.status, 200, 'the worker answers the next request')
  t.equal(ok.body.toString(), 'got 4')
})

t.test('SCGI (uWSGI): a trickled body is cut, streamed or while it is spooled', { skip: uwsgiSkip() }, async (t) => {
  guardLeaks(t)
  const peer = await startUwsgi('scgi')
  t.teardown(() => peer.stop())
  const { proxy, port, lines } = await logged(t, { routes: [{ protocol: 'scgi', backends: [`unix:${peer.socketPath}`], scriptFilename: ECHO_APP, timeouts: timeouts(RATE) }] })
  await expectCut(t, proxy, port, '/up', lines, 5000)
  await expectCut(t, proxy, port, '/up', lines, 'chunked')
  t.ok(await waitFor(() => spoolFds() === 0, 5000), 'no spool fd left')
  const ok = await get(`http://127.0.0.1:${port}/up`, { method: 'POST', body: 'abcd' })
  t.equal(ok.status, 200, 'the backend answers the next request')
  t.match(ok.body.toString(), /"body_len": 4/)
})
