/**
 * Header and framing hygiene of the HTTP adapter against hostile backends: a reason phrase
 * node:http refuses, a malformed Content-Length undici reports as a length mismatch, and trailer
 * fields that must not cross a proxy. Raw-TCP backends: no real server sends these bytes.
 */
import t from 'tap'
import { connect } from 'node:net'
import { guardLeaks } from '../helpers/leaks.js'
import { proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t)

interface Tap { teardown (fn: () => void | Promise<void>): void }

/** Raw request; resolves with what came back and whether the proxy closed within `ms` (a bound, not a wait). */
function exchange (port: number, bytes: string, ms = 5000): Promise<{ out: string, closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let out = ''
    const timer = setTimeout(() => { s.destroy(); resolve({ out, closed: false }) }, ms)
    s.on('data', (d: Buffer) => { out += d.toString('latin1') })
    s.on('close', () => { clearTimeout(timer); resolve({ out, closed: true }) })
    s.on('error', () => {})
    s.write(bytes)
  })
}

/** A backend that answers every request head with `reply()` and closes; counts the requests. */
async function scripted (t: Tap, reply: () => string) {
  const state = { requests: 0 }
  const be = await rawBackend(t, (s) => {
    let buf = ''
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1')
      if (!buf.includes('\r\n\r\n')) return
      buf = ''
      state.requests++
      s.end(Buffer.from(reply(), 'latin1')) // one byte per char: the exact bytes under test
    })
  })
  return { ...be, state }
}

const GET = 'GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n'

t.test('a reason phrase with a control character is a 502 ERR_BAD_RESPONSE, not a hung client', async (t) => {
  const be = await scripted(t, () => 'HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok')
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const codes: Array<string | null> = []
  proxy.events.on('request:end', (e) => { codes.push(e.error) })
  const r = await exchange(port, GET)
  t.ok(r.closed, 'the proxy answered and closed within the bound')
  t.match(r.out, /^HTTP\/1\.1 502 Bad Gateway\r\n/, '502')
  t.match(r.out, /ERR_BAD_RESPONSE\n$/, 'stable code in the body')
  t.notMatch(r.out, /\x01/, 'the control character never reaches the client')
  t.same(codes, ['ERR_BAD_RESPONSE'])
  // The proxy still serves the next request (nothing poisoned).
  const again = await exchange(port, GET)
  t.match(again.out, /^HTTP\/1\.1 502 /)
})

t.test('a reason phrase with obs-text: the backend\'s bytes, or node\'s phrase when they were not UTF-8', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['\xc3\xa9t\xc3\xa9', /^HTTP\/1\.1 200 \xc3\xa9t\xc3\xa9\r\n/], // UTF-8 "été": the same bytes reach the client
    ['\xe9t\xe9', /^HTTP\/1\.1 200 OK\r\n/], // latin1: undici decoded it to U+FFFD, so node's own phrase
    ['', /^HTTP\/1\.1 200 OK\r\n/],
  ]
  for (const [reason, want] of cases) {
    const be = await scripted(t, () => `HTTP/1.1 200 ${reason}\r\nContent-Length: 2\r\n\r\nok`)
    const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
    const codes: Array<string | null> = []
    proxy.events.on('request:end', (e) => { codes.push(e.error) })
    const r = await exchange(port, GET)
    t.ok(r.closed, `${JSON.stringify(reason)}: answered within the bound`)
    t.match(r.out, want, JSON.stringify(reason))
    t.match(r.out, /\r\n\r\nok$/)
    t.same(codes, [null])
  }
})

t.test('a malformed Content-Length is ERR_BAD_RESPONSE and the request is not sent again', async (t) => {
  const heads = [
    'HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok',
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok',
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok',
  ]
  for (const head of heads) {
    const be = await scripted(t, () => head)
    const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
    const codes: Array<string | null> = []
    proxy.events.on('request:end', (e) => { codes.push(e.error) })
    const r = await exchange(port, GET)
    t.match(r.out, /^HTTP\/1\.1 502 /, `${JSON.stringify(head)}: 502`)
    t.same(codes, ['ERR_BAD_RESPONSE'], 'a malformed head, not a closed connection')
    t.equal(be.state.requests, 1, 'the backend got the request once: a malformed answer is not replayed')
  }
})

t.test('a short body after a valid head is still ERR_BACKEND_CLOSED and cuts the client', async (t) => {
  const be = await scripted(t, () => 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok')
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const codes: Array<string | null> = []
  proxy.events.on('request:end', (e) => { codes.push(e.error) })
  const r = await exchange(port, GET)
  t.match(r.out, /^HTTP\/1\.1 200 OK\r\n/)
  t.match(r.out, /\r\n\r\nok$/, 'the client got the short body, then the cut')
  t.same(codes, ['ERR_BACKEND_CLOSED'])
  t.equal(be.state.requests, 1)
})

t.test('trailers: hop-by-hop, Connection-listed and framing/control fields are not forwarded', async (t) => {
  const be = await scripted(t, () => 'HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n' +
    'X-Checksum: abc\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nKeep-Alive: timeout=1\r\nHost: evil.example\r\n' +
    'Set-Cookie: evil=1\r\nLocation: http://evil.example/\r\nContent-Type: text/evil\r\nX-Checksum: def\r\n\r\n')
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const r = await exchange(port, 'GET /x HTTP/1.1\r\nHost: a.example\r\nTE: trailers\r\nConnection: close\r\n\r\n')
  t.ok(r.closed)
  const body = r.out.slice(r.out.indexOf('\r\n\r\n') + 4)
  t.equal(body, '2\r\nok\r\n0\r\nx-checksum: abc\r\nx-checksum: def\r\n\r\n', 'only the end-to-end trailer fields, duplicates kept')
})

t.test('Transfer-Encoding twice or not chunked: 502 with the code ERR_BAD_RESPONSE', async (t) => {
  for (const head of [
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok',
  ]) {
    const be = await scripted(t, () => head)
    const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
    const codes: Array<string | null> = []
    proxy.events.on('request:end', (e) => { codes.push(e.error) })
    const r = await exchange(port, GET)
    t.match(r.out, /^HTTP\/1\.1 502 [^]*\r\n\r\n502 Bad Gateway\nERR_BAD_RESPONSE\n$/, `${JSON.stringify(head)}: 502 ERR_BAD_RESPONSE`)
    t.same(codes, ['ERR_BAD_RESPONSE'])
  }
})
