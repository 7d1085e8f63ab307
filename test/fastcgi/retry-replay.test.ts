/**
 * When a FastCGI request may go to a backend again, from FAKE-FCGI (docs/protocols/fastcgi.md
 * "Retry and replay"): FCGI_OVERLOADED is retryable only while no byte of a streamed body went to
 * the backend (a spooled one is read again: overloaded-replay.test.ts),
 * the keep-alive race replays only idempotent methods, and a backend that ignores
 * FCGI_ABORT_REQUEST cannot keep request ids taken for ever.
 */
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import { makeExchange, record, testContext, unixEndpoint } from './helpers/harness.js'
import { type FakeRequest, fakeClient, respond, startFake } from './helpers/fake.js'
import { endBody, pairs, rec } from './helpers/records.js'
import { tempDir } from './helpers/peers.js'

const OVERLOADED = 2
const overloaded = (req: FakeRequest): void => { req.sock.write(rec(3, req.id, endBody(0, OVERLOADED))) }

t.test('FCGI_OVERLOADED after body bytes reached the backend: 503 ERR_BACKEND_OVERLOADED, not retryable', async (t) => {
  guardLeaks(t)
  const { fake, ask } = await fakeClient(t, overloaded)
  const r = await ask({ method: 'POST', body: Buffer.from('hello world') })
  t.equal(fake.requests[0].stdin.toString(), 'hello world', 'the backend read the body')
  t.equal(r.error?.code, 'ERR_BACKEND_OVERLOADED')
  t.equal(r.error?.status, 503)
  t.equal(r.error?.retryable, false, 'the body is spent: no other backend may be tried')
  t.equal((await ask()).error?.retryable, true, 'a bodiless request is still retryable')
})

/**
 * A FastCGI peer that refuses every request with FCGI_OVERLOADED as soon as its PARAMS end, on a
 * unix socket in `dir`, or on 127.0.0.1 with `tcp` (`address` is then host:port).
 */
async function refuseBeforeStdin (t: Test, dir: string, tcp = false): Promise<{ path: string, address: string, refused: () => number, stdinBytes: () => number }> {
  const path = join(dir, 'refuse.sock')
  const sockets = new Set<Socket>()
  let stdinBytes = 0
  let refused = 0
  const server = createServer((sock) => {
    sockets.add(sock)
    sock.on('close', () => sockets.delete(sock))
    sock.on('error', () => {})
    let buf = Buffer.alloc(0)
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk])
      while (buf.length >= 8 && buf.length >= 8 + buf.readUInt16BE(4) + buf[6]) {
        const type = buf[1]; const id = buf.readUInt16BE(2); const len = buf.readUInt16BE(4)
        buf = buf.subarray(8 + len + buf[6])
        if (type === 4 && len === 0) { refused++; sock.write(rec(3, id, endBody(0, OVERLOADED))) }
        if (type === 5) stdinBytes += len
      }
    })
  })
  await new Promise<void>((resolve) => tcp ? server.listen(0, '127.0.0.1', resolve) : server.listen(path, resolve))
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const address = tcp ? `127.0.0.1:${(server.address() as AddressInfo).port}` : path
  return { path, address, refused: () => refused, stdinBytes: () => stdinBytes }
}

t.test('FCGI_OVERLOADED before any body byte: retryable, and the next attempt sends the whole body', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  const refusing = await refuseBeforeStdin(t, dir)
  const first = new FastcgiClient(unixEndpoint(refusing.path), { ...FASTCGI_DEFAULTS, discovery: false }, testContext())
  t.teardown(() => first.destroy())
  const { fake, client: second } = await fakeClient(t, (req) => respond(req, req.stdin.toString()))

  // The body has not arrived from the client yet when the first backend refuses the request.
  const body = new PassThrough()
  const ex = makeExchange({ method: 'POST', body, contentLength: 11 })
  const a = record()
  first.dispatch(ex, a.handler)
  const r = await a.done
  t.equal(r.error?.code, 'ERR_BACKEND_OVERLOADED')
  t.equal(r.error?.retryable, true, 'no body byte went to the backend')
  // It arrives while the core picks the next backend: it must wait there for that attempt.
  body.end('hello world')
  await new Promise((resolve) => setImmediate(resolve))
  const b = record()
  second.dispatch(ex, b.handler)
  const s = await b.done
  t.equal(s.error, null, s.error?.message ?? 'no error')
  t.equal(s.body.toString(), 'hello world', 'the second backend got the whole body')
  t.equal(fake.requests[0].stdin.toString(), 'hello world')
  t.equal(refusing.stdinBytes(), 0)
})

