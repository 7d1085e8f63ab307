/**
 * The core's connector: backend sockets carry a whole 64 KiB read (and a few more) in their
 * readable buffer, so a reader in paused mode (undici) does not stop and restart the handle
 * around every large read.
 */
import t, { type Test } from 'tap'
import { once } from 'node:events'
import { createServer, type Server, type Socket } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BACKEND_READ_HIGH_WATER_MARK, connectEndpoint } from '../../src/core/connect.js'
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
