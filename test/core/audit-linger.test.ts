/**
 * Unread request bodies after an early answer (audit 2026-12, second pass): the bounds of
 * discardBody / lingerOnClose (src/core/body-pump.ts) hold against a client that trickles, one
 * that goes silent and one that floods, kept alive or closing; a second upload answered early on
 * a kept-alive connection lingers too (the socket's lingering destroySoon, installed for the
 * first request, judged by that one, long complete: the second client's upload met a reset after
 * its 405, EPIPE); and a request the proxy refuses before any exchange (no route) is not read
 * without bound (node:http read 200 MiB of it after the 404; needs a fix in src/core/runtime.ts).
 *
 * The bound tests run discardBody and lingerOnClose as the exchange does (lingerOnClose before the
 * response ends, discardBody on the next turn) on a plain node:http server with short bounds, so
 * the time bound is checked in well under a second instead of the proxy's 30 s.
 */
import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { discardBody, lingerOnClose } from '../../src/core/body-pump.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { listen, proxyServer } from '../helpers/servers.js'
import { Raw } from '../helpers/raw-client.js'
import { tempDir } from '../cgi/harness.js'

guardLeaks(t, { timeoutMs: 15_000 })

const MAX_MS = 300
const MAX_BYTES = 256 * 1024

/** A server answering 413 at once to every request, as the exchange does with its unread body. */
async function earlyAnswer (t: Test): Promise<{ port: number, open: () => Promise<number> }> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(413, { 'content-length': 2, ...(req.headers.connection === 'close' ? { connection: 'close' } : {}) })
    lingerOnClose(req)
    res.end('no')
    setImmediate(() => discardBody(req, MAX_BYTES, MAX_MS))
  })
  const port = await listen(server, t)
  const open = (): Promise<number> => new Promise((resolve, reject) => server.getConnections((err, n) => err !== null ? reject(err) : resolve(n)))
  return { port, open }
}

interface Client { sock: Socket, raw: () => string, closedAt: () => number, endedAt: () => number, answeredAt: () => number }

function upload (port: number, close: boolean): Client {
  const sock = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  let raw = ''
  let closedAt = 0
  let answeredAt = 0
  let endedAt = 0
  sock.on('error', () => {})
  sock.on('end', () => { endedAt = Date.now() })
  sock.on('data', (d: Buffer) => { raw += d.toString('latin1'); if (answeredAt === 0 && raw.includes('\r\n\r\nno')) answeredAt = Date.now() })
  sock.on('close', () => { closedAt = Date.now() })
  sock.write(`POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100000000\r\n${close ? 'Connection: close\r\n' : ''}\r\n`)
  return { sock, raw: () => raw, closedAt: () => closedAt, endedAt: () => endedAt, answeredAt: () => answeredAt }
}

for (const close of [false, true]) {
  const kind = close ? 'Connection: close (lingering close)' : 'keep-alive'
  t.test(`${kind}: a client trickling its body after the answer is cut at the time bound`, async (t) => {
    const s = await earlyAnswer(t)
    const c = upload(s.port, close)
    t.teardown(() => { c.sock.destroy() })
    t.ok(await waitFor(() => c.answeredAt() !== 0, 10_000), 'answered')
    const trickle = setInterval(() => { if (!c.sock.destroyed) c.sock.write('x') }, 10)
    t.teardown(() => clearInterval(trickle))
    t.ok(await waitFor(() => c.closedAt() !== 0, MAX_MS * 10), 'the proxy side closed the connection')
    clearInterval(trickle)
    const ms = c.closedAt() - c.answeredAt()
    t.ok(ms < MAX_MS * 10, `within the time bound (${ms} ms after the answer, bound ${MAX_MS} ms)`)
    t.ok(await waitFor(async () => await s.open() === 0, 5000), 'no connection left on the server')
  })

  t.test(`${kind}: a client that goes silent after the answer is cut at the time bound`, async (t) => {
    const s = await earlyAnswer(t)
    const c = upload(s.port, close)
    t.teardown(() => { c.sock.destroy() })
    t.ok(await waitFor(() => c.answeredAt() !== 0, 10_000), 'answered')
    // The client is half-open (allowHalfOpen, as curl): the server's close is a FIN it sees as 'end'.
    t.ok(await waitFor(async () => await s.open() === 0, MAX_MS * 10), 'the server closed the connection within the time bound')
    t.ok(await waitFor(() => c.endedAt() !== 0 || c.closedAt() !== 0, 5000), 'and the client saw it')
  })

  t.test(`${kind}: a client flooding its body after the answer is cut at the byte bound`, async (t) => {
    const s = await earlyAnswer(t)
    const c = upload(s.port, close)
    t.teardown(() => { c.sock.destroy() })
    t.ok(await waitFor(() => c.answeredAt() !== 0, 10_000), 'answered')
    const piece = Buffer.alloc(64 * 1024, 0x61)
    let sent = 0
    // Each write waits for the kernel to take it; the loop ends when the server closes.
    while (c.closedAt() === 0 && !c.sock.destroyed && sent < 64 * 1024 * 1024) {
      await new Promise<void>((resolve) => { c.sock.write(piece, () => resolve()) })
      sent += piece.length
    }
    t.ok(await waitFor(() => c.closedAt() !== 0, 5000), `closed (${sent >> 10} KiB written)`)
    t.ok(sent < 32 * 1024 * 1024, `well before 32 MiB: the byte bound (${MAX_BYTES >> 10} KiB) plus socket buffers (${sent >> 10} KiB written)`)
    t.ok(await waitFor(async () => await s.open() === 0, 5000), 'no connection left on the server')
  })
}

