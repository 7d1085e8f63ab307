/**
 * Multiplexing against FAKE-FCGI answering FCGI_MPXS_CONNS=1 (no FastCGI server installed here
 * multiplexes, so a raw fake is the only peer for these cases): interleaved records, END_REQUEST
 * for an id that is not active, aborts with the others going on, late END_REQUESTs, END_REQUEST
 * protocol statuses on a shared connection, and junk GET_VALUES_RESULT answers.
 */
import t, { type Test } from 'tap'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { type FakeRequest, fakeClient, respond } from './helpers/fake.js'
import { endBody, pairs, rec } from './helpers/records.js'
import { makeExchange, record } from './helpers/harness.js'

const values = (maxReqs = '4', maxConns = '1'): Buffer =>
  rec(10, 0, pairs([['FCGI_MAX_CONNS', maxConns], ['FCGI_MAX_REQS', maxReqs], ['FCGI_MPXS_CONNS', '1']]))

const end = (id: number, protocolStatus = 0): Buffer => rec(3, id, endBody(0, protocolStatus))
const out = (id: number, s = ''): Buffer => rec(6, id, s)

async function mpx (t: Test, opts = {}, v = values()) {
  const held: FakeRequest[] = []
  const setup = await fakeClient(t, (req) => { held.push(req) }, { discovery: true, ...opts }, v)
  return { ...setup, held }
}

t.test('interleaved STDOUT records of three requests, cut anywhere: each gets its own bytes', async (t) => {
  guardLeaks(t)
  const { held, ask, client } = await mpx(t)
  const p = ['a', 'b', 'c'].map((q) => ask({ query: q }))
  t.ok(await waitFor(() => held.length === 3), 'three requests on one connection')
  const [a, b, c] = held.map((q) => q.id)
  const wire = Buffer.concat([
    out(b, 'Content-Type: text/plain\r\n'), out(a, 'Status: 201 Created\r\n\r\nA1'), out(c, 'X: c\r\n\r\nC1'),
    out(b, '\r\nB1'), out(a, 'A2'), rec(7, c, 'c-err\n'), out(c, 'C2'), out(b),
    out(a), end(a), out(c), end(c),
  ])
  // Written in odd-sized pieces so records and headers straddle reads.
  for (let off = 0; off < wire.length; off += 7) held[0].sock.write(wire.subarray(off, off + 7))
  held[0].sock.write(end(b))
  const [ra, rb, rc] = await Promise.all(p)
  t.same([ra.status, ra.body.toString()], [201, 'A1A2'])
  t.same([rb.status, rb.body.toString()], [200, 'B1'])
  t.same([rc.status, rc.body.toString(), rc.stderr], [200, 'C1C2', 'c-err\n'])
  t.same([ra.error, rb.error, rc.error], [null, null, null])
  t.equal(client.connections, 1, 'the connection is kept')
})

for (const which of ['never used', 'finished'] as const) {
  t.test(`END_REQUEST for a ${which} id: ERR_PROTOCOL for the requests on the connection, never reused`, async (t) => {
    guardLeaks(t)
    const { held, ask, client, ctx } = await mpx(t)
    const p = [ask({ query: 'a' }), ask({ query: 'b' }), ask({ query: 'c' })]
    t.ok(await waitFor(() => held.length === 3))
    t.same(held.map((q) => [q.conn, q.id]), [[1, 1], [1, 2], [1, 3]])
    respond(held[2], 'C')
    t.equal((await p[2]).body.toString(), 'C', 'id 3 finished')
    held[0].sock.write(out(held[0].id, 'Content-Type: text/plain\r\n\r\npart'))
    // A second END_REQUEST for the finished id 3, or one for id 77, never used on this connection.
    held[0].sock.write(end(which === 'finished' ? 3 : 77))
    const r = await Promise.all(p.slice(0, 2))
    t.same(r.map((x) => x.error?.code), ['ERR_PROTOCOL', 'ERR_PROTOCOL'])
    t.same(r.map((x) => x.error?.status), [502, 502])
    t.same(r.map((x) => x.error?.phase), ['body', 'head'])
    t.equal(r[0].body.toString(), 'part', 'what came before is kept')
    t.ok(ctx.logs.some((l) => l.level === 'warn' && /not active/.test(String((l.obj as { err?: string }).err))), 'logged with the reason')
    t.ok(await waitFor(() => client.connections === 0), 'the connection is closed')
    const next = ask({ query: 'next' })
    t.ok(await waitFor(() => held.length === 4))
    t.equal(held[3].conn, 2, 'the next request goes on a fresh connection')
    respond(held[3], 'N')
    t.equal((await next).body.toString(), 'N')
    t.equal(client.inflight, 0)
  })
}

