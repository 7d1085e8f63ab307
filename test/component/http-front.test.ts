/**
 * RELIABILITY section F: what a client sends is checked before any backend sees it.
 * Literal bytes over a raw socket; the backend counts every request it receives.
 */
import t from 'tap'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, get, listen, closeServer, rawRequest } from '../helpers/servers.js'
import { createProxy, silentLogger } from '../../src/index.js'

guardLeaks(t)

async function setup (t: Tap, extra: Record<string, unknown> = {}) {
  const seen: Array<{ url: string, headers: Record<string, string | string[] | undefined>, body: string }> = []
  const be = await backend(t, (req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => {
      seen.push({ url: req.url ?? '', headers: req.headers, body })
      res.setHeader('x-xff', String(req.headers['x-forwarded-for'] ?? ''))
      res.end(JSON.stringify({ headers: req.headers, body }))
    })
  })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: [be.address], maxBodySize: '100MiB', ...extra }], ...(extra.trustedProxies ? { trustedProxies: extra.trustedProxies as string[] } : {}) })
  const server = createServer(proxy.handler)
  server.on('checkContinue', proxy.checkContinue)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  return { port, seen, url: `http://127.0.0.1:${port}` }
}
interface Tap { teardown (fn: () => unknown): void }

const H = 'Host: a\r\n'
// AC-55: every classic smuggling and syntax input is refused before dispatch.
const SMUGGLING: Array<[string, string, RegExp]> = [
  ['CL.TE', `POST / HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX`, /^HTTP\/1\.1 400/],
  ['TE.CL', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX`, /^HTTP\/1\.1 400/],
  ['dup CL same', `POST / HTTP/1.1\r\n${H}Content-Length: 1\r\nContent-Length: 1\r\n\r\nX`, /^HTTP\/1\.1 400/],
  ['dup CL different', `POST / HTTP/1.1\r\n${H}Content-Length: 1\r\nContent-Length: 2\r\n\r\nXY`, /^HTTP\/1\.1 400/],
  ['CL 1, 1', `POST / HTTP/1.1\r\n${H}Content-Length: 1, 1\r\n\r\nX`, /^HTTP\/1\.1 400/],
  ['CL +1', `POST / HTTP/1.1\r\n${H}Content-Length: +1\r\n\r\nX`, /^HTTP\/1\.1 400/],
  ['TE chunked, gzip', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['dup TE', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['TE xchunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['TE space before colon', `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['obs-fold', `GET / HTTP/1.1\r\n${H}X-A: 1\r\n  folded\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['obs-fold after TE', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n  x\r\n\r\n0\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['bare LF', `GET / HTTP/1.1\n${H}\n`, /^HTTP\/1\.1 400/],
  ['LF inside line', `GET / HTTP/1.1\r\n${H}X-A: a\nb\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['CR inside value', `GET / HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['NUL in value', `GET / HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['no Host on 1.1', 'GET / HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400/],
  ['chunk size overflow', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['chunk without CRLF', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1\r\nXY0\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['space before colon', `GET / HTTP/1.1\r\n${H}X-A : 1\r\n\r\n`, /^HTTP\/1\.1 400/],
  // The gaps Node leaves open (RELIABILITY rule 9), closed by proxycore.
  ['duplicate Host', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', /^HTTP\/1\.1 400[^]*ERR_BAD_REQUEST/],
  ['duplicate Authorization', `GET / HTTP/1.1\r\n${H}Authorization: a\r\nAuthorization: b\r\n\r\n`, /^HTTP\/1\.1 400[^]*ERR_BAD_REQUEST/],
  ['duplicate Content-Type', `POST / HTTP/1.1\r\n${H}Content-Type: a\r\nContent-Type: b\r\nContent-Length: 0\r\n\r\n`, /^HTTP\/1\.1 400[^]*ERR_BAD_REQUEST/],
  ['TE on HTTP/1.0', `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n1\r\nX\r\n0\r\n\r\n`, /^HTTP\/1\.1 400[^]*ERR_BAD_REQUEST/],
  ['TE gzip, chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n1\r\nX\r\n0\r\n\r\n`, /^HTTP\/1\.1 501[^]*ERR_UNSUPPORTED_TRANSFER_CODING/],
]

t.test('AC-55 smuggling and syntax inputs never reach the backend', async (t) => {
  const { port, seen } = await setup(t)
  for (const [name, bytes, expect] of SMUGGLING) {
    const out = await rawRequest(port, bytes)
    t.match(out, expect, name)
  }
  t.equal(seen.length, 0, 'backend counter stays 0')
})

t.test('AC-57 oversized requests: 431, and 413 before reading the body', async (t) => {
  const { port, seen } = await setup(t)
  const big = await rawRequest(port, `GET / HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`)
  t.match(big, /^HTTP\/1\.1 431/)
  const huge = await rawRequest(port, `POST / HTTP/1.1\r\n${H}Content-Length: 2147483648\r\n\r\nabc`)
  t.match(huge, /^HTTP\/1\.1 413[^]*ERR_BODY_TOO_LARGE/)
  t.match(huge, /connection: close/i, 'the connection is closed')
  t.equal(seen.length, 0)
})

t.test('AC-60 Expect: 100-continue', async (t) => {
  const { port, seen } = await setup(t)
  const over = await rawRequest(port, `POST / HTTP/1.1\r\n${H}Content-Length: ${200 * 1024 * 1024}\r\nExpect: 100-continue\r\n\r\n`)
  t.match(over, /^HTTP\/1\.1 413/, '(b) over the limit: 413 ...')
  t.notMatch(over, /100 Continue/, '... without a 100')
  const ok = await rawRequest(port, `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nbody`)
  t.match(ok, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200/, '(a) 100, then 200')
  const foo = await rawRequest(port, `GET / HTTP/1.1\r\n${H}Expect: foo\r\nConnection: close\r\n\r\n`)
  t.match(foo, /^HTTP\/1\.1 417/, '(d) unknown expectation: 417')
  t.equal(seen.length, 1)
  t.equal(seen[0].body, 'body')
  t.notOk(seen[0].headers.expect, 'Expect is not forwarded')
})

t.test('AC-61 hop-by-hop and Connection-listed headers are stripped before ours are added', async (t) => {
  const { url, seen } = await setup(t)
  const r = await get(url, {
    headers: {
      Connection: 'keep-alive, X-Secret, X-Forwarded-For, Te',
      'X-Secret': '1', TE: 'trailers', 'Keep-Alive': '5', 'Proxy-Connection': 'keep-alive', Upgrade: 'h2c',
    },
  })
  t.equal(r.status, 200)
  const h = seen[0].headers
  for (const gone of ['x-secret', 'keep-alive', 'proxy-connection', 'upgrade', 'te']) t.notOk(h[gone], `${gone} stripped`)
  t.not(h.connection, 'keep-alive, X-Secret, X-Forwarded-For, Te', 'client Connection not forwarded')
  t.equal(h['x-forwarded-for'], '127.0.0.1', 'our X-Forwarded-For is added after stripping')
})

t.test('AC-62 X-Forwarded-For: untrusted peers are appended, never believed', async (t) => {
  const { url, seen } = await setup(t)
  await get(url, { headers: { 'X-Forwarded-For': '1.2.3.4' } })
  t.equal(seen[0].headers['x-forwarded-for'], '1.2.3.4, 127.0.0.1')
  t.equal(seen[0].headers['x-forwarded-proto'], 'http')
})

t.test('absolute-form targets route on their authority and reach the backend in origin-form', async (t) => {
  const { port, seen } = await setup(t)
  const out = await rawRequest(port, 'GET http://evil.example/x?y=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(out, /^HTTP\/1\.1 200/)
  t.equal(seen[0].url, '/x?y=1')
})

t.test('an upload still arriving is not a late head: timeouts.headers counts from the end of the body', async (t) => {
  const be = await backend(t, (req, res) => {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => res.end(`got ${n}`))
  })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: '300ms', clientIdle: '2s' } }] })
  const server = createServer(proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const { connect } = await import('node:net')
  const s = connect({ host: '127.0.0.1', port })
  let out = ''
  s.on('data', (d: Buffer) => { out += d.toString('latin1') })
  const closed = new Promise<void>((resolve) => s.on('close', () => resolve()))
  s.on('error', () => {})
  const started = Date.now()
  s.write('POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 12288\r\nConnection: close\r\n\r\n')
  // The client paces its upload over ~1.2 s: four times the headers timeout, never idle for long.
  for (let i = 0; i < 12; i++) {
    s.write('x'.repeat(1024))
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  await closed
  t.ok(Date.now() - started >= 1100, 'the upload took longer than timeouts.headers')
  t.match(out, /^HTTP\/1\.1 200[^]*got 12288$/, 'the backend answered after the whole body, no 504')
})

t.test('maxBodySize counts a chunked body as it streams: 413, the backend request aborted', async (t) => {
  let started = 0
  let completed = 0
  let aborted = 0
  const be = await backend(t, (req, res) => {
    started++
    let n = 0
    req.on('data', (d: Buffer) => { n += d.length })
    req.on('end', () => { completed++; res.end(`got ${n}`) })
    req.on('close', () => { if (!req.complete) aborted++ })
  })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: [be.address], maxBodySize: '64KiB' }] })
  const server = createServer(proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const chunked = (bytes: number): Buffer => {
    const parts: Buffer[] = [Buffer.from('POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n')]
    for (let left = bytes; left > 0; left -= 16384) {
      const n = Math.min(16384, left)
      parts.push(Buffer.from(`${n.toString(16)}\r\n`), Buffer.alloc(n, 'x'), Buffer.from('\r\n'))
    }
    parts.push(Buffer.from('0\r\n\r\n'))
    return Buffer.concat(parts)
  }
  const ok = await rawRequest(port, chunked(64 * 1024))
  t.match(ok, /^HTTP\/1\.1 200[^]*got 65536$/, 'exactly the limit passes, intact')
  const over = await rawRequest(port, chunked(1024 * 1024))
  t.match(over, /^HTTP\/1\.1 413[^]*ERR_BODY_TOO_LARGE/, 'over the limit: 413 with a stable code')
  // Whether the second request reached the backend before the limit is a race; if it did, it
  // must have been aborted there, never completed.
  t.ok(await waitFor(() => started === completed + aborted, 5000), 'a backend request of the over-limit body, if any, was aborted')
  t.equal(completed, 1, 'only the first request reached the backend whole')
})

t.test('maxBodySize bounds a spooled chunked body too (CGI): 413, the script never runs', async (t) => {
  const docroot = mkdtempSync(join(tmpdir(), 'pc-maxbody-'))
  t.teardown(() => rmSync(docroot, { recursive: true, force: true }))
  const ran = join(docroot, 'ran')
  writeFileSync(join(docroot, 'up.sh'), `#!/bin/sh\ntouch ${ran}\nprintf 'Content-Type: text/plain\\n\\n'\necho "length=$CONTENT_LENGTH"\n`, { mode: 0o755 })
  const proxy = await createProxy({
    logger: silentLogger,
    spawns: { cgi: { socketType: 'pipe', copyEnvironment: ['PATH'] } },
    routes: [{ protocol: 'cgi', spawn: 'cgi', docroot, maxBodySize: '64KiB' }],
  })
  const server = createServer(proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const body = (bytes: number): string => `${bytes.toString(16)}\r\n${'x'.repeat(bytes)}\r\n0\r\n\r\n`
  const head = 'POST /up.sh HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n'
  t.match(await rawRequest(port, head + body(64 * 1024)), /^HTTP\/1\.1 200[^]*length=65536/, 'exactly the limit is spooled and passed on')
  rmSync(ran)
  t.match(await rawRequest(port, head + body(256 * 1024)), /^HTTP\/1\.1 413[^]*ERR_BODY_TOO_LARGE/, 'over it: 413 (the spool limit alone is 1 GiB)')
  t.notOk(existsSync(ran), 'the script never ran')
})

t.test('a backend that stops reading the upload and never answers still gets ERR_HEADERS_TIMEOUT', async (t) => {
  const be = await backend(t, (req) => { req.pause() })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: [be.address], maxBodySize: '100MiB', timeouts: { headers: '300ms', clientIdle: '10s' } }] })
  const server = createServer(proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const started = Date.now()
  const head = 'POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 33554432\r\n\r\n'
  const out = await rawRequest(port, Buffer.concat([Buffer.from(head), Buffer.alloc(32 * 1024 * 1024, 'x')]), /ERR_HEADERS_TIMEOUT/)
  t.match(out, /^HTTP\/1\.1 504[^]*ERR_HEADERS_TIMEOUT/, '504 once the upload stalls on the backend')
  t.ok(Date.now() - started < 8000, 'well before the client idle timeout')
})

t.test('AC-59 slow-drip upload: 408 after timeouts.clientIdle, backend request aborted', async (t) => {
  let backendAborted = false
  const be = await backend(t, (req, res) => {
    req.on('data', () => {})
    req.on('aborted', () => { backendAborted = true })
    req.on('close', () => { if (!req.complete) backendAborted = true })
    req.on('end', () => res.end('got it'))
  })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: [be.address], timeouts: { clientIdle: '300ms' } }] })
  const server = createServer(proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const started = Date.now()
  const out = await rawRequest(port, `POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n${'x'.repeat(10 * 1024)}`)
  t.match(out, /^HTTP\/1\.1 408[^]*ERR_REQUEST_TIMEOUT/, '408 with a stable code')
  t.match(out, /connection: close/i, 'and the connection closed')
  t.ok(Date.now() - started >= 250, 'not before the idle timeout')
  t.ok(await waitFor(() => backendAborted, 2000), 'the backend request was aborted')
})
