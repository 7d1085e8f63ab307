/**
 * Faults real peers cannot produce, from FAKE-FCGI on literal bytes (ACCEPTANCE H, AC-74..76, 78, 79):
 * each gives the right code and the connection is never reused.
 */
import t from 'tap'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import { makeExchange, record, testContext } from './helpers/harness.js'
import { type Fake, type FakeOptions, fakeClient, respond } from './helpers/fake.js'
import { endBody, pairs, rec } from './helpers/records.js'
import { tempDir } from './helpers/peers.js'

const setup = fakeClient

/** First request on each connection gets `bad`; later ones a good answer. */
const firstBad = (bad: (id: number) => Buffer, close = false) => (req: Parameters<FakeOptions['onRequest']>[0], fake: Fake) => {
  if (fake.requests.filter((r) => r.conn === req.conn).length === 1 && req.conn === 0) {
    req.sock.write(bad(req.id))
    if (close) req.sock.end()
  } else respond(req)
}

const CASES: Array<{ name: string, bad: (id: number) => Buffer, code: string, close?: boolean }> = [
  { name: 'version 2', bad: (id) => Buffer.from([2, 6, 0, id, 0, 0, 0, 0]), code: 'ERR_PROTOCOL' },
  { name: 'record type 12', bad: (id) => rec(12, id), code: 'ERR_PROTOCOL' },
  { name: 'PARAMS sent back to the web server', bad: (id) => rec(4, id), code: 'ERR_PROTOCOL' },
  { name: 'wrong request id', bad: (id) => rec(6, id + 1, 'Status: 200\r\n\r\n'), code: 'ERR_PROTOCOL' },
  { name: 'END_REQUEST with contentLength 7', bad: (id) => rec(3, id, Buffer.alloc(7), 1), code: 'ERR_PROTOCOL' },
  { name: 'close mid-record (65535 + 255 claimed)', bad: (id) => Buffer.concat([Buffer.from([1, 6, 0, id, 0xff, 0xff, 0xff, 0]), Buffer.from('Status: 200\r\n')]), code: 'ERR_PROTOCOL', close: true },
  { name: 'close before any response', bad: () => Buffer.alloc(0), code: 'ERR_BACKEND_CLOSED', close: true },
  { name: 'END_REQUEST FCGI_OVERLOADED', bad: (id) => rec(3, id, endBody(0, 2)), code: 'ERR_BACKEND_OVERLOADED' },
  { name: 'END_REQUEST FCGI_UNKNOWN_ROLE', bad: (id) => rec(3, id, endBody(0, 3)), code: 'ERR_UNKNOWN_ROLE' },
  { name: 'END_REQUEST before the head is complete (AC-76a)', bad: (id) => Buffer.concat([rec(6, id, 'Status: 200 OK\r\nContent-Type: x'), rec(3, id, endBody(0, 0))]), code: 'ERR_BAD_RESPONSE' },
  { name: 'malformed CGI header', bad: (id) => Buffer.concat([rec(6, id, 'no colon here\r\n\r\n'), rec(6, id), rec(3, id, endBody(0, 0))]), code: 'ERR_BAD_RESPONSE_HEADER' },
  { name: 'STDOUT after its end of stream', bad: (id) => Buffer.concat([rec(6, id), rec(6, id, 'x')]), code: 'ERR_PROTOCOL' },
]

for (const c of CASES) {
  t.test(`${c.name} -> ${c.code}; the next request is served`, async (t) => {
    guardLeaks(t)
    const { fake, ask, client } = await setup(t, firstBad(c.bad, c.close))
    const r = await ask()
    t.equal(r.error?.code, c.code, r.error?.message ?? 'no error')
    t.equal(r.status, null, 'no head reached the handler')
    t.equal(client.inflight, 0)
    const next = await ask()
    t.equal(next.status, 200)
    t.equal(next.body.toString(), 'ok')
    const used = new Set(fake.requests.map((q) => q.conn))
    if (['ERR_BACKEND_OVERLOADED', 'ERR_UNKNOWN_ROLE', 'ERR_BAD_RESPONSE'].includes(c.code)) {
      t.equal(used.size, 1, 'a clean END_REQUEST keeps the connection usable')
    } else {
      t.same([...used], [0, 1], 'the broken connection was not reused')
    }
  })
}

t.test('OVERLOADED is retryable in the connect phase', async (t) => {
  guardLeaks(t)
  const { ask } = await setup(t, (req) => req.sock.write(rec(3, req.id, endBody(0, 2))))
  const r = await ask()
  t.equal(r.error?.phase, 'connect')
  t.equal(r.error?.retryable, true)
})

