/**
 * An SCGI backend that resets the connection (RST, ECONNRESET/EPIPE) while the client's request
 * body is still being uploaded must never count as a clean end of the response: before the head
 * the client gets a 502 with ERR_BACKEND_RESET, after the head its connection is cut (no final
 * chunk), and the `request:end` event carries the error. A backend that answers early (413) and
 * closes its side cleanly (FIN) without reading the body still gets its answer delivered intact.
 *
 * A reset cannot be produced on demand by uWSGI: the backend here is a raw TCP fake
 * (`socket.resetAndDestroy()` sends an RST). Everything goes through createProxy and node:http.
 */
import t, { type Test } from 'tap'
import { request } from 'node:http'
import type { Socket } from 'node:net'
import { PassThrough } from 'node:stream'
import type { RequestEndEvent } from '../../src/index.js'
import { scgiAdapter } from '../../src/protocols/scgi/index.js'
import type { Endpoint } from '../../src/core/types.js'
import { waitFor } from '../helpers/leaks.js'
import { proxyServer, rawBackend } from '../helpers/servers.js'
import { assertNoLeaks, leakBaseline } from '../cgi-shared/leak-check.js'
import { fakeScgi } from './fake-scgi.js'
import { makeExchange, recorder, tcpEndpoint, testContext, unixEndpoint, type Recorded } from './harness.js'

const baseline = leakBaseline()

const UPLOAD = 8 << 20
const CHUNK = 64 << 10

interface Tap { teardown (fn: () => void | Promise<void>): void }

/**
 * A TCP SCGI fake: `script` runs once the netstring head arrived (the body is not waited for and,
 * after the head, not read). `clientSawHead` resolves when the test's client got the response head.
 */
async function resetFake (t: Tap, script: (s: Socket, clientSawHead: Promise<void>) => void): Promise<{ address: string, sawHead: () => void }> {
  let sawHead!: () => void
  const clientSawHead = new Promise<void>((resolve) => { sawHead = resolve })
  const raw = await rawBackend(t, (s) => {
    let buf = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk])
      const colon = buf.indexOf(0x3a)
      if (colon === -1) return
      const n = Number(buf.toString('latin1', 0, colon))
      if (buf.length < colon + 2 + n) return
      s.off('data', onData)
      s.pause() // the upload is never read from here on
      script(s, clientSawHead)
    }
    s.on('data', onData)
  })
  return { address: raw.address, sawHead }
}

interface Outcome {
  status: number
  body: string
  /** The response arrived whole (node:http `res.complete`): a clean end, not a cut connection. */
  complete: boolean
  event: RequestEndEvent
  /** Request-body bytes the client had written when the exchange ended. */
  uploaded: number
}

/**
 * POST an 8 MiB body through the proxy, streamed slowly: one 64 KiB chunk per write callback and
 * event-loop turn, until the response ended or the connection failed, or — with `stallAt` — until
 * that many bytes are written; then the client waits with its upload unfinished (a slow client).
 * Resolves with what the client saw and the one `request:end` event.
 */
async function upload (t: Tap, backend: string, sawHead: () => void, stallAt = UPLOAD): Promise<Outcome> {
  const { proxy, port } = await proxyServer(t, { routes: [{ protocol: 'scgi', backends: [backend], scriptFilename: '/srv/app/app.py', requestBuffering: false }] })
  const events: RequestEndEvent[] = []
  proxy.events.on('request:end', (e: RequestEndEvent) => events.push(e))
  let uploaded = 0
  let stop = false
  let gotResponse = false
  const client = await new Promise<Omit<Outcome, 'event' | 'uploaded'>>((resolve) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/app/x', agent: false, headers: { 'content-length': String(UPLOAD) } }, (res) => {
      gotResponse = true
      sawHead()
      let body = ''
      res.setEncoding('latin1')
      res.on('data', (c: string) => { body += c })
      res.on('error', () => {}) // 'aborted' on a cut response; `complete` says it
      res.on('close', () => { stop = true; resolve({ status: res.statusCode ?? 0, body, complete: res.complete }) })
    })
    // After its answer the proxy closes the connection although the upload is not over: the
    // client's next write may fail (EPIPE). Without a response that is the outcome.
    req.on('error', (err: NodeJS.ErrnoException) => {
      stop = true
      if (!gotResponse) resolve({ status: 0, body: `request error ${err.code ?? err.message}`, complete: false })
    })
    const chunk = Buffer.alloc(CHUNK, 0x61)
    const next = (): void => {
      if (stop || req.destroyed) return
      if (uploaded >= UPLOAD) { req.end(); return }
      if (uploaded >= stallAt) return
      uploaded += CHUNK
      req.write(chunk, () => setImmediate(next))
    }
    next()
  })
  t.teardown(() => { stop = true })
  if (!await waitFor(() => events.length > 0, 5000)) throw new Error('no request:end event')
  return { ...client, event: events[0], uploaded }
}

