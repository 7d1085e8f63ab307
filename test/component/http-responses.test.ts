/**
 * RELIABILITY section G: hostile or broken HTTP backends. Raw TCP fakes write crafted bytes (faults a
 * real peer cannot produce); the good paths use a real node:http backend.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { request } from 'node:http'
import type { Socket } from 'node:net'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, get, proxyServer, rawBackend, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

/** A fake backend answering each request with `reply(path)` (raw bytes), then leaving the socket open. */
async function fake (t: Tap, reply: (path: string, socket: Socket) => void) {
  const closed: Socket[] = []
  const be = await rawBackend(t, (socket) => {
    let buf = ''
    socket.on('close', () => closed.push(socket))
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1')
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      const path = buf.slice(buf.indexOf(' ') + 1, buf.indexOf(' ', buf.indexOf(' ') + 1))
      buf = buf.slice(end + 4)
      reply(path, socket)
    })
  })
  return { ...be, closed }
}
interface Tap { teardown (fn: () => unknown): void }

const AMBIGUOUS: Record<string, string> = {
  '/cl-foo': 'HTTP/1.1 200 OK\r\nContent-Length: foo\r\n\r\nabc',
  '/dup-cl-same': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab',
  '/dup-cl-diff': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc',
  '/cl-te': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  '/te-cl': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n',
  '/te-foo': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: foo\r\n\r\nabc',
  '/te-twice': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  '/obs-fold': 'HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n',
  '/bare-lf': 'HTTP/1.1 200 OK\nContent-Length: 0\n\n',
  '/nul': 'HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n',
  '/cl-space': 'HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nab',
  '/status-abc': 'HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n',
  '/status-999': 'HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n',
  '/http09': 'just some text\r\n\r\n',
  '/big-header': `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(80 * 1024)}\r\nContent-Length: 0\r\n\r\n`,
  '/unsolicited-101': 'HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n',
}

t.test('AC-63 ambiguous response framing: 502 at once, backend connection destroyed', async (t) => {
  const be = await fake(t, (path, s) => { s.write(AMBIGUOUS[path] ?? 'HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n') })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
  for (const path of Object.keys(AMBIGUOUS)) {
    const before = be.closed.length
    const started = Date.now()
    const r = await get(url + path)
    t.equal(r.status, 502, `${path} -> 502`)
    t.ok(Date.now() - started < 1000, `${path} answered within 1 s`)
    t.ok(await waitFor(() => be.closed.length > before, 2000), `${path}: backend connection destroyed`)
  }
})

