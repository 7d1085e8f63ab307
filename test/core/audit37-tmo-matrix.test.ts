/**
 * Audit 37: the route timeouts, each adapter against each, with real peers that are slow but
 * progressing and peers that go silent. The same four behaviours through HTTP (node:http backend),
 * FastCGI (php-cgi), SCGI (uWSGI) and CGI (sh scripts):
 *
 * - `drip`: the head at once, then one byte every 100 ms for 3.5 s with `idle` 1 s: `idle` is an
 *   inactivity timer, not a total, so the body arrives whole;
 * - `huge`: 24 MiB (more than loopback's socket buffers hold) read by a client that pauses 1.5 s
 *   after every 6 MiB with `idle` 500 ms: the backend held back for the slow client is not idle,
 *   and the client, which keeps reading, is not cut either (clientIdle 6 s); one that stops
 *   reading is cut after clientIdle (ERR_CLIENT_TIMEOUT), not taken for a backend stall;
 * - `silent`: no head: 504 ERR_HEADERS_TIMEOUT, logged with the adapter;
 * - `stall`: a head and 4 body bytes, then nothing: the client's response is cut (no clean end),
 *   ERR_BODY_TIMEOUT logged.
 *
 * Each peer answers by QUERY_STRING. Margins are 10x the drip period; every wait is bounded.
 */
import t, { type Test } from 'tap'
import { connect } from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, proxyServer } from '../helpers/servers.js'
import { captureLogger, fetchRaw, scriptsProxy, tempDir, type LogLine } from '../cgi/harness.js'
import { PHP_CGI, havePeer, startPhpCgi } from '../fastcgi/helpers/peers.js'
import { startUwsgiApp, uwsgiSkip } from '../scgi/uwsgi-peer.js'
import type { RouteConfig } from '../../src/config/schema.js'
import type { Proxy } from '../../src/index.js'

const DRIP = 35
/** More than loopback's socket buffers hold: the proxy has to hold the backend back. */
const HUGE = 24 * 1024 * 1024

type Timeouts = RouteConfig['timeouts']
interface Setup { port: number, url: string, lines: LogLine[], path: (q: string) => string, proxy?: Proxy }

const PHP = `<?php
$q = $_SERVER['QUERY_STRING'];
header('Content-Type: text/plain');
if ($q === 'drip') { for ($i = 0; $i < ${DRIP}; $i++) { echo 'x'; flush(); usleep(100000); } exit; }
if ($q === 'huge') { $s = str_repeat('y', 65536); for ($i = 0; $i < ${HUGE / 65536}; $i++) { echo $s; flush(); } exit; }
if ($q === 'stall') { echo 'half'; flush(); sleep(30); echo 'rest'; exit; }
if ($q === 'silent') { sleep(30); echo 'late'; exit; }
echo 'ok';
`

const PY = `import time
def application(environ, start_response):
    q = environ.get('QUERY_STRING', '')
    if q == 'silent':
        time.sleep(30)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    if q == 'drip':
        def g():
            for i in range(${DRIP}):
                yield b'x'
                time.sleep(0.1)
        return g()
    if q == 'huge':
        return (b'y' * 65536 for i in range(${HUGE / 65536}))
    if q == 'stall':
        def s():
            yield b'half'
            time.sleep(30)
            yield b'rest'
        return s()
    return [b'ok']
`

const SH = `#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
case "$QUERY_STRING" in
drip) i=0; while [ $i -lt ${DRIP} ]; do printf x; sleep 0.1; i=$((i+1)); done ;;
huge) head -c ${HUGE} /dev/zero | tr '\\0' y ;;
stall) printf half; sleep 30; printf rest ;;
*) printf ok ;;
esac
`
// CGI: the head is the script's first output; for `silent` a script that sleeps first.
const SH_SILENT = '#!/bin/sh\nsleep 30\nprintf \'Content-Type: text/plain\\r\\n\\r\\nlate\'\n'

async function httpPeer (t: Test, timeouts: Timeouts): Promise<Setup> {
  const be = await backend(t, (req, res) => {
    const q = (req.url ?? '').split('?')[1] ?? ''
    if (q === 'silent') return
    res.writeHead(200, { 'content-type': 'text/plain' })
    if (q === 'drip') {
      let i = 0
      const timer = setInterval(() => { res.write('x'); if (++i === DRIP) { clearInterval(timer); res.end() } }, 100)
      res.on('close', () => clearInterval(timer))
      return
    }
    if (q === 'huge') { res.end(Buffer.alloc(HUGE, 'y')); return }
    if (q === 'stall') { res.write('half'); return }
    res.end('ok')
  })
  // The silent and stalled responses never end on their own: their sockets go with the server.
  t.teardown(() => { be.server.closeAllConnections() })
  const { logger, lines } = captureLogger()
  const { port, url, proxy } = await proxyServer(t, { logger, routes: [{ protocol: 'http', backends: [be.address], timeouts }] })
  return { port, url, lines, proxy, path: (q) => `/x?${q}` }
}

