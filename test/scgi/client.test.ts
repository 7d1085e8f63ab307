import t from 'tap'
import { PassThrough } from 'node:stream'
import { createHash } from 'node:crypto'
import { scgiAdapter } from '../../src/protocols/scgi/index.js'
import { ProxyError, type ConfigError } from '../../src/core/errors.js'
import { assertNoLeaks, leakBaseline } from '../cgi-shared/leak-check.js'
import { fakeScgi, type FakeScgi } from './fake-scgi.js'
import { headerMap, makeExchange, recorder, testContext, unixEndpoint, type ExchangeInit, type Recorded } from './harness.js'
import type { Socket } from 'node:net'

const baseline = leakBaseline()

async function run (fake: FakeScgi, init: ExchangeInit, opts: { pauseAfterFirstChunk?: boolean } = {}): Promise<Recorded> {
  const client = scgiAdapter.createClient(unixEndpoint(fake.path), scgiAdapter.parseOptions(undefined, '/options'), testContext(1024))
  const { handler, finished } = recorder(opts)
  client.dispatch(makeExchange(init), handler)
  const rec = await finished
  await client.close()
  t.equal(client.inflight, 0)
  return rec
}

/** A fake that writes `bytes` once the request is in, then closes (SCGI ends by close). */
function answer (bytes: string | Buffer, close = true): (req: unknown, s: Socket) => void {
  return (_req, s) => { s.write(bytes); if (close) s.end() }
}

t.test('AC-85 wire format: POST 27 bytes', async (t) => {
  const fake = await fakeScgi(answer('Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n42'))
  t.teardown(() => fake.close())
  const body = Buffer.from('What is the answer to life?')
  const rec = await run(fake, { method: 'POST', path: '/deepthought', query: 'x', body, env: { REQUEST_METHOD: 'POST', QUERY_STRING: 'x', REQUEST_URI: '/deepthought?x', HTTP_X: '1' } })
  const req = fake.requests[0]
  t.match(req.lengthText, /^[1-9]\d*$/, 'netstring length: decimal, no leading zero')
  t.same(req.pairs[0], ['CONTENT_LENGTH', '27'], 'CONTENT_LENGTH first')
  t.same(req.pairs[1], ['SCGI', '1'])
  const names = req.pairs.map(([n]) => n)
  t.equal(new Set(names).size, names.length, 'no duplicate names')
  t.same(Object.fromEntries(req.pairs), { CONTENT_LENGTH: '27', SCGI: '1', REQUEST_METHOD: 'POST', QUERY_STRING: 'x', REQUEST_URI: '/deepthought?x', HTTP_X: '1' })
  t.same(req.body, body, 'exactly 27 body bytes after ","')
  t.equal(rec.status, 200)
  t.equal(rec.statusText, 'OK')
  t.same(rec.headers, ['Content-Type', 'text/plain'])
  t.equal(rec.body.toString(), '42')
  t.same(rec.calls, ['head', 'data', 'end'])
})

t.test('AC-85 GET without a body sends CONTENT_LENGTH 0', async (t) => {
  const fake = await fakeScgi(answer('Status: 204 No Content\r\n\r\n'))
  t.teardown(() => fake.close())
  const rec = await run(fake, { env: { REQUEST_METHOD: 'GET', QUERY_STRING: '' } })
  t.same(fake.requests[0].pairs.slice(0, 2), [['CONTENT_LENGTH', '0'], ['SCGI', '1']])
  t.same(fake.requests[0].pairs[3], ['QUERY_STRING', ''])
  t.equal(rec.status, 204)
  t.ok(rec.ended)
})

t.test('a large streamed body arrives whole (backpressure on the upload)', async (t) => {
  const fake = await fakeScgi((req, s) => { s.end(`Status: 200\r\n\r\n${createHash('sha256').update(req.body).digest('hex')}`) })
  t.teardown(() => fake.close())
  const src = new PassThrough()
  const total = 8 << 20
  const hash = createHash('sha256')
  const p = run(fake, { method: 'POST', body: src, contentLength: total })
  for (let off = 0; off < total; off += 65536) {
    const c = Buffer.alloc(65536, off / 65536)
    hash.update(c)
    if (!src.write(c)) await new Promise((resolve) => src.once('drain', resolve))
  }
  src.end()
  const rec = await p
  t.equal(rec.body.toString(), hash.digest('hex'), 'sha256 matches at the backend')
})