const RESET_CODE = 'ERR_BACKEND_RESET'

// The proxy answers its 502 while the client still has megabytes to send, and node:http closes the
// connection after it. The request body is left paused where the upload stopped, so bytes the
// proxy has not read turn that close into a reset, and a client that keeps writing may see it
// (EPIPE) before it reads the 502 (no lingering close or discard of the unread body: core
// behaviour, not this adapter's). So these two send one chunk and then wait, with the upload
// unfinished; the streaming variant below checks the rest.
const STALL = CHUNK

t.test('reset right after the netstring, no response byte: 502 ERR_BACKEND_RESET', async (t) => {
  const fake = await resetFake(t, (s) => s.resetAndDestroy())
  const out = await upload(t, fake.address, fake.sawHead, STALL)
  t.equal(out.status, 502)
  t.match(out.body, RESET_CODE)
  t.ok(out.complete, 'the 502 page itself is complete')
  t.equal(out.event.status, 502)
  t.equal(out.event.error, RESET_CODE)
  t.ok(out.uploaded < UPLOAD, 'the reset came while the client was still uploading')
})

t.test('a partial response head, then a reset: 502, never a response', async (t) => {
  const fake = await resetFake(t, (s) => { s.write('Status: 200 OK\r\nContent-Ty', () => s.resetAndDestroy()) })
  const out = await upload(t, fake.address, fake.sawHead, STALL)
  t.equal(out.status, 502)
  // Which the proxy sees first is the kernel's race: the reset (ERR_BACKEND_RESET), or the head's
  // bytes and then an end (a cut head: ERR_BAD_RESPONSE; CI saw it once in three runs).
  const code = /ERR_BACKEND_RESET|ERR_BAD_RESPONSE/
  t.match(out.body, code)
  t.equal(out.event.status, 502)
  t.match(out.event.error, code)
  t.ok(out.uploaded < UPLOAD)
})

t.test('reset while the upload streams (the reset may surface on the upload write): never a success', async (t) => {
  for (const bytes of ['', 'Status: 200 OK\r\nContent-Ty']) {
    const fake = await resetFake(t, (s) => { s.write(bytes, () => s.resetAndDestroy()) })
    const out = await upload(t, fake.address, fake.sawHead)
    t.equal(out.event.status, 502)
    t.equal(out.event.error, RESET_CODE, 'request:end records the reset')
    // The 502 page, or the connection closed under the still-writing client (see STALL).
    t.ok(out.status === 502 || (out.status === 0 && !out.complete), `client saw ${out.status} ${out.body.split('\n')[0]}`)
    if (out.status === 502) t.match(out.body, RESET_CODE)
  }
})

t.test('head and part of a close-delimited body, then a reset: the client connection is cut', async (t) => {
  const fake = await resetFake(t, (s, clientSawHead) => {
    s.write('Status: 200 OK\r\nContent-Type: text/plain\r\n\r\npartial-')
    // Only once the client has the head (the response is streaming), so the cut comes after it.
    void clientSawHead.then(() => s.resetAndDestroy())
  })
  const out = await upload(t, fake.address, fake.sawHead)
  t.equal(out.status, 200)
  t.notOk(out.complete, 'no clean end (no final chunk): the response is known to be truncated')
  t.equal(out.event.error, RESET_CODE, 'request:end records the reset')
  t.equal(out.event.status, 200)
  t.ok(out.uploaded < UPLOAD, 'the reset came while the client was still uploading')
})

t.test('head with Content-Length and part of the body, then a reset: cut, and the error is the reset', async (t) => {
  const fake = await resetFake(t, (s, clientSawHead) => {
    s.write('Status: 200 OK\r\nContent-Length: 100\r\n\r\npartial-')
    void clientSawHead.then(() => s.resetAndDestroy())
  })
  const out = await upload(t, fake.address, fake.sawHead)
  t.equal(out.status, 200)
  t.notOk(out.complete)
  t.equal(out.event.error, RESET_CODE)
  t.ok(out.uploaded < UPLOAD)
})