async function fcgiPeer (t: Test, timeouts: Timeouts): Promise<Setup> {
  const dir = tempDir(t)
  writeFileSync(join(dir, 't.php'), PHP)
  const peer = await startPhpCgi(t, dir, 4, { PHP_FCGI_MAX_REQUESTS: '10000' })
  const { logger, lines } = captureLogger()
  const { port, url, proxy } = await proxyServer(t, { logger, routes: [{ protocol: 'fastcgi', backends: [`unix:${peer.socketPath}`], docroot: dir, timeouts }] })
  return { port, url, lines, proxy, path: (q) => `/t.php?${q}` }
}

async function scgiPeer (t: Test, timeouts: Timeouts): Promise<Setup> {
  const { app, peer } = await startUwsgiApp(t, tempDir(t), PY)
  const { logger, lines } = captureLogger()
  const { port, url, proxy } = await proxyServer(t, { logger, routes: [{ protocol: 'scgi', backends: [`unix:${peer.socketPath}`], scriptFilename: app, timeouts }] })
  return { port, url, lines, proxy, path: (q) => `/x?${q}` }
}

async function cgiPeer (t: Test, timeouts: Timeouts): Promise<Setup> {
  const p = await scriptsProxy(t, { 't.sh': SH, 'silent.sh': SH_SILENT }, { timeouts })
  return { port: p.port, url: p.url, lines: p.lines, path: (q) => q === 'silent' ? '/c/silent.sh' : `/c/t.sh?${q}` }
}

