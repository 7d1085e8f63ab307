/**
 * HTTP adapter: a backend that answers before it has read the whole request body and closes — a
 * node:http backend refusing a large upload with `413` and `Connection: close`, as body-size
 * limits do. The rest of the upload makes the backend's kernel reset the connection, and the
 * proxy's next write fails (EPIPE) while the 413 already sits in its receive buffer. The client
 * must get that 413, not a 502: the answer is read before the write's error is acted on. A backend
 * that resets without answering still gets the client `502 ERR_BACKEND_RESET`
 * (test/component/http-reset-during-upload.test.ts).
 */
import t from 'tap'
import { request } from 'node:http'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

const UPLOAD = 4 << 20

/** POST `UPLOAD` bytes at once; resolves with what came back (an error after the answer is fine). */
function upload (port: number): Promise<{ status: number, body: string }> {
  return new Promise((resolve) => {
    let settled = false
    const done = (v: { status: number, body: string }): void => { if (!settled) { settled = true; resolve(v) } }
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/up', agent: false, headers: { 'content-length': String(UPLOAD) } }, (res) => {
      let body = ''
      res.setEncoding('latin1')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => done({ status: res.statusCode ?? 0, body }))
      res.on('error', () => done({ status: res.statusCode ?? 0, body: body + '<cut>' }))
    })
    req.on('error', (err) => done({ status: -1, body: String(err) }))
    req.end(Buffer.alloc(UPLOAD, 0x61))
  })
}

t.test('a backend answering 413 + Connection: close before reading a 4 MiB upload: the client gets the 413', async (t) => {
  let requests = 0
  const be = await backend(t, (_req, res) => {
    requests++
    res.setHeader('Connection', 'close')
    res.writeHead(413, { 'Content-Type': 'text/plain' })
    res.end('too big')
  })
  const { proxy, port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const events: RequestEndEvent[] = []
  proxy.events.on('request:end', (e: RequestEndEvent) => events.push(e))
  const ROUNDS = 5
  const got: string[] = []
  for (let i = 0; i < ROUNDS; i++) {
    const r = await upload(port)
    got.push(`${r.status} ${r.body}`)
  }
  t.same(got, Array(ROUNDS).fill('413 too big'), 'every upload got the backend\'s 413 and its body')
  t.equal(requests, ROUNDS, 'one backend request per upload: nothing replayed or failed over')
  t.same(events.map((e) => [e.status, e.error]), Array(ROUNDS).fill([413, null]), 'request:end: 413, no error')
})
