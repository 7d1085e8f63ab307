/**
 * Static files are streamed with backpressure and an exact length: a client that stops reading
 * holds no more than the socket buffers (then clientIdle cuts it), a client that goes away closes
 * the file, and a file that shrinks or grows while it is sent never yields a body that differs
 * from its Content-Length.
 */
import t from 'tap'
import { appendFileSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { request, type IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { proxyServer } from '../helpers/servers.js'
import { stalledClient } from '../helpers/raw-client.js'

guardLeaks(t)

const SIZE = 64 * 1024 * 1024

function bigFile (t: { teardown (fn: () => void): void }): { root: string, file: string } {
  const root = mkdtempSync(join(tmpdir(), 'pc-static-big-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const file = join(root, 'big.bin')
  writeFileSync(file, '')
  truncateSync(file, SIZE)
  return { root, file }
}

const fileOpen = (file: string): boolean => [...openFds().values()].includes(file)

t.test('a client that stops reading: the file is read only as fast as it drains, then clientIdle cuts it', async (t) => {
  const { root, file } = bigFile(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root, timeouts: { clientIdle: '500ms' } }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const sock = stalledClient(port, 'GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n')
  t.teardown(() => { sock.destroy() })
  t.ok(await waitFor(() => ends.length === 1, 20_000), 'the exchange ends without the client reading')
  t.equal(ends[0].error, 'ERR_CLIENT_TIMEOUT')
  t.ok(ends[0].bytesOut < SIZE / 4, `only what the socket took was read from the file (${ends[0].bytesOut} of ${SIZE} bytes)`)
  t.ok(await waitFor(() => !fileOpen(file)), 'the file is closed')
})

t.test('a client that goes away mid-body: the file is closed', async (t) => {
  const { root, file } = bigFile(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const sock = connect({ host: '127.0.0.1', port })
  sock.on('error', () => {})
  sock.write('GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n')
  await new Promise((resolve) => sock.once('data', resolve))
  t.ok(fileOpen(file), 'open while sent')
  sock.destroy()
  t.ok(await waitFor(() => ends.length === 1, 10_000))
  t.equal(ends[0].error, 'ERR_CLIENT_ABORTED')
  t.ok(await waitFor(() => !fileOpen(file)), 'closed once the client left')
})

/** GET with a response the test pauses; resolves with what arrived and how it ended. */
function slowGet (port: number, path: string, midway: () => void): Promise<{ headerLength: number, got: number, complete: boolean }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res: IncomingMessage) => {
      let got = 0
      let paused = false
      res.on('data', (c: Buffer) => {
        got += c.length
        if (!paused) {
          paused = true
          res.pause()
          // The proxy now holds the file back for the client; change it, then read on.
          midway()
          setImmediate(() => res.resume())
        }
      })
      const done = (): void => resolve({ headerLength: Number(res.headers['content-length']), got, complete: res.complete })
      res.once('end', done)
      res.once('aborted', () => {})
      res.once('error', () => {})
      res.once('close', done)
    })
    req.on('error', () => {})
    req.end()
  })
}

t.test('a file that shrinks while sent: the body is cut short and the connection closed, never padded or ended early', async (t) => {
  const { root, file } = bigFile(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const r = await slowGet(port, '/big.bin', () => truncateSync(file, 1024 * 1024))
  t.equal(r.headerLength, SIZE)
  t.ok(r.got < SIZE, `fewer bytes than announced (${r.got})`)
  t.equal(r.complete, false, 'the client sees an incomplete response, not a short complete one')
  t.ok(await waitFor(() => ends.length === 1, 10_000))
  t.equal(ends[0].error, 'ERR_STATIC_READ')
  t.ok(await waitFor(() => !fileOpen(file)), 'the file is closed')
})

t.test('a file that grows while sent: exactly Content-Length bytes', async (t) => {
  const { root, file } = bigFile(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const r = await slowGet(port, '/big.bin', () => appendFileSync(file, Buffer.alloc(1024 * 1024, 'x')))
  t.equal(r.headerLength, SIZE)
  t.equal(r.got, SIZE, 'not one byte more')
  t.equal(r.complete, true)
})

t.test('a range of a large file: exactly that range', async (t) => {
  const { root } = bigFile(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const start = SIZE - 200_000 - 7
  const got = await new Promise<{ status: number, length: number, range: string }>((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: '/big.bin', agent: false, headers: { range: `bytes=${start}-` } }, (res) => {
      let length = 0
      res.on('data', (c: Buffer) => { length += c.length })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, length, range: String(res.headers['content-range']) }))
    }).on('error', reject).end()
  })
  t.equal(got.status, 206)
  t.equal(got.length, SIZE - start)
  t.equal(got.range, `bytes ${start}-${SIZE - 1}/${SIZE}`)
})
