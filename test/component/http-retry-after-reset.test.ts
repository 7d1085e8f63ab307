/**
 * The core's failover after a reset (docs/guides/spawn.md, "A process that dies under load") on an
 * http route. An http route streams request bodies (no spool), so only idempotent requests without
 * a body are sent again: the adapter's keep-alive replay sends one once more, and a second reset
 * before any response byte sends it to a backend it was not sent to. A POST is never sent twice.
 * Two node:http backends; the next `armed` requests, on whichever backend they arrive, are read
 * whole and their connection reset before any answer.
 */
import t from 'tap'
import { createServer, request, type Server } from 'node:http'
import { guardLeaks } from '../helpers/leaks.js'
import { closeServer, listen, proxyServer } from '../helpers/servers.js'

/** A request with a body through the proxy: its status and body. */
function send (port: number, method: string, body: string): Promise<{ status: number, text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path: '/r', headers: { 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

t.test('http: a GET reset twice before any response byte goes to the other backend; a POST: 502, run once', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  let armed = 0
  const arrivals: string[] = []
  const answered: string[] = []
  const make = (name: string): Server => createServer((req, res) => {
    let b = ''
    req.setEncoding('utf8')
    req.on('data', (d: string) => { b += d })
    req.on('end', () => {
      arrivals.push(`${name} ${req.method ?? ''} ${b.length}`)
      if (armed > 0) { armed--; req.socket.resetAndDestroy(); return }
      answered.push(`${req.method ?? ''} ${b}`)
      res.end(`got ${b.length}`)
    })
  })
  const a = make('a')
  const b = make('b')
  const ports = [await listen(a), await listen(b)]
  t.teardown(async () => { await closeServer(a); await closeServer(b) })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: ports.map((p) => `127.0.0.1:${p}`), retries: 2 }] })
  const body = 'x'.repeat(5000)

  armed = 2
  const got = await send(port, 'GET', '')
  t.equal(got.status, 200, `the GET is answered (arrivals: ${arrivals.join(', ')}; ${got.text})`)
  t.equal(arrivals.length, 3, 'three attempts: the first, its replay, and the failover')
  t.not(arrivals[1]?.slice(0, 1), arrivals[2]?.slice(0, 1), 'the last on the backend the second was not sent to')
  t.same(answered, ['GET '])

  arrivals.length = 0
  armed = 1
  const post = await send(port, 'POST', body)
  t.equal(post.status, 502, 'the reset POST: 502')
  t.match(post.text, /ERR_BACKEND_(RESET|CLOSED)/)
  t.equal(arrivals.length, 1, 'the POST reached one backend, once')
})