t.test('AC-88 response variants', async (t) => {
  const cases: Array<[string, string, Partial<Recorded> & { code?: string, bodyText?: string }]> = [
    ['HTTP status line', 'HTTP/1.1 201 Created\r\nContent-Type: a\r\n\r\nmade', { status: 201, bodyText: 'made' }],
    ['headers with no blank line, then close', 'Status: 200\r\nContent-Type: a\r\n', { code: 'ERR_BAD_RESPONSE' }],
    ['Content-Length: 8 and 20 bytes', 'Content-Length: 8\r\n\r\n01234567890123456789', { status: 200, bodyText: '01234567' }],
    ['close before any byte', '', { code: 'ERR_BACKEND_CLOSED' }],
    ['bad head', 'Bad Name: x\r\n\r\n', { code: 'ERR_BAD_RESPONSE_HEADER' }],
    ['Transfer-Encoding refused (CVE-2024-24795)', 'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n', { code: 'ERR_BAD_RESPONSE_HEADER' }],
    ['short of Content-Length at close', 'Content-Length: 100\r\n\r\nabc', { code: 'ERR_BACKEND_CLOSED', bodyText: 'abc' }],
    ['body runs to EOF without Content-Length', 'Content-Type: a\n\nline1\nline2\n', { status: 200, bodyText: 'line1\nline2\n' }],
    ['head too large', 'X: ' + 'a'.repeat(2000) + '\r\n\r\n', { code: 'ERR_RESPONSE_HEAD_TOO_LARGE' }]
  ]
  for (const [name, bytes, want] of cases) {
    await t.test(name, async (t) => {
      const fake = await fakeScgi(answer(bytes))
      t.teardown(() => fake.close())
      const rec = await run(fake, {})
      if (want.code !== undefined) {
        t.equal(rec.error?.code, want.code)
        t.equal(rec.error?.status, 502)
        t.equal(rec.error?.backend, `unix:${fake.path}`)
        t.notOk(rec.ended)
      } else {
        t.equal(rec.status, want.status)
        t.ok(rec.ended)
      }
      if (want.bodyText !== undefined) t.equal(rec.body.toString(), want.bodyText)
      t.equal(rec.calls.filter((c) => c === 'end' || c === 'error').length, 1, 'exactly one ending')
    })
  }
})

t.test('AC-88 Content-Length satisfied: complete without waiting for the close', async (t) => {
  const fake = await fakeScgi(answer('Content-Length: 2\r\n\r\nok', false))
  t.teardown(() => fake.close())
  const rec = await run(fake, {})
  t.equal(rec.body.toString(), 'ok')
  t.ok(rec.ended)
})

t.test('AC-89 the server answers 413 without reading a big body', async (t) => {
  const fake = await fakeScgi(answer('Status: 413 Too Large\r\nContent-Type: text/plain\r\n\r\nno'), { waitForBody: false })
  t.teardown(() => fake.close())
  const src = new PassThrough()
  const p = run(fake, { method: 'POST', body: src, contentLength: 50 << 20 })
  const chunk = Buffer.alloc(1 << 16)
  let written = 0
  const pump = (): void => {
    while (written < 50 << 20 && !src.destroyed) {
      written += chunk.length
      if (!src.write(chunk)) { src.once('drain', pump); return }
    }
  }
  pump()
  const rec = await p
  t.equal(rec.status, 413)
  t.equal(rec.body.toString(), 'no')
  t.ok(rec.ended, 'ends cleanly: the server closed with FIN after its complete answer')
  src.destroy()
})

t.test('backpressure: onData false pauses the backend until resume()', async (t) => {
  let server: Socket | null = null
  const fake = await fakeScgi((_req, s) => { server = s; s.write('Content-Type: a\r\n\r\nfirst') })
  t.teardown(() => fake.close())
  const client = scgiAdapter.createClient(unixEndpoint(fake.path), scgiAdapter.parseOptions(undefined, '/o'), testContext())
  const { handler, rec, finished, flow } = recorder({ pauseAfterFirstChunk: true })
  client.dispatch(makeExchange(), handler)
  const { waitFor } = await import('../helpers/leaks.js')
  t.ok(await waitFor(() => rec.body.length > 0), 'first chunk arrives')
  t.equal(rec.body.toString(), 'first')
  // Only now does the backend send the rest and close; the paused client must not deliver it.
  const s = server as unknown as Socket
  await new Promise((resolve) => s.end('second', () => resolve(null)))
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve))
  t.equal(rec.body.toString(), 'first', 'nothing more while paused')
  t.notOk(rec.ended, 'no end while paused')
  flow()?.resume()
  await finished
  t.equal(rec.body.toString(), 'firstsecond')
  t.ok(rec.ended)
  await client.close()
})

t.test('local redirect goes to onLocalRedirect, the rest is discarded (§6.2.2)', async (t) => {
  const fake = await fakeScgi(answer('Location: /other?x=1\r\n\r\n'))
  t.teardown(() => fake.close())
  const rec = await run(fake, {})
  t.equal(rec.redirect, '/other?x=1')
  t.same(rec.calls, ['redirect'])
})