t.test('an aborted request: ABORT_REQUEST, its late output dropped, the others answered, the id freed by its END_REQUEST', async (t) => {
  guardLeaks(t)
  const { held, ask, client, fake, ctx } = await mpx(t)
  const ac = new AbortController()
  const a = ask({ query: 'a' })
  const b = ask({ query: 'b', signal: ac.signal })
  const c = ask({ query: 'c' })
  t.ok(await waitFor(() => held.length === 3))
  const sock = held[0].sock
  const [ia, ib, ic] = held.map((q) => q.id)
  sock.write(Buffer.concat([out(ia, 'Content-Type: text/plain\r\n\r\nA1'), out(ib, 'Content-Type: text/plain\r\n\r\nB1'), out(ic, 'Content-Type: text/plain\r\n\r\nC1')]))
  t.ok(await waitFor(() => client.inflight === 3 && fake.requests.length === 3))
  ac.abort()
  const rb = await b
  t.equal(rb.error?.code, 'ERR_CLIENT_ABORTED')
  t.ok(await waitFor(() => fake.aborts.length === 1), 'FCGI_ABORT_REQUEST sent')
  t.same(fake.aborts[0], { conn: 1, id: ib })
  t.equal(client.connections, 1, 'the connection is not closed under the others')
  // The backend finishes b's output before it sees the abort; then the others go on.
  sock.write(Buffer.concat([out(ib, 'B2-late'), out(ia, 'A2'), out(ib), rec(7, ib, 'b-err'), out(ic, 'C2'), out(ia), end(ia)]))
  t.equal((await a).body.toString(), 'A1A2')
  // A new request meanwhile does not get b's id: it is taken until its END_REQUEST.
  const d = ask({ query: 'd' })
  t.ok(await waitFor(() => held.length === 4))
  t.equal(held[3].conn, 1)
  t.not(held[3].id, ib, 'the aborted id is not reused before its END_REQUEST')
  sock.write(Buffer.concat([end(ib), out(ic), end(ic)]))
  t.equal((await c).body.toString(), 'C1C2')
  respond(held[3], 'D')
  t.equal((await d).body.toString(), 'D')
  t.notMatch(rb.body.toString(), /late/, 'nothing reached the aborted handler after the abort')
  const e = ask({ query: 'e' })
  t.ok(await waitFor(() => held.length === 5))
  t.same([held[4].conn, held[4].id], [1, 1], 'same connection, lowest id')
  respond(held[4], 'E')
  t.equal((await e).body.toString(), 'E')
  t.same(ctx.logs.filter((l) => l.level === 'warn'), [], 'no warning')
})

t.test('a request whose client stopped reading, then left: the neighbours held behind it go on', async (t) => {
  guardLeaks(t)
  const { held, ask, client, fake } = await mpx(t)
  const ac = new AbortController()
  const ra = record()
  let pieces = 0
  // A client whose socket stays full: the first piece pauses the connection (head-of-line).
  client.dispatch(makeExchange({ query: 'a', signal: ac.signal }), { ...ra.handler, onData: () => { pieces++; return false } })
  let bDone = false
  const b = ask({ query: 'b' }).then((r) => { bDone = true; return r })
  const c = ask({ query: 'c' }) // still running when a leaves: the connection stays shared
  t.ok(await waitFor(() => held.length === 3))
  const [ia, ib] = held.map((q) => q.id)
  held[0].sock.write(Buffer.concat([out(ia, 'Content-Type: text/plain\r\n\r\nA1'), out(ia, 'A2'), out(ib, 'Content-Type: text/plain\r\n\r\nB1'), out(ib), end(ib)]))
  t.ok(await waitFor(() => pieces === 1), 'a got its first piece and paused')
  t.notOk(bDone, 'b waits behind the paused request (one stream per connection)')
  ac.abort()
  const rb = await b
  t.equal(rb.error, null)
  t.equal(rb.body.toString(), 'B1')
  t.equal((await ra.done).error?.code, 'ERR_CLIENT_ABORTED')
  t.equal(pieces, 1, 'nothing more reached the aborted handler')
  t.ok(await waitFor(() => fake.aborts.length === 1), 'FCGI_ABORT_REQUEST sent for a')
  held[0].sock.write(Buffer.concat([out(ia), end(ia)]))
  respond(held[2], 'C')
  t.equal((await c).body.toString(), 'C')
  t.equal(client.inflight, 0)
  t.equal(client.connections, 1, 'the connection is kept')
})

