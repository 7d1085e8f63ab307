/**
 * Lingering close (nginx `lingering_close`): a response that ends its connection (the client sent
 * `Connection: close`) while the client is still uploading a body nobody reads. node:http closed
 * the socket right after the FIN; the client's next bytes then met a reset, and a reset makes the
 * client's kernel drop what it has not read yet — the response (an SCGI test saw EPIPE instead of
 * its 413 under load, 1 run in 40). The proxy now keeps reading (and dropping) after its FIN
 * until the body ended or the client closed, within the discard bounds (16 MiB, 30 s).
 *
 * Deterministic here: the client reads the whole response and the proxy's FIN first, then sends
 * the rest of its body. Without lingering every byte of it is answered with a reset.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { proxyServer } from '../helpers/servers.js'
import { tempDir } from '../cgi/harness.js'

const BODY = 4 << 20
const FIRST = 64 << 10

interface Client { sock: Socket, response: () => string, gotFin: () => boolean, error: () => NodeJS.ErrnoException | null, closed: Promise<void> }

/** POST with `Connection: close` and a 4 MiB Content-Length, sending only the first 64 KiB. */
function startUpload (port: number, path: string): Client {
  // allowHalfOpen: a client still uploading goes on sending after the server's FIN, as curl does.
  const sock = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  let response = ''
  let fin = false
  let error: NodeJS.ErrnoException | null = null
  sock.setEncoding('latin1')
  sock.on('data', (c: string) => { response += c })
  sock.on('end', () => { fin = true })
  sock.on('error', (err: NodeJS.ErrnoException) => { error = err })
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()))
  sock.write(`POST ${path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: ${BODY}\r\n\r\n`)
  sock.write(Buffer.alloc(FIRST, 0x61))
  return { sock, response: () => response, gotFin: () => fin, error: () => error, closed }
}

/** Write `n` more body bytes and wait until they are handed to the kernel (or the write fails). */
function send (sock: Socket, n: number): Promise<void> {
  return new Promise((resolve) => {
    if (sock.destroyed) { resolve(); return }
    sock.write(Buffer.alloc(n, 0x62), (err) => { if (err != null) sock.emit('error', err); resolve() })
  })
}

async function staticProxy (t: Tap): Promise<number> {
  const root = tempDir(t)
  writeFileSync(join(root, 'f.txt'), 'F')
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  return port
}
type Tap = Parameters<typeof tempDir>[0]

t.test('after an early answer and its FIN, the rest of the upload is read, not reset', async (t) => {
  guardLeaks(t)
  const port = await staticProxy(t)
  const c = startUpload(port, '/f.txt')
  t.ok(await waitFor(() => c.gotFin(), 10_000), 'the proxy answered and sent its FIN while the upload was unfinished')
  t.match(c.response(), /^HTTP\/1\.1 405 /, 'the early answer')
  t.match(c.response(), /\r\nConnection: close\r\n/i)
  // The rest of the body, in pieces: each would meet a reset from a closed socket.
  for (let sent = FIRST; sent < BODY; sent += 256 << 10) await send(c.sock, Math.min(256 << 10, BODY - sent))
  c.sock.end()
  await c.closed
  t.equal(c.error(), null, 'no reset (EPIPE/ECONNRESET) while the client finished its upload')
})

t.test('a client that gives up its upload after the answer: both sides close cleanly', async (t) => {
  guardLeaks(t)
  const port = await staticProxy(t)
  const c = startUpload(port, '/f.txt')
  t.ok(await waitFor(() => c.gotFin(), 10_000), 'answered')
  await send(c.sock, 128 << 10)
  c.sock.end() // 4 MiB announced, ~200 KiB sent
  await c.closed
  t.equal(c.error(), null, 'a clean close on both sides')
  t.match(c.response(), /^HTTP\/1\.1 405 /)
})

t.test('a client that neither sends nor closes: the proxy keeps reading after its FIN until the client ends', async (t) => {
  guardLeaks(t)
  const root = tempDir(t)
  writeFileSync(join(root, 'f.txt'), 'F')
  const { port, server } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const open = (): Promise<number> => new Promise((resolve, reject) => server.getConnections((err, n) => err !== null ? reject(err) : resolve(n)))
  const c = startUpload(port, '/f.txt')
  t.ok(await waitFor(() => c.gotFin(), 10_000), 'answered, FIN sent')
  t.match(c.response(), /\r\n\r\n405 Method Not Allowed\nERR_METHOD_NOT_ALLOWED\n$/, 'the whole answer arrived before the FIN')
  t.equal(await open(), 1, 'the proxy still holds the connection to read the rest (lingering), not closed at its FIN')
  c.sock.end()
  await c.closed
  t.ok(await waitFor(async () => await open() === 0, 5000), 'closed once the client ended its side')
  t.equal(c.error(), null)
})
