/**
 * A plain answer to an Upgrade request (src/core/upgrade.ts, UpgradeBridge in
 * src/protocols/http/client.ts), framed by the close of the connection, whose backend ends while
 * the proxy holds it paused for a client that does not read: the backend's FIN comes with undici's
 * parser paused on the body's last bytes. undici then flushes the parser with an empty body chunk
 * (resumeAtEnd), and that chunk must never pause it again: undici's 'end' listener asserts that the
 * parser runs (an AssertionError thrown from a socket event would end the proxy process). The
 * client, reading at last, gets the whole answer and a clean end.
 *
 * The backend is raw TCP (it sends the body 16 KiB at a time, the next piece only once the proxy
 * passed the previous one on, so the piece that makes the proxy pause is the last one: no real peer
 * can be timed like that); the client is raw TCP, since not reading is its fault.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

const UPGRADE = 'GET /u HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'
/** The proxy pauses the backend past this many bytes queued for the client (upgrade.ts MAX_BUFFERED). */
const MAX_BUFFERED = 256 * 1024
const PIECE = 16 * 1024
/** Bounds the loop: far more than loopback's socket buffers take (a few MiB). */
const MAX_BODY = 64 * 1024 * 1024

t.test('a close-framed plain answer whose FIN finds the proxy paused for its client: no crash, no hang, every byte', async (t) => {
  let backendSock: Socket | null = null
  const be = await rawBackend(t, (s) => {
    s.once('data', () => { backendSock = s; s.resume() })
  })
  const { port, proxy, server } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  let front: Socket | null = null
  server.on('upgrade', (_req, s: Socket) => { front = s })

  const client = connect({ host: '127.0.0.1', port })
  client.on('error', () => {})
  t.teardown(() => { client.destroy() })
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
  client.pause()
  client.write(UPGRADE)
  t.ok(await waitFor(() => backendSock !== null && front !== null, 5000), 'the backend got the Upgrade request')
  const b = backendSock as unknown as Socket
  const f = front as unknown as Socket

  const head = 'HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n'
  b.write(head)
  // The proxy writes its own head (its length unknown here): the body's bytes are counted from it.
  t.ok(await waitFor(() => f.bytesWritten > 0, 5000), 'the proxy wrote the head')
  const base = f.bytesWritten
  let sent = 0
  const piece = Buffer.alloc(PIECE, 'y')
  while (f.writableLength < MAX_BUFFERED && sent < MAX_BODY) {
    b.write(piece)
    sent += PIECE
    // bytesWritten counts what the proxy handed to the socket, queued bytes included.
    if (!await waitFor(() => f.bytesWritten - base >= sent, 5000)) break
  }
  t.ok(f.writableLength >= MAX_BUFFERED, `the proxy queued ${f.writableLength} bytes for the client after ${sent}: it paused the backend on the last piece`)
  t.equal(f.bytesWritten - base, sent, 'every piece sent went through (nothing held in the backend connection)')
  b.end()

  // The client reads at last: the whole answer, then the proxy's FIN.
  let got = 0
  let text = ''
  let fin = false
  client.on('data', (d: Buffer) => { got += d.length; if (text.length < 200) text += d.toString('latin1', 0, Math.min(d.length, 200)) })
  client.on('end', () => { fin = true; client.end() })
  client.resume()
  t.ok(await waitFor(() => fin, 20_000), 'the client got the FIN: the answer ended')
  await closed
  t.match(text, /^HTTP\/1\.1 200 OK\r\n/)
  const headEnd = text.indexOf('\r\n\r\n') + 4
  t.equal(got - headEnd, sent, `all ${sent} body bytes reached the client`)
  t.ok(await waitFor(() => ends.length === 1, 5000), 'request:end')
  t.match(ends[0], { status: 200, error: null, bytesOut: sent })
  t.equal(proxy.routes[0].admission.active, 0, 'the slot is free')
})