t.test('END_REQUEST for an aborted request after abortTimeout: accepted, the connection closes once idle', async (t) => {
  guardLeaks(t)
  const { held, ask, client, fake, ctx } = await mpx(t, { abortTimeout: 50 }, values('4', '4'))
  const ac = new AbortController()
  const a = ask({ query: 'a' })
  const b = ask({ query: 'b', signal: ac.signal })
  t.ok(await waitFor(() => held.length === 2))
  ac.abort()
  t.equal((await b).error?.code, 'ERR_CLIENT_ABORTED')
  t.ok(await waitFor(() => ctx.logs.some((l) => l.level === 'warn' && /aborted request/.test(l.msg ?? ''))), 'abortTimeout passed')
  // The late END_REQUEST is no protocol error: the id was still active.
  held[1].sock.write(end(held[1].id))
  const c = ask({ query: 'c' })
  t.ok(await waitFor(() => held.length === 3), 'a new request goes elsewhere: the retired connection takes none')
  t.equal(held[2].conn, 2)
  respond(held[2], 'C')
  t.equal((await c).body.toString(), 'C')
  respond(held[0], 'A')
  const ra = await a
  t.equal(ra.error, null, 'the request still being answered is not cut')
  t.equal(ra.body.toString(), 'A')
  t.equal(fake.aborts.length, 1)
  t.ok(await waitFor(() => client.connections === 1), 'the retired connection closed once idle')
  t.notOk(ctx.logs.some((l) => l.level === 'warn' && /protocol error/.test(l.msg ?? '')), 'no protocol error')
})

const STATUSES = [
  { name: 'FCGI_OVERLOADED', status: 2, code: 'ERR_BACKEND_OVERLOADED', http: 503 },
  { name: 'FCGI_UNKNOWN_ROLE', status: 3, code: 'ERR_UNKNOWN_ROLE', http: 502 },
  { name: 'protocolStatus 9', status: 9, code: 'ERR_PROTOCOL', http: 502 },
]
for (const s of STATUSES) {
  t.test(`END_REQUEST ${s.name} for one of three multiplexed requests: ${s.code} ${s.http}, the others answered, connection kept`, async (t) => {
    guardLeaks(t)
    const { held, ask, client } = await mpx(t)
    const p = ['a', 'b', 'c'].map((q) => ask({ query: q }))
    t.ok(await waitFor(() => held.length === 3))
    held[0].sock.write(end(held[1].id, s.status))
    respond(held[2], 'C')
    respond(held[0], 'A')
    const r = await Promise.all(p)
    t.same(r.map((x) => x.error?.code ?? x.body.toString()), ['A', s.code, 'C'])
    t.equal(r[1].error?.status, s.http)
    t.equal(r[1].status, null, 'no head reached the handler')
    t.equal(client.connections, 1)
    const d = ask({ query: 'd' })
    t.ok(await waitFor(() => held.length === 4))
    t.same([held[3].conn, held[3].id], [1, 1], 'the connection takes the next request')
    respond(held[3], 'D')
    t.equal((await d).body.toString(), 'D')
  })
}

t.test('END_REQUEST FCGI_CANT_MPX_CONN for the second request: sent again alone, the first answered, multiplexing off', async (t) => {
  guardLeaks(t)
  const { held, ask, client, ctx } = await mpx(t, {}, values('4', '4'))
  const p = ['a', 'b'].map((q) => ask({ query: q }))
  t.ok(await waitFor(() => held.length === 2))
  t.same(held.map((q) => [q.conn, q.id]), [[1, 1], [1, 2]])
  held[1].sock.write(end(held[1].id, 1))
  t.ok(await waitFor(() => held.length === 3), 'b sent again')
  t.not(held[2].conn, 1, 'on another connection')
  respond(held[2], 'B')
  respond(held[0], 'A')
  const r = await Promise.all(p)
  t.same(r.map((x) => x.error?.code ?? x.body.toString()), ['A', 'B'])
  t.ok(ctx.logs.some((l) => l.level === 'warn' && /CANT_MPX_CONN/.test(l.msg ?? '')), 'the operator is told')
  // From now on one request per connection.
  const q = ['c', 'd'].map((x) => ask({ query: x }))
  t.ok(await waitFor(() => held.length === 5))
  t.not(held[3].conn, held[4].conn, 'two requests, two connections')
  for (const x of held.slice(3)) respond(x, x.params.get('QUERY_STRING'))
  t.same((await Promise.all(q)).map((x) => x.body.toString()), ['c', 'd'])
  t.equal(client.inflight, 0)
})

