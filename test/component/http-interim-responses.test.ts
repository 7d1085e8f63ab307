/**
 * Interim (1xx) responses an HTTP backend sends unasked (RFC 9110 §15.2: a client must parse and
 * ignore an unexpected 1xx). proxycore never sends `Expect`, so a backend's `100 Continue` is
 * always unsolicited: it is skipped like `102 Processing`, and the response after it reaches the
 * client intact; `103 Early Hints` is passed on (test/component/http-responses.test.ts AC-70).
 * A real backend cannot be made to send these on demand: raw TCP fakes write the bytes.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, rawBackend, rawRequest } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

interface Tap { teardown (fn: () => unknown): void }

const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n'
const FINAL = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal'

/**
 * A keep-alive fake: for each request head (and, with a Content-Length, its body) it calls
 * `reply(path, socket, body)`. Counts the connections it accepted.
 */
async function fake (t: Tap, reply: (path: string, socket: Socket, body: string) => void) {
  const be = await rawBackend(t, (socket) => {
    let buf = ''
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1')
      for (;;) {
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        const head = buf.slice(0, end)
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
        if (buf.length < end + 4 + length) return
        const body = buf.slice(end + 4, end + 4 + length)
        buf = buf.slice(end + 4 + length)
        reply(head.split(' ')[1], socket, body)
      }
    })
  })
  return be
}

t.test('an unsolicited 100 Continue is skipped: the response after it reaches the client intact', async (t) => {
  const be = await fake(t, (path, s, body) => {
    if (path === '/100') s.write(CONTINUE + FINAL)
    // The interim head and the final one split across writes, mid status line.
    else if (path === '/split') { s.write('HTTP/1.1 100 Cont'); s.write('inue\r\nX-A: 1\r\n\r\nHTTP/1.1 2'); s.write('00 OK\r\nContent-Length: 5\r\n\r\nfinal') }
    else if (path === '/100x3') s.write(CONTINUE + CONTINUE + 'HTTP/1.1 100 Continue\r\nX-B: 2\r\n\r\n' + FINAL)
    // A 100 and then a 103: the hint is still passed on.
    else if (path === '/100-103') s.write(CONTINUE + 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n' + FINAL)
    else if (path === '/chunked') s.write(CONTINUE + 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfinal\r\n0\r\n\r\n')
    // A 1xx has no body (RFC 9110 §15.2): bytes after its head are the next message, here not HTTP.
    else if (path === '/100-body') s.write('HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhello' + FINAL)
    else if (path === '/post') s.write(`${CONTINUE}HTTP/1.1 201 Created\r\nContent-Length: ${body.length + 4}\r\n\r\ngot ${body}`)
    else s.write(FINAL)
  })
  const { url, port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))

  for (const path of ['/100', '/split', '/100x3', '/chunked']) {
    const r = await get(`${url}${path}`)
    t.equal(`${r.status} ${r.body.toString()}`, '200 final', `${path}: the 200 after the 100`)
    t.notOk('x-a' in r.headers || 'x-b' in r.headers, `${path}: no field of the 100 in the response`)
  }
  const bodied = await get(`${url}/100-body`)
  t.match(`${bodied.status} ${bodied.body.toString()}`, /^502 [^]*ERR_PROTOCOL/, 'a 100 followed by bytes that are not HTTP: 502 ERR_PROTOCOL, as any bytes that are not HTTP')
  const post = await get(`${url}/post`, { method: 'POST', body: 'abc' })
  t.equal(`${post.status} ${post.body.toString()}`, '201 got abc', 'a POST: its body reached the backend, the 201 the client')

  // On the wire: nothing of the backend's 100 is passed on (the client sent no Expect).
  const raw = await rawRequest(port, 'GET /100 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(raw, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nfinal$/, 'the client gets the 200 alone')
  const hinted = await rawRequest(port, 'GET /100-103 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(hinted, /^HTTP\/1\.1 103 Early Hints\r\n[Ll]ink: <\/a\.css>; rel=preload\r\n\r\nHTTP\/1\.1 200 OK\r\n[^]*final$/, 'a 103 after a 100 is still passed on')
  const old = await rawRequest(port, 'GET /100 HTTP/1.0\r\nHost: a\r\n\r\n')
  t.match(old, /^HTTP\/1\.1 200 OK\r\n[^]*final$/, 'an HTTP/1.0 client gets the 200 alone')

  t.equal(be.sockets.length, 2, 'every request went over one backend connection but the one after /100-body: a 100 does not cost it')
  t.same(ends.filter((e) => e.error !== null).map((e) => `${e.url} ${e.error ?? ''}`), ['/100-body ERR_PROTOCOL'], 'no other request:end carries an error')
})

t.test('an Expect: 100-continue client gets one 100 (proxycore\'s own), never the backend\'s too', async (t) => {
  const be = await fake(t, (_path, s, body) => { s.write(`${CONTINUE}HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`) })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const raw = await new Promise<string>((resolve, reject) => {
    let out = ''
    let sent = false
    const s = connect({ host: '127.0.0.1', port })
    s.on('data', (d: Buffer) => {
      out += d.toString('latin1')
      if (!sent && out.includes('\r\n\r\n')) { sent = true; s.write('hello') }
    })
    s.on('close', () => resolve(out))
    s.on('error', reject)
    s.write('POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n')
  })
  t.match(raw, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nhello$/, 'one 100, then the 200 with the body echoed')
  t.equal(raw.split('100 Continue').length - 1, 1, 'exactly one 100')
})

t.test('an upgrade answered 100 then 101 still opens the tunnel', async (t) => {
  const be = await rawBackend(t, (s) => {
    s.once('data', () => {
      s.write(CONTINUE + 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x-echo\r\n\r\n')
      s.on('data', (d: Buffer) => s.write(d))
    })
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const out = await rawRequest(port, 'GET /u HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x-echo\r\n\r\nping', /ping$/)
  t.match(out, /^HTTP\/1\.1 101 Switching Protocols\r\n[^]*\r\n\r\nping$/, 'one 101, then the echo through the tunnel')
})

t.test('a backend that sends only interim responses is bounded by timeouts.headers: 504, its connection closed', async (t) => {
  let timer: NodeJS.Timeout | null = null
  t.teardown(() => { if (timer !== null) clearInterval(timer) })
  const be = await rawBackend(t, (s) => {
    s.once('data', () => {
      s.write(CONTINUE)
      timer = setInterval(() => { if (!s.destroyed) s.write('HTTP/1.1 102 Processing\r\n\r\n' + CONTINUE) }, 20)
    })
  })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: 300 } }] })
  const at = Date.now()
  const r = await get(`${url}/`)
  const ms = Date.now() - at
  t.equal(r.status, 504)
  t.match(r.body.toString(), /ERR_HEADERS_TIMEOUT/)
  t.ok(ms >= 250 && ms < 3000, `answered after ${ms} ms (300 ms timeout), 1xx every 20 ms did not extend it`)
  // (undici may open a spare connection after an aborted request: idle, pooled, closed with the proxy.)
  t.ok(await waitFor(() => be.sockets[0].destroyed, 3000), 'the connection that sent them was closed')
})