t.test('an unencodable value fails before any connection', async (t) => {
  const fake = await fakeScgi(answer('Status: 200\r\n\r\n'))
  t.teardown(() => fake.close())
  const rec = await run(fake, { env: { PATH_INFO: '/a\0b' } })
  t.equal(rec.error?.code, 'ERR_BAD_HEADER_VALUE')
  t.equal(rec.error?.status, 400)
  t.equal(fake.connections, 0)
})

t.test('a body of unknown length is refused (the core must spool)', async (t) => {
  const fake = await fakeScgi(answer('Status: 200\r\n\r\n'))
  t.teardown(() => fake.close())
  const rec = await run(fake, { body: new PassThrough(), contentLength: null })
  t.equal(rec.error?.code, 'ERR_LENGTH_REQUIRED')
  t.equal(fake.connections, 0)
})

t.test('abort mid-response destroys the connection and reports the reason', async (t) => {
  let serverSocket: Socket | null = null
  const fake = await fakeScgi((_req, s) => { serverSocket = s; s.write('Content-Type: a\r\n\r\npartial') })
  t.teardown(() => fake.close())
  const ac = new AbortController()
  const client = scgiAdapter.createClient(unixEndpoint(fake.path), scgiAdapter.parseOptions(undefined, '/o'), testContext())
  const { handler, rec, finished } = recorder()
  client.dispatch(makeExchange({ signal: ac.signal }), handler)
  const { waitFor } = await import('../helpers/leaks.js')
  t.ok(await waitFor(() => rec.body.length > 0))
  ac.abort()
  await finished
  t.equal(rec.error?.code, 'ERR_CLIENT_ABORTED')
  t.equal(client.inflight, 0)
  t.ok(await waitFor(() => (serverSocket as Socket | null)?.destroyed === true || (serverSocket as Socket | null)?.readableEnded === true), 'the backend sees the close')
  const reason = new ProxyError('ERR_HEADERS_TIMEOUT')
  const ac2 = new AbortController()
  ac2.abort(reason)
  const r2 = recorder()
  client.dispatch(makeExchange({ signal: ac2.signal }), r2.handler)
  t.equal((await r2.finished).error, reason, 'the core\'s abort reason is passed through')
})

t.test('destroy() ends every exchange in flight', async (t) => {
  const fake = await fakeScgi(() => {})
  t.teardown(() => fake.close())
  const client = scgiAdapter.createClient(unixEndpoint(fake.path), scgiAdapter.parseOptions(undefined, '/o'), testContext())
  const a = recorder()
  const b = recorder()
  client.dispatch(makeExchange(), a.handler)
  client.dispatch(makeExchange(), b.handler)
  const { waitFor } = await import('../helpers/leaks.js')
  t.ok(await waitFor(() => fake.requests.length === 2))
  t.equal(client.inflight, 2)
  client.destroy()
  t.equal((await a.finished).error?.code, 'ERR_BACKEND_CLOSED')
  t.equal((await b.finished).error?.code, 'ERR_BACKEND_CLOSED')
  t.equal(client.inflight, 0)
  await client.close()
})

t.test('connect refused maps to a retryable connect error', async (t) => {
  const fake = await fakeScgi(() => {})
  await fake.close()
  const rec = await run(fake, {})
  t.equal(rec.error?.code, 'ERR_CONNECT_REFUSED')
  t.equal(rec.error?.phase, 'connect')
  t.ok(rec.error?.retryable)
})

t.test('options and capabilities', async (t) => {
  t.same(scgiAdapter.capabilities, { keepAlive: false, multiplex: false, upgrade: false, cgiEnv: true, needsContentLength: true, perRequestProcess: false })
  t.same(scgiAdapter.parseOptions({ acceptStatusLine: false }, '/routes/0/options'), { acceptStatusLine: false })
  const issues = (raw: unknown): string[] => {
    try { scgiAdapter.parseOptions(raw, '/routes/0/options') } catch (err) { return (err as ConfigError).issues.map((i) => i.path) }
    return []
  }
  t.same(issues({ nope: 1, acceptStatusLine: 'yes' }), ['/routes/0/options/nope', '/routes/0/options/acceptStatusLine'], 'every problem, with its path')
  t.same(issues(5), ['/routes/0/options'])
  const fake = await fakeScgi(answer('HTTP/1.1 200 OK\r\n\r\n'))
  t.teardown(() => fake.close())
  const client = scgiAdapter.createClient(unixEndpoint(fake.path), { acceptStatusLine: false }, testContext())
  const r = recorder()
  client.dispatch(makeExchange(), r.handler)
  t.equal((await r.finished).error?.code, 'ERR_BAD_RESPONSE_HEADER', 'status line refused when turned off')
  await client.close()
  t.same(headerMap(['A', '1', 'b', '2']), { a: '1', b: '2' })
})

t.test('no leaked fd or child', (t) => assertNoLeaks(t, baseline))