t.test('AC-65 short responses stay short: no padding, no final chunk', async (t) => {
  const be = await fake(t, (path, s) => {
    if (path === '/short-cl') s.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n' + 'x'.repeat(28))
    else if (path === '/short-chunked') s.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n')
    else s.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n')
  })
  const { port, url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
  const a = await rawRequest(port, 'GET /short-cl HTTP/1.1\r\nHost: a\r\n\r\n')
  t.match(a, /^HTTP\/1\.1 200[^]*content-length: 100\r\n/i)
  t.equal(a.slice(a.indexOf('\r\n\r\n') + 4), 'x'.repeat(28), '(a) 28 bytes, then the connection closed')
  const b = await rawRequest(port, 'GET /short-chunked HTTP/1.1\r\nHost: a\r\n\r\n')
  t.match(b, /hello/)
  t.notMatch(b, /\r\n0\r\n\r\n$/, '(b) no final 0-chunk')
  // (c) node:http has committed the head once the backend's head was accepted, so the client sees
  // the connection cut (never a padded, complete-looking response) rather than a 502.
  await t.rejects(get(`${url}/headers-only`), /socket hang up|aborted|ECONNRESET/, '(c) cut, not padded')
})

t.test('AC-67 204 and 304 never carry a body; stray bytes destroy the backend socket', async (t) => {
  const be = await fake(t, (path, s) => {
    if (path === '/204') s.write('HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello')
    else if (path === '/304') s.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello')
    else s.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 120\r\n\r\n')
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
  for (const p of ['/204', '/304', '/304-valid']) {
    const out = await rawRequest(port, `GET ${p} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    t.match(out, /^HTTP\/1\.1 (204|304)/, p)
    t.notMatch(out, /hello/, `${p}: no body`)
    t.notMatch(out, /transfer-encoding/i, `${p}: no Transfer-Encoding`)
  }
  t.ok(await waitFor(() => be.closed.length >= 2, 2000), 'sockets with stray bytes destroyed')
})

t.test('AC-68 backend closing keep-alive connections: GETs retried once, POSTs never replayed', async (t) => {
  let posts = 0
  const be = await fake(t, (path, s) => {
    if (path === '/post') posts++
    s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok')
  })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  for (let i = 0; i < 20; i++) t.equal((await get(`${url}/get`)).status, 200)
  const p = await get(`${url}/post`, { method: 'POST', body: 'x' })
  t.equal(p.status, 200)
  t.equal(posts, 1, 'the POST reached the backend exactly once')
})

t.test('AC-70 1xx and upgrade safety', async (t) => {
  const be = await fake(t, (path, s) => {
    if (path === '/early') s.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
    // A Link value RFC 8288 allows and node's writeEarlyHints refuses, and hop-by-hop fields beside it.
    else if (path === '/early-quoted') s.write('HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel="preload stylesheet"; as=style\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal')
    else if (path === '/early-extra') s.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: 99\r\nKeep-Alive: timeout=1\r\nX-Other: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal')
    else if (path === '/204-cl') s.write('HTTP/1.1 204 No Content\r\nContent-Length: 11\r\nX-A: 1\r\n\r\n')
    else if (path === '/processing') s.write('HTTP/1.1 102 Processing\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal')
    else if (path === '/ws') s.write('HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 0\r\n\r\n')
    else s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const early = await rawRequest(port, 'GET /early HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(early, /HTTP\/1\.1 200 OK[^]*ok$/, '(b) 103 then an intact 200')
  t.match(early, /^HTTP\/1\.1 103 Early Hints\r\n[Ll]ink: <\/a\.css>; rel=preload\r\n\r\n/, '(b) the hint is passed on first')
  const quoted = await rawRequest(port, 'GET /early-quoted HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(quoted, /^HTTP\/1\.1 (103[^]*\r\n\r\nHTTP\/1\.1 )?200 OK[^]*final$/, '(b) a hint node cannot send is dropped, the 200 is intact')
  const extra = await rawRequest(port, 'GET /early-extra HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  const hint = extra.slice(0, extra.indexOf('\r\n\r\n'))
  t.match(hint, /^HTTP\/1\.1 103 /, '(b) 103 passed on')
  t.notMatch(hint, /content-length|keep-alive|x-other/i, '(b) a hint carries its Link fields only')
  t.match(extra, /200 OK[^]*final$/)
  const old = await rawRequest(port, 'GET /early HTTP/1.0\r\nHost: a\r\n\r\n')
  t.match(old, /^HTTP\/1\.1 200 OK[^]*ok$/, '(b) no 1xx to an HTTP/1.0 client (RFC 9110 §15.2)')
  const nc = await rawRequest(port, 'GET /204-cl HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(nc, /^HTTP\/1\.1 204 [^]*x-a: 1/i, '204 passed on')
  t.notMatch(nc, /content-length/i, 'without the Content-Length RFC 9110 §8.6 forbids (the CGI side drops it too)')
  const processing = await rawRequest(port, 'GET /processing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(processing, /^HTTP\/1\.1 200 OK[^]*final$/, '(b) 102 is not passed on (nor relabelled 103)')
  const ws = await rawRequest(port, 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nGET /private HTTP/1.1\r\nHost: a\r\n\r\n')
  t.match(ws, /^HTTP\/1\.1 426/, '(d) 426 passed on')
  t.match(ws, /^upgrade: websocket\r$/im, '(d) with its Upgrade header (RFC 9110 §15.5.22; AC-70(d) said stripped: nginx keeps it too)')
  t.notMatch(ws, /HTTP\/1\.1 101/, '(d) no tunnel')
})

t.test('AC-71 trailers reach clients that asked for them; 10 MiB chunked body intact', async (t) => {
  const chunk = Buffer.alloc(64 * 1024, 'z')
  const be = await backend(t, (_req, res) => {
    res.writeHead(200, { Trailer: 'X-T' })
    for (let i = 0; i < 160; i++) res.write(chunk)
    res.addTrailers({ 'X-T': 'v' })
    res.end()
  })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const want = createHash('sha256')
  for (let i = 0; i < 160; i++) want.update(chunk)
  const digest = want.digest('hex')
  const withTe = await get(url, { headers: { TE: 'trailers' } })
  t.equal(withTe.trailers['x-t'], 'v', 'trailer forwarded with TE: trailers')
  t.equal(createHash('sha256').update(withTe.body).digest('hex'), digest)
  const without = await get(url)
  t.notOk(without.trailers['x-t'], 'no trailer without TE: trailers')
  t.equal(createHash('sha256').update(without.body).digest('hex'), digest)
})

t.test('AC-72 slow backends: 504 on headers timeout, aborted body on idle, 502 on a closed port', async (t) => {
  const be = await fake(t, (path, s) => {
    if (path === '/silent') return
    if (path === '/drip') { s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nx'); return }
    s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
  })
  const { url, port } = await proxyServer(t, {
    routes: [
      { match: { prefix: '/closed' }, protocol: 'http', backends: ['127.0.0.1:1'], retries: 0 },
      { protocol: 'http', backends: [be.address], timeouts: { connect: '1s', headers: '300ms', idle: '300ms' } },
    ],
  })
  let started = Date.now()
  const silent = await get(`${url}/silent`)
  t.equal(silent.status, 504, '(a) 504')
  t.ok(Date.now() - started >= 250, '(a) not before the headers timeout')
  t.match(silent.body.toString(), /ERR_HEADERS_TIMEOUT/)
  started = Date.now()
  const drip = await rawRequest(port, 'GET /drip HTTP/1.1\r\nHost: a\r\n\r\n')
  t.match(drip, /^HTTP\/1\.1 200[^]*\r\n\r\nx$/, '(b) headers and the byte sent, then the client connection aborted')
  const closedPort = await get(`${url}/closed`)
  t.equal(closedPort.status, 502, 'closed port: 502')
  t.match(closedPort.body.toString(), /ERR_CONNECT_REFUSED/)
  t.ok(await waitFor(() => be.closed.length >= 2, 2000), 'backend sockets of timed-out exchanges are closed')
})

t.test('a client abort cancels the backend exchange and frees the connection', async (t) => {
  const be = await fake(t, () => {})
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  await new Promise<void>((resolve) => {
    const req = request({ port, host: '127.0.0.1', path: '/hang', agent: false })
    req.on('error', () => resolve())
    req.end()
    void waitFor(() => be.sockets.length > 0, 2000).then(() => req.destroy())
  })
  t.ok(await waitFor(() => be.closed.length === 1, 2000), 'backend connection closed after the client left')
  t.ok(await waitFor(() => proxy.inflight === 0, 2000), 'slot released')
})

t.test('a body cut by the backend reaches the client up to the last byte the backend sent (flushed, then closed, never completed)', async (t) => {
  const SENT = 2 * 1024 * 1024
  let backendDone = false
  const be = await fake(t, (_path, s) => {
    s.write('HTTP/1.1 200 OK\r\nContent-Length: 16777216\r\n\r\n')
    s.end(Buffer.alloc(SENT, 'y'), () => { backendDone = true })
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
  const { connect } = await import('node:net')
  const c = connect({ host: '127.0.0.1', port })
  c.on('error', () => {})
  const chunks: Buffer[] = []
  const closed = new Promise<void>((resolve) => c.on('close', () => resolve()))
  c.write('GET /cut HTTP/1.1\r\nHost: a\r\n\r\n')
  // Read nothing until the backend has handed over its whole (short) body, so the proxy still
  // holds some of it when it learns the body was cut.
  c.pause()
  c.on('data', (d: Buffer) => chunks.push(d))
  t.ok(await waitFor(() => backendDone, 10_000), 'the backend wrote 2 MiB and closed')
  c.resume()
  await closed
  const all = Buffer.concat(chunks)
  const body = all.subarray(all.indexOf('\r\n\r\n') + 4)
  t.match(all.subarray(0, 64).toString('latin1'), /^HTTP\/1\.1 200/, 'the head went out')
  t.equal(body.length, SENT, 'every byte the backend sent, and not one more')
})
