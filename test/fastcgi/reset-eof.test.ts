/**
 * A TCP FastCGI backend that writes part of its STDOUT (several MiB, no empty STDOUT, no
 * END_REQUEST) and then resets the connection (RST) while the client has not read it yet (a slow
 * client: the proxy's backend socket is paused by backpressure, the bytes wait unread in the
 * kernel). libuv may then report the reset as an end of stream (uv__stream_io's POLLHUP short-cut,
 * docs/protocols/scgi.md): for FastCGI that can never pass for a clean end, since the records frame
 * the response and only END_REQUEST ends it. The client connection is cut and the error recorded
 * is ERR_BACKEND_RESET also where the reset came as an end of stream (getpeername(2) at that end,
 * connection.ts): not ERR_PROTOCOL ("closed in the middle of a record", as the RST drops the
 * backend's unsent bytes) nor ERR_BACKEND_CLOSED. A clean close (FIN) without END_REQUEST is
 * ERR_BACKEND_CLOSED. A control: the same response ended by END_REQUEST and a FIN is whole. And a
 * reset while the decoder, paused by a slow client, still holds a whole answer and its END_REQUEST
 * (the close waits for it: closePending) fails nothing, whether it comes as an end (getpeername
 * fails) or as ECONNRESET: that answer is complete.
 *
 * A reset on demand is a fault php-fpm and fcgiwrap cannot produce: the backend is the FAKE-FCGI
 * server on TCP (`resetAndDestroy()`); everything else goes through createProxy and node:http.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import type { RequestEndEvent } from '../../src/index.js'
import type { FlowControl } from '../../src/core/types.js'
import { guardLeaks } from '../helpers/leaks.js'
import { slowGetThroughProxy } from '../helpers/slow-client.js'
import { fakeClient, startFake } from './helpers/fake.js'
import { makeExchange } from './helpers/harness.js'
import { tempDir } from './helpers/peers.js'
import { endBody, rec } from './helpers/records.js'

/** More than the loopback path holds while the client does not read (a few MiB). */
const N = 4 << 20
const BODY = Buffer.alloc(N)
for (let i = 0; i < N; i++) BODY[i] = (i * 13 + (i >> 11)) & 0xff
const BODY_SHA = createHash('sha256').update(BODY).digest('hex')
/** STDOUT records of at most this much content (FastCGI's limit is 65535). */
const RECORD = 32 << 10

type Ending = 'reset' | 'fin' | 'end-request'

interface Seen { status: number, bytes: number, sha: string, complete: boolean, event: RequestEndEvent | undefined, codes: unknown[] }

async function slowClient (t: Test, head: string, ending: Ending): Promise<Seen> {
  let ended = false
  const fake = await startFake(t, tempDir(t), {
    tcp: true,
    onRequest: (req) => {
      const parts = [rec(6, req.id, head)]
      for (let off = 0; off < N; off += RECORD) parts.push(rec(6, req.id, BODY.subarray(off, Math.min(N, off + RECORD))))
      if (ending === 'end-request') parts.push(rec(6, req.id), rec(3, req.id, endBody(0, 0)))
      // Once the kernel took the last byte: all of it is "sent".
      req.sock.write(Buffer.concat(parts), () => {
        if (ending === 'reset') req.sock.resetAndDestroy()
        else req.sock.end()
        ended = true
      })
    }
  })
  return await slowGetThroughProxy(t, { match: { prefix: '/' }, protocol: 'fastcgi', backends: [fake.endpoint.id], scriptFilename: '/srv/app/app.php' }, () => ended)
}

const HEADS = [
  ['framed by END_REQUEST only', 'Status: 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n'],
  ['with a Content-Length longer than sent', `Status: 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${N + 1000}\r\n\r\n`],
] as const

for (const [what, head] of HEADS) {
  for (const ending of ['reset', 'fin'] as const) {
    t.test(`STDOUT ${what}, cut by a ${ending === 'reset' ? 'reset' : 'clean close'} without END_REQUEST while the client is not reading: cut, an error`, async (t) => {
      guardLeaks(t)
      const seen = await slowClient(t, head, ending)
      t.equal(seen.status, 200)
      t.comment(`${seen.bytes} of ${N} bytes arrived, ${seen.event?.error ?? 'no error'}`)
      t.notOk(seen.complete, 'the client\'s response is cut, not ended cleanly')
      t.ok(seen.bytes <= N, 'never more than the backend wrote')
      // A reset, whether libuv reports it as one or as an end of stream (the RST drops the
      // backend's unsent bytes, so that end mostly comes inside a record); a clean close comes
      // after whole records.
      const expected = ending === 'reset' ? 'ERR_BACKEND_RESET' : 'ERR_BACKEND_CLOSED'
      t.equal(seen.event?.error, expected, `request:end records ${expected}`)
      t.same(seen.codes, [seen.event?.error], 'one log line, the same code')
    })
  }
}

t.test('the same response ended by END_REQUEST and a clean close while the client is not reading: whole, no error', async (t) => {
  guardLeaks(t)
  const seen = await slowClient(t, HEADS[0][1], 'end-request')
  t.same([seen.status, seen.bytes, seen.sha, seen.complete], [200, N, BODY_SHA, true], 'every byte, ended cleanly')
  t.same([seen.event?.status, seen.event?.error], [200, null])
  t.same(seen.codes, [])
})

t.test('a whole answer and its END_REQUEST read, then a reset while a slow client holds the decoder: complete', async (t) => {
  guardLeaks(t)
  // Small enough to be in the proxy's socket before the RST (loopback's first window), read in
  // one short read, the decoder paused at the first STDOUT record and holding the rest (the
  // END_REQUEST too) when the socket closes. Measured: Node 20 and 22 report the reset as an end
  // of stream (getpeername fails: a fix that made that a failure at once would cut this answer),
  // Node 24 as ECONNRESET (which cut it before: ERR_BACKEND_RESET).
  const body = Buffer.alloc(24 << 10, 0x61)
  const { client } = await fakeClient(t, (req) => {
    const recs: Buffer[] = [rec(6, req.id, 'Content-Type: text/plain\r\n\r\n')]
    for (let o = 0; o < body.length; o += 8192) recs.push(rec(6, req.id, body.subarray(o, o + 8192)))
    recs.push(rec(6, req.id), rec(3, req.id, endBody(0, 0)))
    req.sock.write(Buffer.concat(recs), () => req.sock.resetAndDestroy())
  }, { keepConn: false }, undefined, true)
  for (const ms of [0, 20]) {
    let bytes = 0
    let flow: FlowControl | null = null
    const outcome = await new Promise<string>((resolve) => {
      client.dispatch(makeExchange({}), {
        onHead (_s, _h, f) { flow = f },
        onData (chunk) {
          bytes += chunk.length
          if (ms === 0) setImmediate(() => flow!.resume())
          else setTimeout(() => flow!.resume(), ms)
          return false
        },
        onEnd () { resolve('end') },
        onError (err) { resolve(`${err.code}: ${err.message}`) },
        onLocalRedirect () { resolve('redirect') },
      })
    })
    t.same({ outcome, bytes }, { outcome: 'end', bytes: body.length }, `resumed after ${ms} ms: every byte, then a clean end`)
  }
  await client.close()
  t.equal(client.connections, 0)
})