// A buffered body (requestBuffering, the default) is replayed instead: overloaded-replay.test.ts.
t.test('through the proxy: a streamed POST body one backend refused with FCGI_OVERLOADED is not sent to the next', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeFileSync(join(dir, 'x.php'), '')
  const a = await startFake(t, dir, { tcp: true, onRequest: overloaded })
  const b = await startFake(t, dir, { tcp: true, onRequest: (req) => respond(req, `b saw ${req.stdin.length}`) })
  const { url } = await proxyServer(t, {
    routes: [{
      protocol: 'fastcgi', backends: [a.endpoint.id, b.endpoint.id], balance: 'round-robin',
      scriptFilename: join(dir, 'x.php'), options: { discovery: false }, requestBuffering: false,
    }],
  })
  const r = await get(`${url}/x`, { method: 'POST', body: 'hello world', headers: { 'content-type': 'text/plain' } })
  t.equal(r.status, 503)
  t.match(r.body.toString(), /ERR_BACKEND_OVERLOADED/)
  t.same(a.requests.map((q) => q.stdin.toString()), ['hello world'])
  t.equal(b.requests.length, 0, 'the second backend never saw the spent request')
  const g = await get(`${url}/y`)
  t.equal(g.status, 200, 'a bodiless request refused by one backend goes to the other')
  t.equal(g.body.toString(), 'b saw 0')
})

t.test('through the proxy: a POST refused with FCGI_OVERLOADED before its body arrived goes whole to the next backend', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeFileSync(join(dir, 'x.php'), '')
  const a = await refuseBeforeStdin(t, dir, true)
  const b = await startFake(t, dir, { tcp: true, onRequest: (req) => respond(req, `b saw ${req.stdin.toString()}`) })
  const { port } = await proxyServer(t, {
    routes: [{
      protocol: 'fastcgi', backends: [a.address, b.endpoint.id], balance: 'round-robin',
      scriptFilename: join(dir, 'x.php'), options: { discovery: false }, requestBuffering: false,
    }],
  })
  const answer = new Promise<{ status: number, body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/x', method: 'POST', agent: false, headers: { 'content-length': '11' } }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.flushHeaders()
    // The body leaves the client only once the first backend has refused the request.
    waitFor(() => a.refused() === 1).then((refused) => { if (refused) req.end('hello world'); else req.destroy() }, reject)
  })
  const r = await answer
  t.equal(r.status, 200, r.body)
  t.equal(r.body, 'b saw hello world', 'the whole body reached the second backend')
  t.equal(a.stdinBytes(), 0)
})

t.test('keep-alive race: a bodiless POST is never sent twice', async (t) => {
  guardLeaks(t)
  // The worker acts on the POST, then dies before its first response byte.
  const { fake, ask } = await fakeClient(t, (req) => {
    if (req.params.get('REQUEST_METHOD') === 'POST') req.sock.destroy()
    else respond(req)
  }, { maxConnections: 4 })
  t.equal((await ask()).status, 200, 'a GET leaves a kept-alive connection')
  const r = await ask({ method: 'POST' })
  t.equal(r.error?.code, 'ERR_BACKEND_CLOSED')
  t.equal(r.error?.retryable, false)
  t.same(fake.requests.map((q) => q.params.get('REQUEST_METHOD')), ['GET', 'POST'], 'the backend ran the POST once')
  t.same(fake.requests.map((q) => q.conn), [0, 1], 'the POST went on a connection that had served nothing')
})

t.test('keep-alive race: an idempotent bodiless DELETE is replayed once', async (t) => {
  guardLeaks(t)
  const { fake, ask } = await fakeClient(t, (req, f) => {
    if (f.requests.length === 2) req.sock.destroy()
    else respond(req)
  })
  t.equal((await ask()).status, 200)
  const r = await ask({ method: 'DELETE' })
  t.equal(r.error, null)
  t.equal(r.status, 200)
  t.same(fake.requests.map((q) => [q.conn, q.params.get('REQUEST_METHOD')]), [[0, 'GET'], [0, 'DELETE'], [1, 'DELETE']])
})