const JUNK: Array<{ name: string, answer: Buffer, mpx: boolean, maxReqs: number | null, maxConns: number | null }> = [
  { name: 'FCGI_MAX_REQS not a number', answer: rec(10, 0, pairs([['FCGI_MAX_REQS', 'lots'], ['FCGI_MPXS_CONNS', '1']])), mpx: true, maxReqs: null, maxConns: null },
  { name: 'negative, zero and huge limits', answer: rec(10, 0, pairs([['FCGI_MAX_CONNS', '-3'], ['FCGI_MAX_REQS', '0'], ['FCGI_MPXS_CONNS', '1'], ['FCGI_X', '9'.repeat(3000)]])), mpx: true, maxReqs: null, maxConns: null },
  { name: 'FCGI_MAX_REQS with 10 digits', answer: rec(10, 0, pairs([['FCGI_MAX_CONNS', '2'], ['FCGI_MAX_REQS', '4294967296'], ['FCGI_MPXS_CONNS', '1']])), mpx: true, maxReqs: null, maxConns: 2 },
  { name: 'FCGI_MPXS_CONNS "yes"', answer: rec(10, 0, pairs([['FCGI_MAX_REQS', '8'], ['FCGI_MPXS_CONNS', 'yes']])), mpx: false, maxReqs: 8, maxConns: null },
  { name: 'unknown names only', answer: rec(10, 0, pairs([['HELLO', 'world'], ['', '']])), mpx: false, maxReqs: null, maxConns: null },
  { name: 'a pair longer than the record', answer: rec(10, 0, Buffer.from([0x0e, 0x7f, ...Buffer.from('FCGI_MAX_CONNS1')])), mpx: false, maxReqs: null, maxConns: null },
  { name: 'GET_VALUES_RESULT on request id 1', answer: rec(10, 1, pairs([['FCGI_MPXS_CONNS', '1']])), mpx: false, maxReqs: null, maxConns: null },
  { name: 'an END_REQUEST instead', answer: end(1), mpx: false, maxReqs: null, maxConns: null },
  { name: 'garbage bytes', answer: Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'), mpx: false, maxReqs: null, maxConns: null },
]
for (const j of JUNK) {
  t.test(`GET_VALUES_RESULT junk (${j.name}): sane limits, requests served`, async (t) => {
    guardLeaks(t)
    const { ask, client } = await fakeClient(t, (req) => respond(req, req.params.get('QUERY_STRING')), { discovery: true, discoveryTimeout: 5000 }, j.answer)
    const r = await Promise.all(['a', 'b', 'c'].map((q) => ask({ query: q })))
    t.same(r.map((x) => x.error?.code ?? x.body.toString()), ['a', 'b', 'c'])
    t.equal(client.backendValues.mpxsConns, j.mpx)
    t.equal(client.backendValues.maxReqs, j.maxReqs)
    t.equal(client.backendValues.maxConns, j.maxConns)
  })
}

t.test('END_REQUEST FCGI_CANT_MPX_CONN after response bytes: ERR_PROTOCOL, that connection not reused, multiplexing off', async (t) => {
  guardLeaks(t)
  const { held, ask, client, ctx } = await mpx(t, {}, values('4', '4'))
  const p = ['a', 'b'].map((q) => ask({ query: q }))
  t.ok(await waitFor(() => held.length === 2))
  // a's head went to the handler: it cannot be sent again.
  held[0].sock.write(Buffer.concat([out(held[0].id, 'Content-Type: text/plain\r\n\r\npart'), end(held[0].id, 1)]))
  const ra = await p[0]
  t.equal(ra.error?.code, 'ERR_PROTOCOL')
  t.equal(ra.error?.status, 502)
  t.equal(ra.error?.phase, 'body', 'the head had been handed on')
  t.equal(ra.body.toString(), 'part')
  t.ok(ctx.logs.some((l) => l.level === 'warn' && /CANT_MPX_CONN/.test(l.msg ?? '')), 'the operator is told')
  respond(held[1], 'B')
  t.equal((await p[1]).body.toString(), 'B', 'the other request on the connection is answered')
  t.ok(await waitFor(() => client.connections === 0), 'the connection closed once idle')
  const q = ['c', 'd'].map((x) => ask({ query: x }))
  t.ok(await waitFor(() => held.length === 4))
  t.ok(held.slice(2).every((h) => h.conn !== 1 && h.id === 1), 'not on the old connection, each alone')
  t.not(held[2].conn, held[3].conn, 'two requests, two connections')
  for (const h of held.slice(2)) respond(h, h.params.get('QUERY_STRING'))
  t.same((await Promise.all(q)).map((x) => x.body.toString()), ['c', 'd'])
})
