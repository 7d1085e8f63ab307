/**
 * Audit 34: a TCP SCGI backend that writes its whole response and then resets the connection
 * (RST) while the client has not read it yet (a slow client: the proxy's backend socket is paused
 * by backpressure, the response's bytes wait unread in the kernel). libuv reads those bytes and
 * then reports the reset as an end of stream (the POLLHUP short-cut, docs/protocols/scgi.md), so
 * the response that runs to the close used to end cleanly with its tail lost (the backend's
 * unsent bytes die with the RST), and one with a short Content-Length was logged as
 * ERR_BACKEND_CLOSED. Now: the client connection is cut, ERR_BACKEND_RESET in the log and
 * request:end. A clean close (FIN) in the same spot still ends the response whole.
 *
 * A reset on demand is a fault uWSGI cannot produce: the backend is a raw TCP fake
 * (`resetAndDestroy()`); everything goes through createProxy and node:http.
 */
import t from 'tap'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { slowGetThroughProxy } from '../helpers/slow-client.js'
import { rawBackend } from '../helpers/servers.js'

/** More than the loopback path holds while the client does not read (measured: ~1.4 MiB arrives). */
const N = 4 << 20

interface Seen { status: number, bytes: number, complete: boolean, event: RequestEndEvent | undefined, codes: unknown[] }

async function slowClient (t: Parameters<typeof guardLeaks>[0], withLength: boolean, ending: 'reset' | 'fin'): Promise<Seen> {
  let ended = false
  const raw = await rawBackend(t, (s) => {
    s.on('error', () => {})
    s.once('data', () => {
      s.write(`Status: 200 OK\r\nContent-Type: application/octet-stream\r\n${withLength ? `Content-Length: ${N}\r\n` : ''}\r\n`)
      // Once the kernel took the last byte: the whole response is "sent".
      s.write(Buffer.alloc(N, 0x37), () => {
        if (ending === 'reset') s.resetAndDestroy()
        else s.end()
        ended = true
      })
    })
  })
  return await slowGetThroughProxy(t, { match: { prefix: '/' }, protocol: 'scgi', backends: [raw.address], scriptFilename: '/srv/app/app.py' }, () => ended)
}

for (const withLength of [false, true]) {
  const what = withLength ? 'with a Content-Length' : 'delimited by the close'
  t.test(`a response ${what}, sent whole, then a reset while the client is not reading: cut, ERR_BACKEND_RESET`, async (t) => {
    guardLeaks(t)
    const seen = await slowClient(t, withLength, 'reset')
    t.equal(seen.status, 200)
    t.comment(`${seen.bytes} of ${N} bytes arrived`)
    if (withLength && seen.bytes === N) {
      // The kernel delivered every byte before the RST: complete at its length, nothing lost.
      t.ok(seen.complete, 'all bytes arrived before the reset: complete')
      t.same([seen.event?.status, seen.event?.error], [200, null])
      t.same(seen.codes, [])
      return
    }
    // Without a length the response ends only at a clean close: cut even when every byte came.
    t.notOk(seen.complete, 'the client\'s response is cut, not ended cleanly')
    t.same([seen.event?.status, seen.event?.error], [200, 'ERR_BACKEND_RESET'], 'request:end records the reset')
    t.same(seen.codes, ['ERR_BACKEND_RESET'], 'one log line, ERR_BACKEND_RESET')
  })

  t.test(`a response ${what}, sent whole, then a clean close (FIN) while the client is not reading: whole, no error`, async (t) => {
    guardLeaks(t)
    const seen = await slowClient(t, withLength, 'fin')
    t.same([seen.status, seen.bytes, seen.complete], [200, N, true], 'every byte, ended cleanly')
    t.same([seen.event?.status, seen.event?.error], [200, null])
    t.same(seen.codes, [])
  })
}