t.test('close after the head: ERR_BACKEND_CLOSED in phase body, data kept', async (t) => {
  guardLeaks(t)
  const { ask } = await setup(t, (req) => { req.sock.end(rec(6, req.id, 'Content-Length: 100\r\n\r\n0123456789')) })
  const r = await ask()
  t.equal(r.status, 200)
  t.equal(r.body.toString(), '0123456789')
  t.equal(r.error?.code, 'ERR_BACKEND_CLOSED')
  t.equal(r.error?.phase, 'body')
})

t.test('CANT_MPX_CONN: retried once on a new connection, then served', async (t) => {
  guardLeaks(t)
  const { fake, ask } = await setup(t, (req, f) => {
    if (f.requests.length === 1) req.sock.write(rec(3, req.id, endBody(0, 1)))
    else respond(req, 'second')
  })
  const r = await ask()
  t.equal(r.error, null)
  t.equal(r.body.toString(), 'second')
  t.same(fake.requests.map((q) => q.conn), [0, 1])
})

t.test('data after END_REQUEST on a kept-alive connection: closed, never reused', async (t) => {
  guardLeaks(t)
  const { fake, ask, client } = await setup(t, (req, f) => {
    respond(req)
    if (f.requests.length === 1) req.sock.write(rec(6, req.id, 'late'))
  })
  t.equal((await ask()).status, 200)
  await waitFor(() => client.connections === 0)
  t.equal((await ask()).status, 200)
  t.same(fake.requests.map((q) => q.conn), [0, 1])
})

t.test('a reused connection closed by the backend before answering: request replayed', async (t) => {
  guardLeaks(t)
  const { fake, ask } = await setup(t, (req, f) => {
    if (f.requests.length === 2) req.sock.destroy()
    else respond(req)
  })
  t.equal((await ask()).status, 200)
  const r = await ask()
  t.equal(r.error, null)
  t.equal(r.status, 200)
  t.same(fake.requests.map((q) => q.conn), [0, 0, 1])
})

t.test('a reused connection reset by the backend before answering: request replayed', async (t) => {
  // php-fpm's pm.max_requests: the worker exits after its last answer, and a request already
  // written to its connection lies unread, so the close comes as a reset (ECONNRESET), not an EOF.
  guardLeaks(t)
  const { fake, ask } = await setup(t, (req, f) => {
    if (f.requests.filter((q) => q.conn === req.conn).length === 2) req.sock.resetAndDestroy()
    else respond(req)
  }, {}, undefined, true)
  t.equal((await ask()).status, 200)
  const r = await ask()
  t.equal(r.error, null, 'the GET is sent again')
  t.equal(r.status, 200)
  t.same(fake.requests.map((q) => q.conn), [0, 0, 1])
})

t.test('local redirect (RFC 3875 §6.2.2) and client redirect', async (t) => {
  guardLeaks(t)
  const { ask } = await setup(t, (req) => respond(req, '', req.params.get('QUERY_STRING') === 'abs' ? 'Location: http://x.test/\r\n\r\n' : 'Location: /other?x\r\n\r\n'))
  const r = await ask()
  t.equal(r.redirect, '/other?x')
  t.equal(r.status, null)
  const c = await ask({ query: 'abs' })
  t.equal(c.status, 302)
})

t.test('wire format: keep-conn, role, no pair straddles records, STDIN ≤ 65535, exact CONTENT_LENGTH', async (t) => {
  guardLeaks(t)
  const { fake, ask } = await setup(t, (req) => respond(req, String(req.stdin.length)))
  const env: Record<string, string> = {}
  for (let i = 0; i < 2000; i++) env[`HTTP_X_HEADER_${i}`] = 'v'.repeat(30)
  const body = Buffer.alloc(150_000, 0x61)
  const r = await ask({ method: 'POST', body, env })
  t.equal(r.body.toString(), '150000')
  const q = fake.requests[0]
  t.equal(q.role, 1)
  t.equal(q.flags, 1, 'FCGI_KEEP_CONN')
  t.notOk(q.params.has('__STRADDLED__'), 'every PARAMS record holds whole pairs')
  t.ok(q.paramRecords.length > 1, `${q.paramRecords.length} PARAMS records`)
  t.equal(q.params.get('HTTP_X_HEADER_1999'), 'v'.repeat(30))
  t.equal(q.params.get('CONTENT_LENGTH'), '150000')
  t.ok(q.stdinRecords.every((n) => n <= 65535))
  t.equal(q.stdinRecords[q.stdinRecords.length - 1], 0, 'empty STDIN terminates')
  t.ok(q.stdinRecords.length >= 4)
})

