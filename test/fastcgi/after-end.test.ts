/**
 * Bytes past END_REQUEST (RELIABILITY §2.11: data after END_REQUEST → close; never reuse). A request
 * id is reused at once (§3.3), so such bytes would otherwise be credited to the next request sent on
 * the connection — another client's response.
 */
import t from 'tap'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import type { TestContext } from './helpers/harness.js'
import { type FakeRequest, fakeClient, respond } from './helpers/fake.js'
import { endBody, pairs, rec } from './helpers/records.js'

const setup = fakeClient

/** The complete answer `body` for `id`, its END_REQUEST padded by `padding` bytes. */
const answer = (id: number, body: string, padding = 0): Buffer =>
  Buffer.concat([rec(6, id, `Content-Type: text/plain\r\n\r\n${body}`), rec(6, id), rec(3, id, endBody(0, 0), padding)])

const strayWarnings = (ctx: TestContext, backend: string) =>
  ctx.logs.filter((l) => l.level === 'warn' && (l.obj as { backend?: string }).backend === backend && /after END_REQUEST/.test(String((l.obj as { err?: string }).err)))

const SAME_READ: Array<{ name: string, stray: (id: number) => Buffer, padding?: number }> = [
  { name: 'a whole second response', stray: (id) => answer(id, 'STRAY') },
  { name: 'one byte', stray: () => Buffer.from([1]) },
  { name: 'a record after the END_REQUEST padding', stray: (id) => rec(6, id, 'Status: 200\r\n\r\nSTRAY'), padding: 5 },
]

for (const c of SAME_READ) {
  t.test(`END_REQUEST then ${c.name} in the same read: the next request goes on a new connection`, async (t) => {
    guardLeaks(t)
    const { fake, ctx, ask } = await setup(t, (req, f) => {
      const body = req.params.get('QUERY_STRING')!
      req.sock.write(f.requests.length === 1 ? Buffer.concat([answer(req.id, body, c.padding), c.stray(req.id)]) : answer(req.id, body))
    }, { maxConnections: 1 })
    // With one connection allowed, bob waits in the queue and is started the moment alice ends.
    const [alice, bob] = await Promise.all([ask({ query: 'alice' }), ask({ query: 'bob' })])
    t.equal(alice.error, null)
    t.equal(alice.body.toString(), 'alice', 'the request that ended keeps its response')
    t.equal(bob.error, null, bob.error?.message ?? 'no error')
    t.equal(bob.body.toString(), 'bob', 'no byte of the stray data reaches the next client')
    t.same(fake.requests.map((q) => q.conn), [0, 1], 'the connection with stray bytes was not reused')
    t.equal(strayWarnings(ctx, fake.endpoint.id).length, 1, 'logged once, with the backend')
  })
}

t.test('bytes arriving later on an idle connection close it; late END_REQUEST padding does not', async (t) => {
  guardLeaks(t)
  const held: Buffer[] = []
  const { fake, ctx, client, ask } = await setup(t, (req, f) => {
    if (f.requests.length === 1) {
      const full = answer(req.id, 'one', 6)
      req.sock.write(full.subarray(0, full.length - 6))
      held.push(full.subarray(full.length - 6))
    } else respond(req, String(f.requests.length))
  }, { maxConnections: 1 })
  t.equal((await ask()).body.toString(), 'one')
  fake.requests[0].sock.write(held[0]) // §3.3 padding, even across reads
  t.equal((await ask()).body.toString(), '2')
  t.equal(client.connections, 1)
  fake.requests[1].sock.write(Buffer.from([1, 6, 0])) // a stray partial header while idle
  t.ok(await waitFor(() => client.connections === 0), 'the idle connection closed on stray bytes')
  t.equal((await ask()).body.toString(), '3')
  t.same(fake.requests.map((q) => q.conn), [0, 0, 1])
  t.equal(strayWarnings(ctx, fake.endpoint.id).length, 1, 'logged once, with the backend')
})

const MPX_VALUES = rec(10, 0, pairs([['FCGI_MAX_CONNS', '1'], ['FCGI_MAX_REQS', '2'], ['FCGI_MPXS_CONNS', '1']]))

t.test('multiplexed: an id ended in the middle of a read is not given to a queued request in that read', async (t) => {
  guardLeaks(t)
  const held: FakeRequest[] = []
  const { fake, ask } = await setup(t, (req) => { held.push(req) }, { discovery: true }, MPX_VALUES)
  const a = ask({ query: 'a' })
  const b = ask({ query: 'b' })
  t.ok(await waitFor(() => held.length === 2), 'two requests on the connection')
  const c = ask({ query: 'c' }) // queued: FCGI_MAX_REQS is 2
  // END_REQUEST for a, then (same write) stray output for a's id: c must not be credited with it.
  held[0].sock.write(Buffer.concat([answer(held[0].id, 'A'), answer(held[0].id, 'STRAY')]))
  t.equal((await a).body.toString(), 'A')
  const rc = await c
  t.notMatch(rc.body.toString(), /STRAY/, 'c never sees a\'s stray output')
  t.equal(rc.error?.code, 'ERR_PROTOCOL', 'the stray record is a protocol error on that connection')
  respond(held[1], 'B') // the connection is gone: b failed with it
  t.equal((await b).error?.code, 'ERR_PROTOCOL')
  t.same(fake.requests.map((q) => [q.conn, q.id]).slice(0, 2), [[1, 1], [1, 2]])
})