t.test('a keep-alive client that sends its whole body after the answer goes on with its next request', async (t) => {
  const s = await earlyAnswer(t)
  const c = connect({ host: '127.0.0.1', port: s.port })
  let raw = ''
  c.on('data', (d: Buffer) => { raw += d.toString('latin1') })
  c.on('error', () => {})
  t.teardown(() => { c.destroy() })
  c.write('POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n')
  t.ok(await waitFor(() => raw.includes('\r\n\r\nno'), 10_000), 'the first answer')
  c.write(Buffer.alloc(100000, 0x62))
  c.write('GET /b HTTP/1.1\r\nHost: h\r\n\r\n')
  t.ok(await waitFor(() => raw.split('HTTP/1.1 413').length === 3, 10_000), 'the second request on the connection was answered', { raw: raw.slice(0, 400) })
})

/**
 * Through the proxy, on ONE connection: a first upload answered early (a static route's 405) while
 * the connection stays open, its body sent after the answer (read and dropped); then a second
 * upload with `Connection: close`, answered early too, whose client goes on sending after the
 * proxy's FIN. The second answer must linger like the first connection's would: the override of
 * the socket's destroySoon installed for the first request kept judging by that (complete) request,
 * and the second request's lingerOnClose returned early, so the socket closed at the FIN and the
 * rest of the second upload met a reset.
 */
t.test('a second early-answered upload on a kept-alive connection lingers too', async (t) => {
  const root = tempDir(t)
  writeFileSync(join(root, 'f.txt'), 'F')
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const sock = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  let raw = ''
  let fin = false
  let error: NodeJS.ErrnoException | null = null
  sock.setEncoding('latin1')
  sock.on('data', (c: string) => { raw += c })
  sock.on('end', () => { fin = true })
  sock.on('error', (err: NodeJS.ErrnoException) => { error = err })
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()))
  t.teardown(() => { sock.destroy() })
  const send = (n: number, byte: number): Promise<void> => new Promise((resolve) => {
    if (sock.destroyed) { resolve(); return }
    sock.write(Buffer.alloc(n, byte), (err) => { if (err != null) error ??= err; resolve() })
  })
  // 1: answered before its body; the body follows the answer and is dropped; the connection stays.
  sock.write('POST /f.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n')
  t.ok(await waitFor(() => /^HTTP\/1\.1 405 [^]*\r\n\r\n405 Method Not Allowed\nERR_METHOD_NOT_ALLOWED\n$/.test(raw), 10_000), 'the first answer', { raw })
  t.notMatch(raw, /\r\nconnection: close\r\n/i, 'kept alive')
  await send(100000, 0x61)
  // 2: Connection: close, 4 MiB announced, 64 KiB sent; answered, then FIN.
  const BODY = 4 << 20
  const FIRST = 64 << 10
  sock.write(`POST /f.txt HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: ${BODY}\r\n\r\n`)
  await send(FIRST, 0x62)
  t.ok(await waitFor(() => fin, 10_000), 'the second answer and the proxy\'s FIN', { raw })
  t.equal(raw.split('HTTP/1.1 405').length, 3, 'two answers')
  for (let sent = FIRST; sent < BODY && error === null; sent += 256 << 10) await send(Math.min(256 << 10, BODY - sent), 0x63)
  sock.end()
  await closed
  t.equal(error, null, 'no reset (EPIPE/ECONNRESET) while the client finished its second upload')
})

t.test('a POST no route takes (404 before any exchange) is not read without bound', async (t) => {
  const root = tempDir(t)
  writeFileSync(join(root, 'f.txt'), 'F')
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root, match: { prefix: '/app/' } }] })
  const c = new Raw(port, 'POST /elsewhere HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000\r\n\r\n')
  t.teardown(() => { c.socket.destroy() })
  t.ok(await waitFor(() => c.status() !== 0, 10_000), 'answered before the body is sent')
  t.equal(c.status(), 404)
  const sent = await c.flood()
  t.ok(await waitFor(() => c.closed, 10_000), `the proxy closed the connection (after ${sent >> 20} MiB were written)`)
  t.ok(sent <= 64 * 1024 * 1024, `at most the discard cap (16 MiB) plus socket buffers was taken (${sent >> 20} MiB)`)
})