t.test('authorizer role: no body sent, head with Variable-* handed over', async (t) => {
  guardLeaks(t)
  const { fake, ask } = await setup(t, (req) => respond(req, 'ignored', 'Status: 200\r\nVariable-X_AUTH: v\r\n\r\n'))
  const r = await ask({ role: 'authorizer', method: 'POST', body: Buffer.from('secret') })
  t.equal(fake.requests[0].role, 2)
  t.equal(fake.requests[0].stdin.length, 0)
  t.same(r.headers, ['Variable-X_AUTH', 'v'])
})

t.test('a parameter too large for one record fails before any connection', async (t) => {
  guardLeaks(t)
  const { fake, ask, ctx } = await setup(t, (req) => respond(req))
  const r = await ask({ env: { HTTP_X_BIG: 'x'.repeat(70_000) } })
  t.equal(r.error?.code, 'ERR_BAD_HEADER_VALUE')
  t.equal(ctx.connects, 0)
  t.equal(fake.accepted, 0)
})

const MPX_VALUES = rec(10, 0, pairs([['FCGI_MAX_CONNS', '1'], ['FCGI_MAX_REQS', '4'], ['FCGI_MPXS_CONNS', '1']]))

t.test('multiplexing when the backend offers it; ABORT_REQUEST for one request leaves the others', async (t) => {
  guardLeaks(t)
  const held: Array<Parameters<FakeOptions['onRequest']>[0]> = []
  const { fake, client, ask } = await setup(t, (req) => { held.push(req) }, { discovery: true }, MPX_VALUES)
  const ac = new AbortController()
  const p = [ask({ query: 'a' }), ask({ query: 'b', signal: ac.signal }), ask({ query: 'c' })]
  t.ok(await waitFor(() => held.length === 3), 'three requests reached the backend')
  t.same(held.map((q) => [q.conn, q.id]), [[1, 1], [1, 2], [1, 3]], 'one connection, ids 1..3 (conn 0 was discovery)')
  ac.abort()
  const b = await p[1]
  t.equal(b.error?.code, 'ERR_CLIENT_ABORTED')
  t.ok(await waitFor(() => fake.aborts.length === 1))
  t.same(fake.aborts[0], { conn: 1, id: 2 })
  respond(held[2], 'C')
  respond(held[0], 'A')
  t.same((await Promise.all([p[0], p[2]])).map((r) => r.body.toString()), ['A', 'C'])
  // id 2 stays taken until its END_REQUEST (FastCGI 1.0 §3.3)
  const d = ask({ query: 'd' })
  t.ok(await waitFor(() => held.length === 4))
  t.equal(held[3].id, 1, 'lowest free id, not the aborted one')
  held[1].sock.write(rec(3, 2, endBody(0, 0)))
  respond(held[3], 'D')
  t.equal((await d).body.toString(), 'D')
  t.equal(client.connections, 1)
  t.equal(client.backendValues.mpxsConns, true)
})

// AC-79
t.test('a backend ignoring GET_VALUES gets conservative defaults after the timeout', async (t) => {
  guardLeaks(t)
  const { client, ask, fake } = await setup(t, (req) => respond(req), { discovery: true, discoveryTimeout: 50 })
  const r = await ask()
  t.equal(r.status, 200)
  t.equal(fake.getValues, 1)
  t.same(client.backendValues, { maxConns: null, maxReqs: null, mpxsConns: false, answered: false })
})

t.test('connect refused: ERR_CONNECT_REFUSED in phase connect for every queued request', async (t) => {
  guardLeaks(t)
  const ctx = testContext()
  const dir = tempDir(t)
  const client = new FastcgiClient({ kind: 'unix', path: `${dir}/none.sock`, id: 'none' }, { ...FASTCGI_DEFAULTS }, ctx)
  const rs = [record(), record()]
  for (const r of rs) client.dispatch(makeExchange(), r.handler)
  const out = await Promise.all(rs.map((r) => r.done))
  t.same(out.map((r) => [r.error?.code, r.error?.phase]), [['ERR_CONNECT_REFUSED', 'connect'], ['ERR_CONNECT_REFUSED', 'connect']])
  await client.close()
})
