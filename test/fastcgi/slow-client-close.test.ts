/**
 * A backend may close its connection right after END_REQUEST (keepConn false, php-fpm recycling a
 * worker, php-cgi). With a slow client the decoder is paused holding the tail of the answer and its
 * END_REQUEST when the socket closes: those bytes were received whole and must still be handed on,
 * ending the response cleanly — never a cut response with ERR_PROTOCOL.
 */
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import type { FlowControl } from '../../src/core/types.js'
import { makeExchange, testContext, unixEndpoint } from './helpers/harness.js'
import { fakeClient } from './helpers/fake.js'
import { endBody, rec } from './helpers/records.js'
import { PHP_CGI, PHP_FIXTURE, PHP_FPM, havePeer, startPhpCgi, startPhpFpm, tempDir, type Peer } from './helpers/peers.js'

/** Dispatch one exchange to `client` with a client that pauses on every piece; resolves with what it got. */
function slowAsk (client: FastcgiClient, init: Parameters<typeof makeExchange>[0], resumeAfterMs: number): Promise<{ outcome: string, bytes: number }> {
  let bytes = 0
  let flow: FlowControl | null = null
  return new Promise((resolve) => {
    client.dispatch(makeExchange(init), {
      onHead (_s, _h, f) { flow = f },
      onData (chunk) {
        bytes += chunk.length
        if (resumeAfterMs === 0) setImmediate(() => flow!.resume())
        else setTimeout(() => flow!.resume(), resumeAfterMs)
        return false
      },
      onEnd () { resolve({ outcome: 'end', bytes }) },
      onError (err) { resolve({ outcome: `${err.code}: ${err.message}`, bytes }) },
      onLocalRedirect () { resolve({ outcome: 'redirect', bytes }) },
    })
  })
}

const SIZE = 1024 * 1024

async function peerCase (t: Test, start: (dir: string) => Promise<Peer>): Promise<void> {
  guardLeaks(t)
  const dir = tempDir(t)
  writeFileSync(join(dir, 't.php'), PHP_FIXTURE)
  const peer = await start(dir)
  const client = new FastcgiClient(unixEndpoint(peer.socketPath), { ...FASTCGI_DEFAULTS, keepConn: false }, testContext())
  t.teardown(() => client.destroy())
  for (let i = 0; i < 3; i++) {
    const r = await slowAsk(client, { query: `big=${SIZE}`, env: { SCRIPT_FILENAME: join(dir, 't.php') } }, 0)
    t.same(r, { outcome: 'end', bytes: SIZE }, `request ${i + 1}: every byte, then a clean end`)
  }
  await client.close()
}

t.test('php-fpm, keepConn false: a slow client gets the whole answer', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  await peerCase(t, (dir) => startPhpFpm(t, dir, 1))
})

t.test('php-cgi, keepConn false: a slow client gets the whole answer', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  await peerCase(t, (dir) => startPhpCgi(t, dir, 1))
})

t.test('the whole answer, END_REQUEST and the close in one read: decoded to the end before the close counts', async (t) => {
  guardLeaks(t)
  const body = Buffer.alloc(100_000, 0x61)
  const { client, fake } = await fakeClient(t, (req) => {
    const recs: Buffer[] = [rec(6, req.id, 'Content-Type: text/plain\r\n\r\n')]
    for (let o = 0; o < body.length; o += 8192) recs.push(rec(6, req.id, body.subarray(o, o + 8192), 3))
    recs.push(rec(6, req.id), rec(3, req.id, endBody(0, 0)))
    req.sock.end(Buffer.concat(recs))
  }, { keepConn: false })
  for (const ms of [0, 20]) {
    const r = await slowAsk(client, {}, ms)
    t.same(r, { outcome: 'end', bytes: body.length }, `resumed after ${ms} ms: every byte, then a clean end`)
  }
  t.equal(fake.accepted, 2, 'a connection per request')
  t.equal(client.inflight, 0)
  await client.close()
  t.equal(client.connections, 0)
})

t.test('closed mid-record while a slow client holds the decoder: still a cut response', async (t) => {
  guardLeaks(t)
  const { client } = await fakeClient(t, (req) => {
    const whole = Buffer.concat([rec(6, req.id, 'Content-Type: text/plain\r\n\r\n'), rec(6, req.id, Buffer.alloc(8192, 0x61)), rec(6, req.id, Buffer.alloc(8192, 0x62))])
    req.sock.end(whole.subarray(0, whole.length - 100))
  }, { keepConn: false })
  const r = await slowAsk(client, {}, 20)
  t.match(r.outcome, /^ERR_PROTOCOL: .*middle of a record/)
  t.equal(r.bytes, 8192 * 2 - 100, 'the bytes that came were handed on')
  await client.close()
})

t.test('a slow client aborting while the closed connection still holds its answer: settled, nothing left open', async (t) => {
  guardLeaks(t)
  const { client } = await fakeClient(t, (req) => {
    const recs: Buffer[] = [rec(6, req.id, 'Content-Type: text/plain\r\n\r\n')]
    for (let o = 0; o < 10; o++) recs.push(rec(6, req.id, Buffer.alloc(8192, 0x61)))
    recs.push(rec(6, req.id), rec(3, req.id, endBody(0, 0)))
    req.sock.end(Buffer.concat(recs))
  }, { keepConn: false })
  const ac = new AbortController()
  const outcome = await new Promise<string>((resolve) => {
    client.dispatch(makeExchange({ signal: ac.signal }), {
      onHead () {},
      onData () { setTimeout(() => ac.abort(), 20); return false },
      onEnd () { resolve('end') },
      onError (err) { resolve(err.code) },
      onLocalRedirect () { resolve('redirect') },
    })
  })
  t.equal(outcome, 'ERR_CLIENT_ABORTED')
  t.equal(client.inflight, 0)
  await client.close()
  t.equal(client.connections, 0, 'the connection is gone')
})
