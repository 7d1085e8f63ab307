/**
 * Integration against real php-cgi handed a listening socket on fd 0 (PHP_FCGI_CHILDREN=2):
 * discovery, GET/POST, a body over 64 KiB in several STDIN records, 1 MiB with backpressure,
 * keep-alive reuse, queueing above the children count, STDERR, abort.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import { header, makeExchange, record, testContext, unixEndpoint } from './helpers/harness.js'
import { PHP_CGI, PHP_FIXTURE, havePeer, startPhpCgi, tempDir } from './helpers/peers.js'

async function setup (t: Test, children = 2) {
  const dir = tempDir(t)
  const script = join(dir, 't.php')
  writeFileSync(script, PHP_FIXTURE)
  const peer = await startPhpCgi(t, dir, children)
  const ctx = testContext()
  const client = new FastcgiClient(unixEndpoint(peer.socketPath), { ...FASTCGI_DEFAULTS }, ctx)
  t.teardown(() => client.destroy())
  const ask = (init: Parameters<typeof makeExchange>[0] = {}, opts: { pauseEvery?: number } = {}) => {
    const r = record(opts)
    client.dispatch(makeExchange({ ...init, env: { SCRIPT_FILENAME: script, ...init.env } }), r.handler)
    return r.done
  }
  return { dir, script, peer, ctx, client, ask }
}

t.test('php-cgi', async (t) => {
  if (!havePeer(t, PHP_CGI)) return

  t.test('discovery, GET, keep-alive reuse', async (t) => {
    guardLeaks(t)
    const { ctx, client, ask } = await setup(t)
    const r1 = await ask()
    t.equal(r1.error, null)
    t.equal(r1.status, 200)
    t.match(r1.body.toString(), /^pid \d+$/)
    t.match(header(r1, 'content-type'), /text\/html/)
    t.same(client.backendValues, { maxConns: 2, maxReqs: 2, mpxsConns: false, answered: true }, 'FCGI_GET_VALUES answered by php')
    const connectsAfterFirst = ctx.connects
    t.equal(connectsAfterFirst, 2, 'one discovery connection + one request connection')
    for (let i = 0; i < 5; i++) t.equal((await ask()).status, 200)
    t.equal(ctx.connects, connectsAfterFirst, 'sequential requests reuse the kept-alive connection')
    t.equal(client.connections, 1)
    t.equal(client.inflight, 0)
    await client.close()
    t.equal(client.connections, 0, 'close() releases idle connections')
  })

  t.test('Status header, QUERY_STRING set and empty, big param', async (t) => {
    guardLeaks(t)
    const { ask } = await setup(t)
    const r = await ask({ query: 'status=1' })
    t.equal(r.status, 404)
    t.equal(r.statusText, 'Not Found')
    t.equal(header(r, 'x-test'), 'yes')
    t.equal(header(r, 'status'), undefined, 'Status is consumed')
    t.equal(r.body.toString(), 'nope')
    const q = await ask({ query: 'env=QUERY_STRING&x=' })
    t.equal(q.body.toString(), 'env=QUERY_STRING&x=')
    const big = 'b'.repeat(60000)
    const b = await ask({ query: 'env=HTTP_X_BIG', env: { HTTP_X_BIG: big } })
    t.equal(b.body.length, 60000, 'a 60000-byte param arrives whole')
    const name = 'HTTP_' + 'N'.repeat(200)
    const n = await ask({ query: `env=${name}`, env: { [name]: 'long-name' } })
    t.equal(n.body.toString(), 'long-name', '4-byte name length understood by php')
  })

  t.test('POST bodies: small, and 200 KiB split into several STDIN records', async (t) => {
    guardLeaks(t)
    const { ask } = await setup(t)
    const small = Buffer.from('hello=world')
    const r = await ask({ method: 'POST', query: 'echo=1', body: small })
    t.equal(r.body.toString(), `POST 11 11 ${createHash('md5').update(small).digest('hex')}`)
    const big = Buffer.alloc(200 * 1024)
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff
    const b = await ask({ method: 'POST', query: 'echo=1', body: big })
    t.equal(b.error, null)
    t.equal(b.body.toString(), `POST ${big.length} ${big.length} ${createHash('md5').update(big).digest('hex')}`)
  })

  t.test('1 MiB response with a slow consumer (backpressure)', async (t) => {
    guardLeaks(t)
    const { ask } = await setup(t)
    const size = 1024 * 1024
    const r = await ask({ query: `big=${size}` }, { pauseEvery: 64 * 1024 })
    t.equal(r.error, null)
    t.equal(r.body.length, size)
    t.ok(r.pauses >= 8, `paused ${r.pauses} times`)
    const unit = Buffer.from('0123456789abcdef'.repeat(4096))
    t.ok(r.body.equals(Buffer.concat(Array.from({ length: size / unit.length }, () => unit))), 'bytes intact')
  })

  t.test('20 concurrent requests against 2 children queue, none fails', async (t) => {
    guardLeaks(t)
    const { ctx, client, ask } = await setup(t)
    const all = await Promise.all(Array.from({ length: 20 }, () => ask({ query: 'sleep=20' })))
    t.same(all.map((r) => r.error?.code ?? r.status), Array(20).fill(200))
    t.ok(ctx.connects <= 3, `connections opened: ${ctx.connects} (discovery + FCGI_MAX_CONNS=2)`)
    t.equal(client.inflight, 0)
  })

  t.test('STDERR is captured', async (t) => {
    guardLeaks(t)
    const { ask } = await setup(t)
    const r = await ask({ query: 'stderr=abc' })
    t.equal(r.status, 200)
    t.equal(r.body.toString(), 'logged')
    t.match(r.stderr, /to-stderr-abc/)
  })

  t.test('abort mid-request frees the slot at once; the next request is served', async (t) => {
    guardLeaks(t)
    const { client, ask, ctx } = await setup(t, 1)
    await ask() // discovery done, one kept-alive connection
    const ac = new AbortController()
    const slow = ask({ query: 'sleep=3000', signal: ac.signal })
    await waitFor(() => client.connections === 1 && client.inflight === 1)
    const before = ctx.connects
    ac.abort()
    const r = await slow
    t.equal(r.error?.code, 'ERR_CLIENT_ABORTED')
    t.equal(client.inflight, 0, 'in-flight count drops at once')
    await waitFor(() => client.connections === 0)
    t.equal(client.connections, 0, 'the connection carrying the aborted request is closed, not reused')
    const next = await ask()
    t.equal(next.status, 200, 'php-cgi serves the next request after its script finishes')
    t.equal(ctx.connects, before + 1)
  })
})
