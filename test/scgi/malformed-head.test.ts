/**
 * Response heads a real SCGI server (uWSGI) cannot be made to send, from FAKE-SCGI through
 * createProxy: each gets a 502 with a stable code in the log and in `request:end`, the backend
 * connection is closed, and the proxy goes on serving. Each head is sent whole and also split one
 * byte per write (a parser that only works on whole buffers would pass the first).
 */
import t from 'tap'
import type { Socket } from 'node:net'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { captureLogger } from '../cgi/harness.js'
import { fakeScgi } from './fake-scgi.js'

const HEADS: Array<[name: string, head: Buffer, code: string]> = [
  ['a head over maxResponseHeadSize (64 KiB)', Buffer.from(`Status: 200 OK\r\n${`${'X-Pad: '.padEnd(1000, 'p')}\r\n`.repeat(70)}`), 'ERR_RESPONSE_HEAD_TOO_LARGE'],
  ['one header line over maxResponseHeadSize', Buffer.from(`Status: 200 OK\r\nX-Long: ${'l'.repeat(70 * 1024)}`), 'ERR_RESPONSE_HEAD_TOO_LARGE'],
  ['an HTTP status line without a code', Buffer.from('HTTP/1.1 \r\nContent-Type: text/plain\r\n\r\nbody'), 'ERR_BAD_RESPONSE'],
  ['an HTTP status line with a word for a code', Buffer.from('HTTP/1.1 OK\r\nContent-Type: text/plain\r\n\r\nbody'), 'ERR_BAD_RESPONSE'],
  ['a Status field without a code', Buffer.from('Status: \r\nContent-Type: text/plain\r\n\r\nbody'), 'ERR_BAD_RESPONSE'],
  ['a Status code of two digits', Buffer.from('Status: 20 OK\r\nContent-Type: text/plain\r\n\r\nbody'), 'ERR_BAD_RESPONSE'],
  ['a NUL in a header value', Buffer.from('Status: 200 OK\r\nX-Bad: a\0b\r\n\r\nbody'), 'ERR_BAD_RESPONSE_HEADER'],
  ['a NUL in a header name', Buffer.from('Status: 200 OK\r\nX-B\0ad: ab\r\n\r\nbody'), 'ERR_BAD_RESPONSE_HEADER'],
  ['a NUL in the status line', Buffer.from('HTTP/1.1 200 O\0K\r\n\r\nbody'), 'ERR_BAD_RESPONSE'],
  ['a bare CR inside a header value', Buffer.from('Status: 200 OK\r\nX-Bad: a\rb\r\n\r\nbody'), 'ERR_BAD_RESPONSE_HEADER']
]

t.test('malformed SCGI response heads: 502 with a stable code, connection closed, no crash', async (t) => {
  guardLeaks(t)
  let split = false
  let good = false
  let current: Buffer = Buffer.alloc(0)
  const closed: Socket[] = []
  const fake = await fakeScgi((_req, socket) => {
    socket.on('close', () => closed.push(socket))
    // The bad heads are never followed by a close: the proxy must see the fault in the bytes.
    if (good) { socket.end(current); return }
    if (!split) { socket.write(current); return }
    // One byte per write, each after the previous one left: the parser sees every split point.
    let i = 0
    const next = (): void => { if (i < current.length && !socket.destroyed) socket.write(current.subarray(i, ++i), next) }
    next()
  })
  t.teardown(() => fake.close())
  const { logger, lines } = captureLogger()
  const { proxy, url } = await proxyServer(t, { logger, routes: [{ match: { prefix: '/app/' }, protocol: 'scgi', backends: [`unix:${fake.path}`], scriptFilename: '/srv/app.py' }] })
  const events: RequestEndEvent[] = []
  proxy.events.on('request:end', (e: RequestEndEvent) => events.push(e))

  let n = 0
  for (const [name, head, code] of HEADS) {
    for (const s of [false, true]) {
      // Byte by byte is slow for the 70 KiB heads and adds nothing there: the limit is a count.
      if (s && head.length > 4096) continue
      split = s
      current = head
      const path = `/app/${++n}`
      const before = lines.length
      const res = await get(`${url}${path}`)
      const what = `${name}${s ? ', byte by byte' : ''}`
      t.equal(res.status, 502, `${what}: 502`)
      t.notOk(res.body.toString('latin1').includes('body'), `${what}: nothing of the backend's body`)
      t.ok(await waitFor(() => events.some((e) => e.url === path)), `${what}: request:end`)
      t.equal(events.find((e) => e.url === path)?.error, code, `${what}: request:end says ${code}`)
      t.same(lines.slice(before).filter((l) => l.level === 'error' || l.level === 'warn').map((l) => l.obj.code), [code], `${what}: logged once as ${code}`)
      t.ok(await waitFor(() => closed.length === fake.requests.length), `${what}: the backend connection is closed`)
    }
  }
  // Still serving: a good head right after all the bad ones.
  good = true
  current = Buffer.from('Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nfine')
  const ok = await get(`${url}/app/good`)
  t.equal(ok.status, 200)
  t.equal(ok.body.toString(), 'fine')
})
