/**
 * The live view and clients that stop reading: a client that completes the WebSocket handshake and
 * never reads again is cut after `stallMs` (it used to keep its socket and up to `maxBuffered`
 * bytes for ever), and `close()` still ends every client, stuck ones included, and resolves.
 */
import t from 'tap'
import type { Server } from 'node:http'
import { connect, type Socket } from 'node:net'
import { WebSocket } from 'ws'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { liveClient, statusRig } from './harness.js'

/** Many routes make every snapshot large, so a client that stops reading falls behind fast. */
const bigConfig = {
  routes: Array.from({ length: 300 }, (_, i) => ({ name: `route${i}`, match: { prefix: `/r${i}/` }, protocol: 'http' as const, backends: ['127.0.0.1:1'] })),
}

/** Open `<path>/live` over raw TCP, read the 101, then stop reading for good. */
async function stuckClient (t: { teardown (fn: () => void): void }, port: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  socket.on('error', () => {})
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  socket.write('GET /server-status/live HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  const head = await new Promise<string>((resolve) => socket.once('data', (c: Buffer) => resolve(c.toString('latin1'))))
  if (!head.startsWith('HTTP/1.1 101')) throw new Error(`no upgrade: ${head.slice(0, 40)}`)
  socket.pause() // never reads again (so it cannot see the server's FIN either: count on the server)
  return socket
}

/** Connections the server still holds. */
function held (server: Server): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((err, n) => { if (err) reject(err); else resolve(n) }))
}

t.test('a client that never reads is disconnected after stallMs; readers keep their feed', async (t) => {
  guardLeaks(t)
  const rig = await statusRig(t, bigConfig, { live: { intervalMs: 5, maxBuffered: 64 * 1024, stallMs: 300 } })
  const reader = await liveClient(`ws://127.0.0.1:${rig.port}/server-status/live`)
  t.teardown(() => reader.close())
  for (let i = 0; i < 3; i++) await stuckClient(t, rig.port)
  t.equal(await held(rig.server), 4, 'a reader and three stuck clients connected')
  t.ok(await waitFor(async () => await held(rig.server) === 1, 20_000), 'every stuck client was disconnected by the server')
  const before = reader.messages.length
  const m = await reader.next((x) => x.seq > 0 && reader.messages.length > before + 2)
  t.ok(m.seq > 0, 'a client that reads keeps receiving snapshots')
  t.equal(reader.ws.readyState, reader.ws.OPEN, 'and stays connected')
})

t.test('close() ends stuck clients too, and resolves', async (t) => {
  guardLeaks(t)
  const rig = await statusRig(t, bigConfig, { live: { intervalMs: 5, maxBuffered: 64 * 1024, stallMs: 600_000 } })
  await stuckClient(t, rig.port)
  const reader = await liveClient(`ws://127.0.0.1:${rig.port}/server-status/live`)
  const readerGone = new Promise<number>((resolve) => reader.ws.once('close', (code) => resolve(code)))
  await reader.next((x) => x.seq > 20) // the stuck client has fallen behind by now
  const started = Date.now()
  await rig.status.close()
  t.ok(Date.now() - started < 5000, `close() resolved in ${Date.now() - started} ms`)
  t.ok(await waitFor(async () => await held(rig.server) === 0, 5000), 'the stuck client was cut')
  t.equal(await readerGone, 1001, 'the reading client got 1001')
})

t.test('maxClients: one client over the cap gets 503 with Retry-After; a freed place is taken again', async (t) => {
  guardLeaks(t)
  const rig = await statusRig(t, { routes: [{ protocol: 'http' as const, backends: ['127.0.0.1:1'] }] }, { live: { maxClients: 2 } })
  const url = `ws://127.0.0.1:${rig.port}/server-status/live`
  const a = await liveClient(url)
  const b = await liveClient(url)
  t.teardown(() => { a.ws.terminate(); b.ws.terminate() })
  const refused = await new Promise<{ status: number, retryAfter: string | undefined }>((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.once('unexpected-response', (_req, res) => { resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] }); res.resume(); ws.terminate() })
    ws.once('open', () => { ws.terminate(); reject(new Error('a third client was let in')) })
    ws.once('error', () => {})
  })
  t.same(refused, { status: 503, retryAfter: '5' }, 'the third client: 503, retry in 5 s')
  const aGone = new Promise((resolve) => a.ws.once('close', resolve))
  a.ws.close()
  await aGone
  t.ok(await waitFor(async () => await held(rig.server) === 1, 5000), 'the server let go of the first client')
  const c = await liveClient(url)
  t.teardown(() => c.ws.terminate())
  t.ok((await c.next()).seq >= 0, 'a place freed is taken by the next client')
})
