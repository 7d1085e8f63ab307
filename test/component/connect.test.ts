/**
 * The core's connector: backend sockets carry a whole 64 KiB read (and a few more) in their
 * readable buffer, so a reader in paused mode (undici) does not stop and restart the handle
 * around every large read.
 */
import t, { type Test } from 'tap'
import { once } from 'node:events'
import { createServer, Socket as NetSocket, type Server, type Socket } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BACKEND_READ_HIGH_WATER_MARK, SOCKET_OPTIONS, connectEndpoint } from '../../src/core/connect.js'
import { parseEndpoint } from '../../src/core/endpoint.js'
import { guardLeaks } from '../helpers/leaks.js'

const CHUNK = Buffer.alloc(64 * 1024, 7)

async function sender (t: Test, listen: (s: Server) => void): Promise<Server> {
  const server = createServer((s) => { s.end(Buffer.concat([CHUNK, CHUNK])) })
  listen(server)
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return server
}

/** Read in paused mode, as undici does; true if push() never told the handle to stop. */
async function readsWithoutStopping (socket: Socket): Promise<{ bytes: number, stopped: boolean }> {
  let bytes = 0
  let stopped = false
  socket.on('readable', () => {
    // Two 64 KiB reads can both be queued before this runs: still below the mark.
    if (socket.readableLength >= socket.readableHighWaterMark) stopped = true
    for (let c: Buffer | null = socket.read(); c !== null; c = socket.read()) bytes += c.length
  })
  await once(socket, 'end')
  socket.destroy()
  return { bytes, stopped }
}

t.test('backend sockets hold 64 KiB reads without stopping the handle', async (t) => {
  guardLeaks(t)
  t.ok(BACKEND_READ_HIGH_WATER_MARK >= 2 * CHUNK.length, 'the mark is above two 64 KiB reads')
  const tcp = await sender(t, (s) => s.listen(0, '127.0.0.1'))
  const port = (tcp.address() as { port: number }).port
  const dir = mkdtempSync(join(tmpdir(), 'pc-connect-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  await sender(t, (s) => s.listen(join(dir, 's.sock')))
  for (const addr of [`127.0.0.1:${port}`, `unix:${join(dir, 's.sock')}`]) {
    const socket = await connectEndpoint(parseEndpoint(addr), 2000)
    t.equal(socket.readableHighWaterMark, BACKEND_READ_HIGH_WATER_MARK, `${addr}: high-water mark`)
    t.same(await readsWithoutStopping(socket), { bytes: 2 * CHUNK.length, stopped: false }, `${addr}: every byte, no stop`)
  }
})

t.test('the socket options already hold every property net.Socket adds to its copy of them', async (t) => {
  // net.Socket's constructor copies its options and assigns some properties on the copy. Adding a
  // property to a spread copy is Node 20's slow path (connect.ts); assigning one it has is not.
  const source = NetSocket.toString()
  t.match(source, /options = \{ \.\.\.options \}/, 'the constructor still copies its options with a spread')
  const assigned = [...source.matchAll(/\boptions\.(\w+) =[^=]/g)].map((m) => m[1] as string)
  t.ok(assigned.length >= 4, `the constructor assigns ${assigned.join(', ')}`)
  // keepAliveInitialDelay is clamped on the caller's object before the copy, only when given.
  for (const name of new Set(assigned)) {
    if (name === 'keepAliveInitialDelay') continue
    t.ok(Object.hasOwn(SOCKET_OPTIONS, name), `SOCKET_OPTIONS has ${name}`)
  }
  // The values are the ones the constructor forces, so passing them changes nothing.
  for (const m of source.matchAll(/\boptions\.(\w+) = (true|false);/g)) {
    t.equal((SOCKET_OPTIONS as unknown as Record<string, unknown>)[m[1] as string], m[2] === 'true', `${m[1]} is ${m[2]}`)
  }
  t.equal(SOCKET_OPTIONS.allowHalfOpen, false, 'backend sockets are not half-open (the constructor default)')
})
