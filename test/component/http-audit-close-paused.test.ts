/**
 * A backend response that ends with its connection (`Connection: close`, or a body framed by the
 * close) while the proxy holds the backend paused for the client: its last body bytes found the
 * client's queue full, and the FIN came right after them. undici 7 asserted in its socket 'end'
 * listener that its parser was not paused: an uncaught AssertionError, the proxy process gone
 * (nodejs/undici#5360). A client pipelining two requests gets there at will: the second response
 * queues in full behind the first one. The real node:http peer answers `Connection: close`; a body
 * framed by the close (no length, not chunked) comes from a raw TCP fake.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

/** Past the proxy's 256 KiB of slack for a slow client: the last read of it pauses the backend. */
const BODY = Buffer.alloc(256 * 1024, 97)

/**
 * Pipeline GET /hold and GET /close on one client connection; /hold is answered only once the
 * /close exchange has ended (its whole response queued behind /hold's). Returns what the client got.
 */
async function pipelined (t: Tap, address: string, hold: { release: (() => void) | null }): Promise<{ got: string, ends: RequestEndEvent[] }> {
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [address], retries: 0 }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const c = connect({ port, host: '127.0.0.1' })
  t.teardown(() => c.destroy())
  c.on('error', () => {})
  let got = ''
  c.on('data', (d: Buffer) => { got += d.toString('latin1') })
  c.write('GET /hold HTTP/1.1\r\nHost: a\r\n\r\nGET /close HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.ok(await waitFor(() => ends.some((e) => e.url === '/close'), 20_000), 'the /close exchange ends while /hold is still held')
  t.ok(hold.release !== null, '/hold reached the backend')
  hold.release?.()
  t.ok(await waitFor(() => c.readableEnded, 20_000), 'the client connection ends')
  return { got, ends }
}
/** A whole chunked body (no trailers). */
function dechunk (s: string): string {
  let out = ''
  for (let at = 0, n = 1; n > 0 && at < s.length;) {
    const eol = s.indexOf('\r\n', at)
    n = parseInt(s.slice(at, eol), 16)
    out += s.slice(eol + 2, eol + 2 + n)
    at = eol + 2 + n + 2
  }
  return out
}
interface Tap { teardown (fn: () => unknown): void, ok (v: unknown, m: string): void }

t.test('Connection: close from a node:http backend, its response queued behind another: complete, no crash', async (t) => {
  const hold: { release: (() => void) | null } = { release: null }
  const be = await backend(t, (req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/hold') { hold.release = () => res.end('held'); return }
    res.writeHead(200, { 'content-length': BODY.length, connection: 'close' })
    res.end(BODY)
  })
  const { got, ends } = await pipelined(t, be.address, hold)
  t.match(got, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nheld/, '/hold first')
  const second = got.indexOf('HTTP/1.1 200 OK', 10)
  t.ok(second > 0, 'then /close')
  const head = got.slice(second, got.indexOf('\r\n\r\n', second))
  t.match(head, /\r\ncontent-length: 262144/i, 'framed by its length')
  t.equal(got.slice(got.indexOf('\r\n\r\n', second) + 4), BODY.toString('latin1'), 'its whole body')
  t.same(ends.find((e) => e.url === '/close')?.error, null, 'the /close exchange ended without an error')
})

t.test('a body framed by the close, queued behind another response: complete (final chunk), no crash', async (t) => {
  const hold: { release: (() => void) | null } = { release: null }
  const be = await rawBackend(t, (s: Socket) => {
    s.once('data', (d: Buffer) => {
      if (d.toString('latin1').startsWith('GET /hold ')) {
        hold.release = () => s.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld')
        return
      }
      s.write('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n')
      s.end(BODY)
    })
  })
  const { got, ends } = await pipelined(t, be.address, hold)
  t.match(got, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nheld/, '/hold first')
  const second = got.indexOf('HTTP/1.1 200 OK', 10)
  t.ok(second > 0, 'then /close')
  t.match(got.slice(second, got.indexOf('\r\n\r\n', second)), /\r\ntransfer-encoding: chunked/i, 'chunked to the client')
  t.ok(got.endsWith('\r\n0\r\n\r\n'), 'ends with the final chunk: complete, not cut')
  t.equal(dechunk(got.slice(got.indexOf('\r\n\r\n', second) + 4)), BODY.toString('latin1'), 'every body byte')
  t.same(ends.find((e) => e.url === '/close')?.error, null, 'the /close exchange ended without an error')
})
