/**
 * HTTP adapter: a backend that resets the connection (RST) while the client's body is still being
 * uploaded is never a clean end. undici itself treats an ECONNRESET after the status line of a
 * response framed by the close of the connection as the end of that response (a macOS
 * workaround); the adapter turns that into ERR_BACKEND_RESET: the client connection is cut and
 * `request:end` carries the code. An early complete answer followed by a clean close (FIN) is
 * still delivered intact.
 *
 * Raw TCP fake backend: a reset cannot be produced on demand by a real server.
 */
import t from 'tap'
import { request } from 'node:http'
import type { Socket } from 'node:net'
import type { RequestEndEvent } from '../../src/index.js'
import { waitFor } from '../helpers/leaks.js'
import { proxyServer, rawBackend } from '../helpers/servers.js'
import { assertNoLeaks, leakBaseline } from '../cgi-shared/leak-check.js'

const baseline = leakBaseline()

const UPLOAD = 8 << 20
const CHUNK = 64 << 10

interface Tap { teardown (fn: () => void | Promise<void>): void }

interface Outcome { status: number, body: string, complete: boolean, event: RequestEndEvent, uploaded: number }

/**
 * An HTTP fake that runs `script` once the request head is in (the body is never read), and a
 * client that POSTs 8 MiB through the proxy: one chunk, then it waits with its upload unfinished
 * (a slow client; see test/scgi/reset-during-upload.test.ts for why it does not keep writing).
 * `clientSawHead` resolves when the client got the response head.
 */
async function run (t: Tap, script: (s: Socket, clientSawHead: Promise<void>) => void): Promise<Outcome> {
  let sawHead!: () => void
  const clientSawHead = new Promise<void>((resolve) => { sawHead = resolve })
  const fake = await rawBackend(t, (s) => {
    let buf = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk])
      if (buf.indexOf('\r\n\r\n') === -1) return
      s.off('data', onData)
      s.pause()
      script(s, clientSawHead)
    }
    s.on('data', onData)
  })
  const { proxy, port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [fake.address] }] })
  const events: RequestEndEvent[] = []
  proxy.events.on('request:end', (e: RequestEndEvent) => events.push(e))
  let uploaded = 0
  const client = await new Promise<Omit<Outcome, 'event' | 'uploaded'>>((resolve) => {
    let gotResponse = false
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/up', agent: false, headers: { 'content-length': String(UPLOAD) } }, (res) => {
      gotResponse = true
      sawHead()
      let body = ''
      res.setEncoding('latin1')
      res.on('data', (c: string) => { body += c })
      res.on('error', () => {})
      res.on('close', () => resolve({ status: res.statusCode ?? 0, body, complete: res.complete }))
    })
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (!gotResponse) resolve({ status: 0, body: `request error ${err.code ?? err.message}`, complete: false })
    })
    uploaded = CHUNK
    req.write(Buffer.alloc(CHUNK, 0x61))
  })
  if (!await waitFor(() => events.length > 0, 5000)) throw new Error('no request:end event')
  return { ...client, event: events[0], uploaded }
}

const afterHead = (bytes: string) => (s: Socket, clientSawHead: Promise<void>): void => {
  s.write(bytes)
  void clientSawHead.then(() => s.resetAndDestroy())
}

t.test('a reset before any response byte: 502 ERR_BACKEND_RESET', async (t) => {
  const out = await run(t, (s) => s.resetAndDestroy())
  t.equal(out.status, 502)
  t.match(out.body, 'ERR_BACKEND_RESET')
  t.equal(out.event.status, 502)
  t.equal(out.event.error, 'ERR_BACKEND_RESET')
})

for (const [name, head] of [
  ['Connection: close', 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npartial-'],
  ['no Content-Length, not chunked', 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial-'],
] as const) {
  t.test(`a close-delimited body (${name}) cut by a reset: the client connection is cut, not ended`, async (t) => {
    const out = await run(t, afterHead(head))
    t.equal(out.status, 200)
    t.equal(out.body, 'partial-')
    t.notOk(out.complete, 'no clean end')
    t.equal(out.event.error, 'ERR_BACKEND_RESET', 'request:end records the reset')
    t.ok(out.uploaded < UPLOAD, 'during the upload')
  })
}

t.test('Content-Length with Connection: close, cut by a reset: the code is the reset', async (t) => {
  const out = await run(t, afterHead('HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\npartial-'))
  t.notOk(out.complete)
  t.equal(out.event.error, 'ERR_BACKEND_RESET')
})

t.test('an early complete 413 then a clean close (FIN), body unread: delivered intact', async (t) => {
  for (const head of ['Content-Length: 7\r\nConnection: close\r\n', 'Connection: close\r\n']) {
    const out = await run(t, (s) => { s.end(`HTTP/1.1 413 Payload Too Large\r\n${head}\r\ntoo big`) })
    t.equal(out.status, 413)
    t.equal(out.body, 'too big')
    t.ok(out.complete, 'ended cleanly')
    t.equal(out.event.status, 413)
    t.equal(out.event.error, null)
  }
})

t.test('no leaked fd or child', (t) => assertNoLeaks(t, baseline))