/** Read the response to `path` raw, pausing `pauseMs` after every `every` bytes. */
function slowRead (port: number, path: string, every: number, pauseMs: number): Promise<{ raw: Buffer, ended: boolean }> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port })
    const chunks: Buffer[] = []
    let since = 0
    s.on('data', (d: Buffer) => {
      chunks.push(d)
      since += d.length
      if (since >= every) {
        since = 0
        s.pause()
        setTimeout(() => s.resume(), pauseMs)
      }
    })
    s.on('error', () => {})
    let ended = false
    s.on('end', () => { ended = true })
    s.on('close', () => resolve({ raw: Buffer.concat(chunks), ended }))
    s.write(`GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
  })
}

/** The body of a raw HTTP/1.1 response (chunked or not), and whether it ended cleanly. */
function bodyOf (raw: Buffer): { status: number, body: Buffer, complete: boolean } {
  const at = raw.indexOf('\r\n\r\n')
  const head = raw.subarray(0, at).toString('latin1')
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0)
  let rest = raw.subarray(at + 4)
  if (!/\r\ntransfer-encoding: chunked/i.test(head)) {
    const len = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? -1)
    return { status, body: rest, complete: len === rest.length }
  }
  const parts: Buffer[] = []
  for (;;) {
    const nl = rest.indexOf('\r\n')
    if (nl < 0) return { status, body: Buffer.concat(parts), complete: false }
    const n = parseInt(rest.subarray(0, nl).toString('latin1'), 16)
    if (n === 0) return { status, body: Buffer.concat(parts), complete: rest.length >= nl + 4 }
    parts.push(rest.subarray(nl + 2, nl + 2 + n))
    rest = rest.subarray(nl + 2 + n + 2)
  }
}

const adapters: Array<[string, (t: Test, timeouts: Timeouts) => Promise<Setup>, string | false]> = [
  ['http', httpPeer, false],
  ['fastcgi', fcgiPeer, false],
  ['scgi', scgiPeer, uwsgiSkip()],
  ['cgi', cgiPeer, false],
]

for (const [name, setup, skip] of adapters) {
  t.test(`${name}: a body dripping 1 byte per 100 ms for 3.5 s passes idle 1 s`, { skip }, async (t) => {
    if (name === 'fastcgi' && !havePeer(t, PHP_CGI)) return
    guardLeaks(t, { timeoutMs: 10_000 })
    const p = await setup(t, { idle: '1s', headers: '10s' })
    const started = Date.now()
    const r = await fetchRaw(`${p.url}${p.path('drip')}`)
    t.equal(r.status, 200)
    t.equal(r.body.toString(), 'x'.repeat(DRIP), 'the whole body')
    t.ok(r.complete, 'ended cleanly')
    t.ok(Date.now() - started >= 3000, 'it took longer than 3x idle')
    t.same(p.lines.filter((l) => l.obj.code !== undefined).map((l) => l.obj.code), [], 'no timeout logged')
  })

  t.test(`${name}: a client reading ${HUGE >> 20} MiB with 1.5 s pauses: neither idle 500 ms nor clientIdle 6 s fires`, { skip }, async (t) => {
    if (name === 'fastcgi' && !havePeer(t, PHP_CGI)) return
    guardLeaks(t, { timeoutMs: 10_000 })
    const p = await setup(t, { idle: '500ms', clientIdle: '6s', headers: '10s' })
    const r = await slowRead(p.port, p.path('huge'), 6 * 1024 * 1024, 1500)
    const b = bodyOf(r.raw)
    t.equal(b.status, 200)
    t.equal(b.body.length, HUGE, 'every byte')
    t.ok(b.complete, 'ended cleanly')
    t.same(p.lines.filter((l) => l.obj.code !== undefined).map((l) => l.obj.code), [], 'no timeout logged')
  })

  t.test(`${name}: a silent peer: 504 ERR_HEADERS_TIMEOUT, logged`, { skip }, async (t) => {
    if (name === 'fastcgi' && !havePeer(t, PHP_CGI)) return
    guardLeaks(t, { timeoutMs: 10_000 })
    const p = await setup(t, { headers: '500ms' })
    const started = Date.now()
    const r = await fetchRaw(`${p.url}${p.path('silent')}`)
    t.equal(r.status, 504)
    t.match(r.body.toString(), /ERR_HEADERS_TIMEOUT/)
    t.ok(Date.now() - started >= 450, 'not before the timeout')
    const line = p.lines.find((l) => l.obj.code === 'ERR_HEADERS_TIMEOUT')
    t.ok(line, 'logged')
    t.equal(line?.obj.adapter, name, 'the log line names the adapter')
    if (p.proxy !== undefined) {
      const route = p.proxy.routes[0]
      t.ok(await waitFor(() => route.admission.active === 0 && route.pool.inflight === 0, 10_000), 'counters back to 0')
    }
  })

  t.test(`${name}: a peer that stalls inside its body: the response is cut, ERR_BODY_TIMEOUT logged`, { skip }, async (t) => {
    if (name === 'fastcgi' && !havePeer(t, PHP_CGI)) return
    guardLeaks(t, { timeoutMs: 10_000 })
    const p = await setup(t, { idle: '500ms', headers: '10s' })
    const r = await fetchRaw(`${p.url}${p.path('stall')}`)
    t.equal(r.status, 200, 'the head went out')
    t.equal(r.body.toString(), 'half', 'what came before the stall')
    t.notOk(r.complete, 'the client sees a cut, not a clean end')
    const line = p.lines.find((l) => l.obj.code === 'ERR_BODY_TIMEOUT')
    t.ok(line, 'logged')
    t.equal(line?.obj.adapter, name, 'the log line names the adapter')
  })
}

/**
 * GET `path` and stop reading after the first bytes; once `cut()` resolves, read on to the end: the
 * bytes and whether the response ended cleanly.
 */
async function stopReading (port: number, path: string, cut: () => Promise<boolean>): Promise<{ cutSeen: boolean, raw: Buffer }> {
  const s = connect({ host: '127.0.0.1', port })
  const chunks: Buffer[] = []
  s.on('error', () => {})
  const closed = new Promise<void>((resolve) => s.on('close', () => resolve()))
  s.once('data', () => s.pause())
  s.on('data', (d: Buffer) => chunks.push(d))
  s.write(`GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`)
  const cutSeen = await cut()
  s.resume()
  const ended = await Promise.race([closed.then(() => true), new Promise<boolean>((resolve) => setTimeout(resolve, 20_000, false).unref())])
  if (!ended) s.destroy()
  return { cutSeen, raw: Buffer.concat(chunks) }
}

for (const [name, setup, skip] of adapters) {
  t.test(`${name}: a client that stops reading a ${HUGE >> 20} MiB response is cut after clientIdle, ERR_CLIENT_TIMEOUT logged`, { skip }, async (t) => {
    if (name === 'fastcgi' && !havePeer(t, PHP_CGI)) return
    guardLeaks(t, { timeoutMs: 10_000 })
    const p = await setup(t, { idle: '500ms', clientIdle: '800ms', headers: '10s' })
    const r = await stopReading(p.port, p.path('huge'), () => waitFor(() => p.lines.some((l) => l.obj.code === 'ERR_CLIENT_TIMEOUT'), 20_000))
    t.ok(r.cutSeen, 'ERR_CLIENT_TIMEOUT logged')
    const b = bodyOf(r.raw)
    t.equal(b.status, 200, 'the head went out')
    t.ok(b.body.length < HUGE && !b.complete, `the client sees a cut (${b.body.length} bytes)`)
    const line = p.lines.find((l) => l.obj.code === 'ERR_CLIENT_TIMEOUT')
    t.equal(line?.obj.adapter, name, 'the log line names the adapter')
    t.notOk(p.lines.some((l) => l.obj.code === 'ERR_BODY_TIMEOUT'), 'not taken for a backend stall')
    if (p.proxy !== undefined) {
      const route = p.proxy.routes[0]
      t.ok(await waitFor(() => route.admission.active === 0 && route.pool.inflight === 0, 10_000), 'counters back to 0')
    }
  })
}
