/**
 * A request body the backend never read to its end, on a keep-alive client connection (nginx's
 * discard_request_body case): the backend answers early (an HTTP 401, a CGI script or a PHP
 * script that ignore their input), the client sends its whole body and then a second request on
 * the same connection. The second request must be answered: the proxy reads and drops the rest
 * of the first body. Past the discard bound the connection is closed instead, never left stalled.
 *
 * Also the core's safety net for a "client aborted" failure while the client is in fact still
 * connected (a body lost by an adapter): the client gets an answer (or a cut response), never a hang.
 */
import t from 'tap'
import { connect } from 'node:net'
import { ProxyError } from '../../src/core/errors.js'
import { guardLeaks } from '../helpers/leaks.js'
import { scriptedAdapter } from '../helpers/adapters.js'
import { backend, proxyServer } from '../helpers/servers.js'
import { havePeer as haveFcgiPeer, PHP_CGI, startOnFd0 } from '../fastcgi/helpers/peers.js'
import { cgiProxy, fetchRaw, tempDir, writeScripts } from '../cgi/harness.js'

const BIG = 4 * 1024 * 1024
/** Longer than any healthy exchange here; a stalled connection is reported when it passes. */
const DEADLINE_MS = 10_000

interface Conversation { raw: string, statuses: string[], closed: boolean, stalled: boolean, ms: number }

/**
 * On one connection: `head` + `body`, then `GET second` with `Connection: close`. Collects what
 * comes back until the proxy closes the connection, or DEADLINE_MS pass (`stalled`).
 */
function twoRequests (port: number, head: string, body: Buffer, second: string): Promise<Conversation> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port })
    const started = Date.now()
    let raw = ''
    let stalled = false
    const timer = setTimeout(() => { stalled = true; s.destroy() }, DEADLINE_MS)
    s.on('data', (d: Buffer) => { raw += d.toString('latin1') })
    s.on('error', () => {})
    s.on('close', () => {
      clearTimeout(timer)
      resolve({ raw, statuses: raw.match(/HTTP\/1\.1 \d{3}/g) ?? [], closed: !stalled, stalled, ms: Date.now() - started })
    })
    s.write(head)
    s.write(body)
    s.write(`GET ${second} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
  })
}

const post = (path: string, n: number): string => `POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: ${n}\r\n\r\n`

/** A chunked body of `n` bytes in 64 KiB chunks, with its last chunk. */
function chunkedBody (n: number): Buffer {
  const parts: Buffer[] = []
  for (let off = 0; off < n; off += 65536) {
    const len = Math.min(65536, n - off)
    parts.push(Buffer.from(`${len.toString(16)}\r\n`), Buffer.alloc(len, 66), Buffer.from('\r\n'))
  }
  parts.push(Buffer.from('0\r\n\r\n'))
  return Buffer.concat(parts)
}

t.test('HTTP backend answering 401 without reading the body, keeping its connection', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (req, res) => {
    if (req.method === 'POST') { res.writeHead(401, { 'content-length': 2 }); res.end('no'); return }
    res.end('ok')
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const c = await twoRequests(port, post('/up', BIG), Buffer.alloc(BIG, 66), '/second')
  t.notOk(c.stalled, 'the connection does not stall', { raw: c.raw.slice(0, 400) })
  t.same(c.statuses, ['HTTP/1.1 401', 'HTTP/1.1 200'], 'both requests answered on the one connection')
})

t.test('HTTP backend answering 401 with Connection: close without reading the body', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (req, res) => {
    if (req.method === 'POST') { res.writeHead(401, { 'content-length': 2, connection: 'close' }); res.end('no'); return }
    res.end('ok')
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const c = await twoRequests(port, post('/up', BIG), Buffer.alloc(BIG, 66), '/second')
  t.notOk(c.stalled, 'the connection does not stall', { raw: c.raw.slice(0, 400) })
  // The backend's close with the body unread resets its socket: undici may see the reset before
  // the 401 (502). Either way the client's connection goes on.
  t.match(c.statuses[0], /HTTP\/1\.1 (401|502)/, 'the upload got an answer')
  t.equal(c.statuses[1], 'HTTP/1.1 200', 'and the next request on the connection too')
})

t.test('past the discard bound (the route maxBodySize) the connection is closed, not stalled', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (req, res) => {
    if (req.method === 'POST') { res.writeHead(401, { 'content-length': 2 }); res.end('no'); return }
    res.end('ok')
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], maxBodySize: '1MiB' }] })
  const head = 'POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n'
  const c = await twoRequests(port, head, chunkedBody(BIG), '/second')
  t.notOk(c.stalled, 'the proxy closed the connection', { raw: c.raw.slice(0, 400) })
  t.ok(c.ms < 3000, `and at once, not after some unrelated timeout (${c.ms} ms)`)
  t.match(c.statuses[0], /HTTP\/1\.1 (401|413)/, 'the upload got its answer')
  t.notOk(c.statuses.includes('HTTP/1.1 200'), 'the request after the oversized body is not read')
})

t.test('CGI script that never reads its stdin (body larger than the pipe)', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, {
    'noread.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nignored\\n'\n",
    'ok.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n",
  })
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: dir, match: { prefix: '/' } }])
  const c = await twoRequests(p.port, post('/noread.sh', BIG), Buffer.alloc(BIG, 66), '/ok.sh')
  t.notOk(c.stalled, 'the connection does not stall', { raw: c.raw.slice(0, 400) })
  t.same(c.statuses, ['HTTP/1.1 200', 'HTTP/1.1 200'])
  t.match(c.raw, /ignored\n[\s\S]*ok\n/)
})

t.test('CGI: a 404 for a chunked upload (answered before any spooling) leaves the connection usable', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, { 'ok.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n" })
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: dir, match: { prefix: '/' } }])
  const head = 'POST /missing.sh HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n'
  const c = await twoRequests(p.port, head, chunkedBody(BIG), '/ok.sh')
  t.notOk(c.stalled, 'the connection does not stall', { raw: c.raw.slice(0, 400) })
  t.same(c.statuses, ['HTTP/1.1 404', 'HTTP/1.1 200'])
})

t.test('FastCGI (php-cgi not reading the POST body): the connection goes on', async (t) => {
  if (!haveFcgiPeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-unread-')
  writeScripts(dir, { 'noread.php': "<?php echo 'ignored';\n", 'ok.php': "<?php echo 'ok';\n" }, 0o644)
  // enable_post_data_reading=0: PHP leaves the body unread unless the script reads php://input.
  const php = await startOnFd0(t, dir, [PHP_CGI, '-n', '-d', 'enable_post_data_reading=0', '-d', 'display_errors=0'], {
    PATH: '/usr/bin:/bin', PHP_FCGI_CHILDREN: '1', PHP_FCGI_MAX_REQUESTS: '10000',
  })
  const { port } = await proxyServer(t, {
    routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${php.socketPath}`], docroot: dir }],
  })
  const c = await twoRequests(port, post('/noread.php', BIG), Buffer.alloc(BIG, 66), '/ok.php')
  t.notOk(c.stalled, 'the connection does not stall', { raw: c.raw.slice(0, 400) })
  t.equal(c.statuses[0], 'HTTP/1.1 200', 'the upload got its answer')
  t.ok(c.statuses.length === 2 || c.closed, 'then the second request is answered, or the connection closed')
})

