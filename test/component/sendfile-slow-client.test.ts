/**
 * X-Sendfile to a client that stops reading: the proxy reads the file itself, so no backend stalls
 * and nothing but `timeouts.clientIdle` can end the response. Before, such a client held the
 * exchange, its admission slot and the open file for as long as it kept the connection.
 * A real node:http backend; a raw socket for a client that never reads.
 */
import t from 'tap'
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

// Larger than what the kernel's socket buffers and node's queue take in before the client reads.
const SIZE = 64 * 1024 * 1024

function bigFile (t: { teardown (fn: () => void): void }): { root: string, file: string } {
  const root = mkdtempSync(join(tmpdir(), 'pc-sendfile-slow-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const file = join(root, 'big.bin')
  writeFileSync(file, '')
  truncateSync(file, SIZE)
  return { root, file }
}

t.test('a client that stops reading an X-Sendfile file is cut after clientIdle (ERR_CLIENT_TIMEOUT)', async (t) => {
  const { root, file } = bigFile(t)
  const be = await backend(t, (_req, res) => { res.writeHead(200, { 'X-Sendfile': file }); res.end() })
  const { proxy, port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], xSendfile: { allow: [root] }, timeouts: { clientIdle: 500 } }] })
  const done: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => done.push(e))
  const s = connect(port, '127.0.0.1')
  s.on('error', () => {})
  t.teardown(() => { s.destroy() })
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()))
  s.write('GET /dl HTTP/1.1\r\nHost: x\r\n\r\n')
  // The head, then never another read: the buffers fill and the proxy pauses the file.
  s.once('data', () => s.pause())
  t.ok(await waitFor(() => done.length === 1, 20_000), 'the exchange ended')
  t.equal(done[0]?.error, 'ERR_CLIENT_TIMEOUT', 'cut as a client that stopped reading')
  t.equal(done[0]?.status, 200, 'after the head went out')
  t.ok((done[0]?.bytesOut ?? SIZE) < SIZE, 'not the whole file')
  s.resume()
  await closed
  t.pass('the client connection was cut')
})

t.test('a slow client that keeps reading gets the whole X-Sendfile file', async (t) => {
  const { root, file } = bigFile(t)
  const be = await backend(t, (_req, res) => { res.writeHead(200, { 'X-Sendfile': file }); res.end() })
  const { proxy, port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], xSendfile: { allow: [root] }, timeouts: { clientIdle: 2000 } }] })
  const done: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => done.push(e))
  // Pauses shorter than clientIdle, many times over: the drain resumes the file each time.
  const bytes = await new Promise<number>((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', path: '/dl', agent: false }, (res) => {
      let n = 0
      let pauses = 0
      res.on('data', (c: Buffer) => {
        n += c.length
        if (pauses < 20 && n > pauses * 2 * 1024 * 1024) { pauses++; res.pause(); setTimeout(() => res.resume(), 50) }
      })
      res.on('end', () => resolve(n))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
  t.equal(bytes, SIZE, 'every byte arrived')
  t.ok(await waitFor(() => done.length === 1), 'request:end')
  t.equal(done[0]?.error, null, 'no error')
})
