/**
 * FastCGI 1.0 §3.3: a requestId is 16 bits and 0 is the management id. A multiplexing backend may
 * advertise any FCGI_MAX_REQS (GET_VALUES takes up to 9 digits): the client must never have more
 * than 65535 requests on one connection, nor hand out id 0 or an id above 65535 (it would wrap to 0
 * or collide with another request's id on the wire).
 */
import t from 'tap'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { MAX_REQUEST_ID, requestsPerConnection } from '../../src/protocols/fastcgi/client.js'
import { RequestTable } from '../../src/protocols/fastcgi/connection.js'
import type { FcgiRequest } from '../../src/protocols/fastcgi/request.js'
import { valuesFrom } from '../../src/protocols/fastcgi/discovery.js'
import { fakeClient, respond, type FakeRequest } from './helpers/fake.js'
import { pairs, rec } from './helpers/records.js'

t.test('the per-connection limit never passes 65535 requests', async (t) => {
  t.equal(MAX_REQUEST_ID, 65535)
  t.equal(requestsPerConnection(false, 100_000), 1, 'not multiplexing: one request')
  t.equal(requestsPerConnection(true, null), 16, 'no FCGI_MAX_REQS: the default')
  t.equal(requestsPerConnection(true, 4), 4)
  t.equal(requestsPerConnection(true, 65535), 65535)
  t.equal(requestsPerConnection(true, 65536), 65535)
  t.equal(requestsPerConnection(true, 100_000), 65535)
  // What discovery makes of the values a backend may send, end to end.
  for (const v of ['100000', '999999999', '65536', '0', '-1', '1e9', '', 'x', '1234567890']) {
    const maxReqs = valuesFrom(new Map([['FCGI_MAX_REQS', v], ['FCGI_MPXS_CONNS', '1']])).maxReqs
    const n = requestsPerConnection(true, maxReqs)
    t.ok(Number.isInteger(n) && n >= 1 && n <= 65535, `FCGI_MAX_REQS=${JSON.stringify(v)}: ${n} per connection`)
  }
  // Defensive: a caller handing in a nonsensical number still gets a sane limit.
  for (const v of [0, -5, Number.NaN, Infinity, 2.5]) {
    const n = requestsPerConnection(true, v)
    t.ok(Number.isInteger(n) && n >= 1 && n <= 65535, `maxReqs ${v}: ${n} per connection`)
  }
})

t.test('the id allocator never hands out an id above 65535 (nor 0)', async (t) => {
  const table = new RequestTable()
  const req = {} as unknown as FcgiRequest // only stored by identity
  t.equal(table.freeId(), 1, 'ids start at 1')
  for (let id = 1; id <= 65534; id++) table.set(id, req)
  t.equal(table.freeId(), 65535, 'the last 16-bit id')
  // An id ended while bytes after its END_REQUEST were still undecoded is held back (connection.ts).
  t.equal(table.freeId([{ id: 65535 }]), 0, 'no free id: 0, never 65536')
  table.set(65535, req)
  t.equal(table.freeId(), 0, 'every id taken: 0')
  table.delete(7)
  t.equal(table.freeId(), 7)
})

// Through the client: a raw fake advertising FCGI_MAX_REQS=100000 and FCGI_MPXS_CONNS=1 (no real
// peer does). Ids in flight are within 1..65535 and distinct; the limit used is the capped one.
t.test('a backend advertising FCGI_MAX_REQS=100000: ids on the wire are 1..65535 and distinct', async (t) => {
  guardLeaks(t)
  const values = rec(10, 0, pairs([['FCGI_MAX_CONNS', '1'], ['FCGI_MAX_REQS', '100000'], ['FCGI_MPXS_CONNS', '1']]))
  const held: FakeRequest[] = []
  const { client, ask } = await fakeClient(t, (req) => { held.push(req) }, { discovery: true }, values)
  const n = 200
  const p = Array.from({ length: n }, (_, i) => ask({ query: String(i) }))
  t.ok(await waitFor(() => held.length === n, 20_000), `${n} requests in flight on one connection`)
  t.same(client.backendValues.maxReqs, 100000, 'the backend value is reported as sent')
  const ids = held.map((q) => q.id)
  t.equal(new Set(ids).size, n, 'distinct ids')
  t.ok(ids.every((id) => id >= 1 && id <= 65535), 'every id within 1..65535')
  t.equal(new Set(held.map((q) => q.conn)).size, 1, 'one connection')
  for (const q of held) respond(q, q.params.get('QUERY_STRING'))
  const out = await Promise.all(p)
  t.same(out.map((r) => r.body.toString()), Array.from({ length: n }, (_, i) => String(i)))
})