t.test('"client aborted" from an adapter while the client is still connected', async (t) => {
  guardLeaks(t)
  let after = false
  const lost = scriptedAdapter('lost-body', (ex, h, done) => {
    // An adapter that lost the request body (a consumed stream on a retry) and blames the client.
    if (after) {
      h.onHead(200, ['content-type', 'text/plain'], { resume () {} })
      h.onData(Buffer.from('partial'))
    }
    done()
    h.onError(new ProxyError('ERR_CLIENT_ABORTED', 'request body ended early', { phase: 'request' }))
  })
  const { url } = await proxyServer(t, { adapters: [lost], routes: [{ protocol: 'lost-body', backends: ['127.0.0.1:9'] }] })

  const r = await Promise.race([
    fetchRaw(`${url}/x`, { method: 'POST', body: 'hello' }),
    new Promise<null>((resolve) => setTimeout(() => resolve(null), DEADLINE_MS).unref()),
  ])
  t.not(r, null, 'the client is answered, not left waiting')
  t.equal(r?.status, 500, 'an internal error: the proxy lost the body, not the client')
  t.match(r?.body.toString(), /ERR_INTERNAL/)

  after = true
  const cut = await Promise.race([
    fetchRaw(`${url}/y`, { method: 'POST', body: 'hello' }).catch((err: Error) => err),
    new Promise<null>((resolve) => setTimeout(() => resolve(null), DEADLINE_MS).unref()),
  ])
  t.not(cut, null, 'a response already begun is cut, not left open')
  // The connection is destroyed: a truncated 200, or a hang-up if its head had not left yet.
  t.ok(cut instanceof Error || cut?.complete === false, 'the client sees the response cut')
})
