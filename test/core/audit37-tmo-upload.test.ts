/**
 * Audit 37: `timeouts.headers` and a slow but progressing upload, through each adapter with a real
 * peer (node:http, php-cgi, uWSGI in SCGI mode, an sh CGI script), the CGI family streaming the body
 * (requestBuffering false) and buffering it (the default). The client sends 16 KiB at 1 KiB per
 * 200 ms (3.2 s, over 3x `headers` 1 s); the peer reads it all, then takes 500 ms more before its
 * head. As nginx's proxy_read_timeout (which starts once the request is sent), the head's time
 * counts from the last upload byte: the answer is a 200 with the whole length, no 504.
 */
import t, { type Test } from 'tap'
import { connect } from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer } from '../helpers/servers.js'
import { captureLogger, scriptsProxy, tempDir, type LogLine } from '../cgi/harness.js'
import { PHP_CGI, havePeer, startPhpCgi } from '../fastcgi/helpers/peers.js'
import { startUwsgiApp, uwsgiSkip } from '../scgi/uwsgi-peer.js'
import type { RouteConfig } from '../../src/config/schema.js'

const SIZE = 16 * 1024
const PIECE = 1024
const EVERY_MS = 200

interface Setup { port: number, lines: LogLine[], path: string }
type Extra = Partial<RouteConfig>

const PHP = '<?php $in = file_get_contents(\'php://input\'); usleep(500000); header(\'Content-Type: text/plain\'); echo \'got \', strlen($in);\n'
const PY = `import time
def application(environ, start_response):
    n = int(environ.get('CONTENT_LENGTH') or 0)
    got = len(environ['wsgi.input'].read(n)) if n else 0
    time.sleep(0.5)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('got %d' % got).encode()]
`
const SH = '#!/bin/sh\nn=$(wc -c | tr -d \' \')\nsleep 0.5\nprintf \'Content-Type: text/plain\\r\\n\\r\\ngot %s\' "$n"\n'

async function httpPeer (t: Test): Promise<Setup> {
  const be = await backend(t, (req, res) => {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => { setTimeout(() => res.end(`got ${n}`), 500) })
  })
  const { logger, lines } = captureLogger()
  const { port } = await proxyServer(t, { logger, routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: '1s' } }] })
  return { port, lines, path: '/up' }
}

async function fcgiPeer (t: Test, extra: Extra): Promise<Setup> {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'up.php'), PHP)
  const peer = await startPhpCgi(t, dir, 2)
  const { logger, lines } = captureLogger()
  const { port } = await proxyServer(t, { logger, routes: [{ protocol: 'fastcgi', backends: [`unix:${peer.socketPath}`], docroot: dir, timeouts: { headers: '1s' }, ...extra }] })
  return { port, lines, path: '/up.php' }
}

async function scgiPeer (t: Test, extra: Extra): Promise<Setup> {
  const { app, peer } = await startUwsgiApp(t, tempDir(t), PY)
  const { logger, lines } = captureLogger()
  const { port } = await proxyServer(t, { logger, routes: [{ protocol: 'scgi', backends: [`unix:${peer.socketPath}`], scriptFilename: app, timeouts: { headers: '1s' }, ...extra }] })
  return { port, lines, path: '/up' }
}

async function cgiPeer (t: Test, extra: Extra): Promise<Setup> {
  const p = await scriptsProxy(t, { 'up.sh': SH }, { timeouts: { headers: '1s' }, ...extra })
  return { port: p.port, lines: p.lines, path: '/c/up.sh' }
}

/** POST `SIZE` bytes at PIECE per EVERY_MS; the raw response once the proxy closes (Connection: close). */
function slowUpload (port: number, path: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port })
    let raw = ''
    let sent = 0
    s.on('data', (d: Buffer) => { raw += d.toString('latin1') })
    s.on('error', () => {})
    const timer = setInterval(() => {
      if (sent >= SIZE || s.destroyed) { clearInterval(timer); return }
      s.write(Buffer.alloc(PIECE, 'u'))
      sent += PIECE
    }, EVERY_MS)
    s.on('close', () => { clearInterval(timer); resolve(raw) })
    s.write(`POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: ${SIZE}\r\nConnection: close\r\n\r\n`)
  })
}

const cases: Array<[string, (t: Test) => Promise<Setup>, string | false, string]> = [
  ['http (streamed)', httpPeer, false, ''],
  ['fastcgi streamed', (t) => fcgiPeer(t, { requestBuffering: false }), false, PHP_CGI],
  ['fastcgi buffered', (t) => fcgiPeer(t, {}), false, PHP_CGI],
  ['scgi streamed', (t) => scgiPeer(t, { requestBuffering: false }), uwsgiSkip(), ''],
  ['scgi buffered', (t) => scgiPeer(t, {}), uwsgiSkip(), ''],
  ['cgi streamed', (t) => cgiPeer(t, { requestBuffering: false }), false, ''],
  ['cgi buffered', (t) => cgiPeer(t, {}), false, ''],
]

for (const [name, setup, skip, bin] of cases) {
  t.test(`${name}: a 3.2 s upload and a head 500 ms after it pass headers 1 s`, { skip }, async (t) => {
    if (bin !== '' && !havePeer(t, bin)) return
    guardLeaks(t, { timeoutMs: 10_000 })
    const p = await setup(t)
    const started = Date.now()
    const raw = await slowUpload(p.port, p.path)
    t.match(raw, /^HTTP\/1\.1 200 /, '200', { raw: raw.slice(0, 300) })
    t.match(raw, new RegExp(`got ${SIZE}`), 'the whole body reached the peer')
    t.ok(Date.now() - started >= 3000, 'the upload took longer than 3x headers')
    t.same(p.lines.filter((l) => l.obj.code !== undefined).map((l) => l.obj.code), [], 'no timeout logged')
  })
}