const MPX_VALUES = rec(10, 0, pairs([['FCGI_MAX_CONNS', '1'], ['FCGI_MAX_REQS', '2'], ['FCGI_MPXS_CONNS', '1']]))

t.test('a backend ignoring FCGI_ABORT_REQUEST: after abortTimeout its ids are freed by closing the connection', async (t) => {
  guardLeaks(t)
  const held: FakeRequest[] = []
  const { fake, client, ask, ctx } = await fakeClient(t, (req) => { held.push(req) }, { discovery: true, abortTimeout: 100 }, MPX_VALUES)
  const acs = [new AbortController(), new AbortController()]
  const p = acs.map((ac, i) => ask({ query: String(i), signal: ac.signal }))
  t.ok(await waitFor(() => held.length === 2), 'both requests reached the backend on one connection')
  for (const ac of acs) ac.abort()
  t.same((await Promise.all(p)).map((r) => r.error?.code), ['ERR_CLIENT_ABORTED', 'ERR_CLIENT_ABORTED'])
  t.ok(await waitFor(() => fake.aborts.length === 2), 'FCGI_ABORT_REQUEST sent for both; the backend answers neither')
  // Both ids of the only connection the backend allows stay taken: without the bound, this
  // request would wait for ever.
  const d = ask({ query: 'd' })
  t.ok(await waitFor(() => held.length === 3, 3000), 'the connection was closed and a fresh one took the request')
  t.same(held.map((q) => [q.conn, q.id]), [[1, 1], [1, 2], [2, 1]])
  respond(held[2], 'D')
  t.equal((await d).body.toString(), 'D')
  t.ok(ctx.logs.some((l) => l.level === 'warn' && /no END_REQUEST for an aborted request/.test(l.msg ?? '')), 'the operator is told')
  t.equal(client.connections, 1)
})

t.test('a connection retired for an ignored abort still answers the requests on it, then closes', async (t) => {
  guardLeaks(t)
  const held: FakeRequest[] = []
  const { client, ask, ctx } = await fakeClient(t, (req) => { held.push(req) }, { discovery: true, abortTimeout: 50 }, MPX_VALUES)
  const ac = new AbortController()
  const a = ask({ query: 'a' })
  const b = ask({ query: 'b', signal: ac.signal })
  t.ok(await waitFor(() => held.length === 2))
  ac.abort()
  t.equal((await b).error?.code, 'ERR_CLIENT_ABORTED')
  t.ok(await waitFor(() => ctx.logs.some((l) => l.level === 'warn' && /aborted request/.test(l.msg ?? ''))), 'abortTimeout passed')
  t.equal(client.connections, 1, 'not closed under the request still being answered')
  respond(held[0], 'A')
  const r = await a
  t.equal(r.error, null)
  t.equal(r.body.toString(), 'A')
  t.ok(await waitFor(() => client.connections === 0), 'closed once only the aborted request was left')
})

t.test('an abort answered in time keeps the connection', async (t) => {
  guardLeaks(t)
  const held: FakeRequest[] = []
  const { fake, client, ask, ctx } = await fakeClient(t, (req) => { held.push(req) }, { discovery: true, abortTimeout: 50 }, MPX_VALUES)
  const ac = new AbortController()
  const a = ask({ query: 'a' })
  const b = ask({ query: 'b', signal: ac.signal })
  t.ok(await waitFor(() => held.length === 2))
  ac.abort()
  await b
  t.ok(await waitFor(() => fake.aborts.length === 1))
  held[1].sock.write(rec(3, held[1].id, endBody(0, 0)))
  respond(held[0], 'A')
  t.equal((await a).body.toString(), 'A')
  t.equal(client.connections, 1)
  const c = ask({ query: 'c' })
  t.ok(await waitFor(() => held.length === 3))
  t.equal(held[2].conn, 1, 'the same connection takes the next request')
  respond(held[2], 'C')
  t.equal((await c).body.toString(), 'C')
  t.same(ctx.logs.filter((l) => l.level === 'warn'), [])
})