// In the two FIN cases the fake drains what the client still uploads after answering: a socket
// closed with unread bytes sends a reset, which can destroy the answer before the proxy reads it
// (a kernel race, documented in docs/protocols/scgi.md; CI hit it once). The app never reads it.
t.test('an early complete 413 and a clean close (FIN), body never read: delivered intact', async (t) => {
  const fake = await resetFake(t, (s) => { s.end('Status: 413 Payload Too Large\r\nContent-Type: text/plain\r\n\r\ntoo big, not read'); s.resume() })
  const out = await upload(t, fake.address, fake.sawHead)
  t.equal(out.status, 413)
  t.equal(out.body, 'too big, not read')
  t.ok(out.complete, 'ended cleanly')
  t.equal(out.event.status, 413)
  t.equal(out.event.error, null)
  t.ok(out.uploaded < UPLOAD, 'answered while the client was still uploading')
})

t.test('an early 413 with Content-Length, then a FIN: delivered intact', async (t) => {
  const fake = await resetFake(t, (s) => { s.end('Status: 413 Payload Too Large\r\nContent-Length: 7\r\n\r\ntoo big'); s.resume() })
  const out = await upload(t, fake.address, fake.sawHead)
  t.equal(out.status, 413)
  t.equal(out.body, 'too big')
  t.ok(out.complete)
  t.equal(out.event.error, null)
})

/**
 * The adapter alone, as the core drives it: an 8 MiB body fed without pause (one 64 KiB chunk per
 * turn) while `cut` resets the backend once the head is in, so the reset may surface on a read or
 * on the upload's own write. Either way: one ending, onError, never onEnd.
 */
async function adapterUpload (t: Test, endpoint: Endpoint, cut: (rec: Recorded) => Promise<void>): Promise<Recorded> {
  const client = scgiAdapter.createClient(endpoint, scgiAdapter.parseOptions(undefined, '/o'), testContext())
  const { handler, rec, finished } = recorder()
  const src = new PassThrough()
  client.dispatch(makeExchange({ method: 'POST', body: src, contentLength: UPLOAD }), handler)
  let done = false
  void finished.then(() => { done = true })
  let sent = 0
  const next = (): void => {
    if (done || sent >= UPLOAD) return
    sent += CHUNK
    src.write(Buffer.alloc(CHUNK, 0x62), () => setImmediate(next))
  }
  next()
  await cut(rec)
  await finished
  src.destroy()
  await client.close()
  t.equal(client.inflight, 0)
  t.ok(sent < UPLOAD, 'reset during the upload')
  return rec
}

t.test('adapter, TCP: reset after the head while the body streams: onError ERR_BACKEND_RESET, not onEnd', async (t) => {
  let server: Socket | null = null
  const fake = await resetFake(t, (s) => { server = s; s.write('Status: 200 OK\r\nContent-Type: text/plain\r\n\r\npartial-') })
  const [host, port] = fake.address.split(':')
  const rec = await adapterUpload(t, tcpEndpoint(Number(port), host), async (rec) => {
    // Reset only once the head went to the handler: the response is under way.
    if (!await waitFor(() => rec.body.length > 0)) throw new Error('no response head')
    ;(server as unknown as Socket).resetAndDestroy()
  })
  t.equal(rec.status, 200)
  t.equal(rec.body.toString(), 'partial-')
  t.same(rec.calls.filter((c) => c !== 'data'), ['head', 'error'], 'exactly one ending, an error')
  t.equal(rec.error?.code, RESET_CODE)
  t.equal(rec.error?.phase, 'body')
  t.equal(rec.error?.backend, fake.address)
})

t.test('adapter, unix socket: the server closes with the upload unread (a reset there): onError', async (t) => {
  let server: Socket | null = null
  const fake = await fakeScgi((_req, s) => {
    s.pause() // the upload stays unread in the server's queue: its close resets the connection
    server = s
    s.write('Status: 200 OK\r\nContent-Type: text/plain\r\n\r\npartial-')
  }, { waitForBody: false })
  t.teardown(() => fake.close())
  const rec = await adapterUpload(t, unixEndpoint(fake.path), async (rec) => {
    if (!await waitFor(() => rec.body.length > 0)) throw new Error('no response head')
    ;(server as unknown as Socket).destroy()
  })
  t.equal(rec.status, 200)
  t.same(rec.calls.filter((c) => c !== 'data'), ['head', 'error'], 'exactly one ending, an error')
  t.equal(rec.error?.code, RESET_CODE)
})

t.test('no leaked fd or child', (t) => assertNoLeaks(t, baseline))
