/**
 * A 64 KiB body and its head take two 64 KiB reads from the backend, and each read's bytes went to
 * the client in a syscall of their own. Large chunks now cork the client socket until the loop
 * iteration's I/O is done (ProxyRuntime.corkUntilImmediate): everything the adapter delivers
 * before then leaves in one write. Small chunks (a whole small response, a streamed event) are not
 * held. The adapter here delivers its second chunk on the next tick, as a second read does.
 */
import t, { type Test } from 'tap'
import { once } from 'node:events'
import { createServer, request, type Server } from 'node:http'
import type { Socket } from 'node:net'
import { createProxy, silentLogger } from '../../src/index.js'
import { scriptedAdapter } from '../helpers/adapters.js'
import { guardLeaks } from '../helpers/leaks.js'

/** Answers `/<first>/<second>`: a head, `first` bytes now and `second` bytes on the next tick. */
const twoReads = scriptedAdapter('two-reads', (ex, h, done) => {
  const [first = 0, second = 0] = ex.path.split('/').slice(1).map(Number)
  h.onHead(200, ['content-type', 'application/octet-stream', 'content-length', String(first + second)], { resume () {} })
  h.onData(Buffer.alloc(first, 1))
  process.nextTick(() => {
    h.onData(Buffer.alloc(second, 2))
    done()
    h.onEnd()
  })
})

interface Rig { port: number, writes: () => number, socket: () => Socket | null }

async function rig (t: Test): Promise<Rig> {
  const proxy = await createProxy({ adapters: [twoReads], routes: [{ protocol: 'two-reads', backends: ['127.0.0.1:9'] }], logger: silentLogger })
  const server: Server = createServer(proxy.handler)
  let writes = 0
  let last: Socket | null = null
  server.on('connection', (s: Socket) => {
    last = s
    // Count the stream's calls down to the handle: one per write or writev syscall batch.
    const w = s as unknown as { _write: (...a: unknown[]) => void, _writev: (...a: unknown[]) => void }
    const write = w._write.bind(s)
    const writev = w._writev.bind(s)
    w._write = (...a) => { writes++; write(...a) }
    w._writev = (...a) => { writes++; writev(...a) }
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await proxy.close()
  })
  return { port: (server.address() as { port: number }).port, writes: () => writes, socket: () => last }
}

async function get (port: number, path: string): Promise<Buffer> {
  const req = request({ host: '127.0.0.1', port, path, agent: false })
  req.end()
  const [res] = await once(req, 'response') as [import('node:http').IncomingMessage]
  const parts: Buffer[] = []
  for await (const c of res) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

t.test('a large body delivered in two reads reaches the client in one write', async (t) => {
  guardLeaks(t)
  const r = await rig(t)
  const body = await get(r.port, `/${64 * 1024}/200`)
  t.equal(body.length, 64 * 1024 + 200, 'every byte')
  t.ok(body.subarray(0, 64 * 1024).every((b) => b === 1) && body.subarray(64 * 1024).every((b) => b === 2), 'in order')
  t.equal(r.writes(), 1, 'head, both chunks and the end in one write')
  t.equal(r.socket()?.writableCorked ?? 0, 0, 'the socket is uncorked afterwards')
})

t.test('small chunks are not held back', async (t) => {
  guardLeaks(t)
  const r = await rig(t)
  const body = await get(r.port, '/100/100')
  t.equal(body.length, 200, 'every byte')
  t.equal(r.writes(), 2, 'the first chunk left before the second arrived')
})
