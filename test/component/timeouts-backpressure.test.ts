/**
 * Timeouts that must tell the backend's pauses from the client's (src/core/exchange.ts):
 *
 * - `timeouts.idle` bounds the backend's pauses inside a response body. While the proxy itself holds
 *   the backend paused because the client reads slowly, it does not run: a healthy download to a
 *   slow client completes.
 * - A client that reads nothing for `timeouts.clientIdle` while the backend waits on it is cut with
 *   ERR_CLIENT_TIMEOUT — the client's fault, never ERR_BODY_TIMEOUT (the backend's).
 * - `timeouts.headers` counts from the last upload byte even with `clientIdle: 0`.
 *
 * Real node:http backends and clients; a raw socket only for a client that never reads.
 */
import t from 'tap'
import { request, type IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

const CHUNK = Buffer.alloc(64 * 1024, 120)

/** A fast, healthy backend streaming `size` bytes (Infinity: until the connection goes). */
async function streamer (t: Parameters<typeof backend>[0], size: number) {
  const state = { blocked: false, closed: false }
  const be = await backend(t, (_req, res) => {
    if (Number.isFinite(size)) res.writeHead(200, { 'content-length': size })
    else res.writeHead(200, { 'content-type': 'application/octet-stream' })
    let sent = 0
    const pump = (): void => {
      state.blocked = false
      while (sent < size && !res.destroyed) {
        sent += CHUNK.length
        if (!res.write(CHUNK)) { state.blocked = true; res.once('drain', pump); return }
      }
      if (!res.destroyed) res.end()
    }
    res.on('close', () => { state.closed = true })
    pump()
  })
  return { ...be, state }
}

function ends (proxy: { events: { on (e: 'request:end', fn: (e: RequestEndEvent) => void): unknown } }): RequestEndEvent[] {
  const list: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => list.push(e))
  return list
}

t.test('a client pausing longer than timeouts.idle still gets the whole response', async (t) => {
  const SIZE = 8 * 1024 * 1024
  const IDLE = 300
  const be = await streamer(t, SIZE)
  const { proxy, url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { idle: IDLE, clientIdle: '30s' } }] })
  const done = ends(proxy)
  const got = await new Promise<{ bytes: number, error?: string }>((resolve) => {
    const req = request(`${url}/big`, { agent: false }, (res: IncomingMessage) => {
      let bytes = 0
      res.on('data', (c: Buffer) => { bytes += c.length })
      res.on('end', () => resolve({ bytes }))
      res.on('error', (e) => resolve({ bytes, error: (e as NodeJS.ErrnoException).code ?? e.message }))
      res.on('aborted', () => {})
      // The client stops reading; once the proxy has paused the backend for it (the backend's own
      // writes block), it stays away for several idle periods before reading on.
      res.pause()
      void waitFor(() => be.state.blocked, 10_000).then(() => {
        setTimeout(() => res.resume(), IDLE * 5)
      })
    })
    req.on('error', (e) => resolve({ bytes: -1, error: e.message }))
    req.end()
  })
  t.same(got, { bytes: SIZE }, 'every byte arrived')
  t.ok(await waitFor(() => done.length === 1), 'request:end')
  t.equal(done[0]?.error, null, 'no error: not blamed on the backend')
  t.equal(done[0]?.status, 200)
})

t.test('a client reading steadily but slower than the backend is never cut by timeouts.idle', async (t) => {
  const SIZE = 16 * 1024 * 1024
  const be = await streamer(t, SIZE)
  const { proxy, port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { idle: 250, clientIdle: '30s' } }] })
  const done = ends(proxy)
  const bytes = await new Promise<number>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/steady', agent: false }, (res: IncomingMessage) => {
      let n = 0
      res.pause()
      res.on('end', () => resolve(n))
      res.on('error', reject)
      res.on('aborted', () => {})
      // Once every buffer on the way is full (the backend's writes block), the client reads at a
      // steady ~320 KiB/s for 2 s: the proxy's 256 KiB queue then takes ~0.8 s, three idle
      // periods, to drain each time. Then it reads the rest at full speed. The paced reads are
      // the scenario (a slow client), not a wait.
      void waitFor(() => be.state.blocked, 10_000).then(() => {
        let ticks = 0
        const tick = setInterval(() => {
          let c: Buffer | null
          let got = 0
          while (got < 32 * 1024 && (c = res.read() as Buffer | null) !== null) { n += c.length; got += c.length }
          if (++ticks === 20) {
            clearInterval(tick)
            res.on('data', (c: Buffer) => { n += c.length })
            res.resume()
          }
        }, 100)
        res.once('close', () => clearInterval(tick))
      })
    })
    req.on('error', reject)
    req.end()
  })
  t.equal(bytes, SIZE, 'every byte arrived')
  t.ok(await waitFor(() => done.length === 1), 'request:end')
  t.equal(done[0]?.error, null, 'no error: not blamed on the backend')
})

t.test('a client that stops reading is cut after timeouts.clientIdle with ERR_CLIENT_TIMEOUT, and the backend is released', async (t) => {
  const be = await streamer(t, Infinity)
  const { proxy, port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { idle: 300, clientIdle: 800 } }] })
  const done = ends(proxy)
  const s = connect(port, '127.0.0.1')
  s.on('error', () => {})
  t.teardown(() => { s.destroy() })
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()))
  s.write('GET /stall HTTP/1.1\r\nHost: x\r\n\r\n')
  // Read the head, then never again: the kernel buffers fill and the proxy pauses the backend.
  s.once('data', () => s.pause())
  t.ok(await waitFor(() => done.length === 1, 20_000), 'the exchange ended')
  t.equal(done[0]?.error, 'ERR_CLIENT_TIMEOUT', 'the client is blamed, not the backend')
  t.equal(done[0]?.status, 200, 'the head had gone out')
  t.ok(await waitFor(() => be.state.closed, 5000), 'the backend response was abandoned')
  s.resume()
  await closed
  t.pass('the client connection was cut')
  t.equal(proxy.inflight, 0)
})

t.test('with clientIdle 0 a steady upload longer than timeouts.headers still gets its response', async (t) => {
  const be = await backend(t, (req, res) => {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => res.end(`got ${n}`))
  })
  // Paced by a timer: a pause of the whole test process (a loaded CI machine) longer than the
  // headers timeout would be a real 504, so the timeout leaves room for that.
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: 1500, clientIdle: 0 } }] })
  const CHUNKS = 40
  const got = await new Promise<string>((resolve, reject) => {
    const req = request(`${url}/up`, { method: 'POST', headers: { 'content-length': CHUNKS * 1000 }, agent: false }, (res) => {
      let b = ''
      res.on('data', (c: Buffer) => { b += c.toString() })
      res.on('end', () => resolve(`${res.statusCode} ${b.trim()}`))
    })
    req.on('error', reject)
    let i = 0
    // A 4 s upload at a steady pace (the scenario: a slow uploader), 2.7x the headers timeout.
    const tick = setInterval(() => {
      req.write(Buffer.alloc(1000, 97))
      if (++i === CHUNKS) { clearInterval(tick); req.end() }
    }, 100)
  })
  t.equal(got, `200 got ${CHUNKS * 1000}`)
})

t.test('with clientIdle 0 the headers timeout still fires once the upload is over', async (t) => {
  const be = await backend(t, (req) => { req.resume() /* never answers */ })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: 300, clientIdle: 0 } }] })
  const r = await get(`${url}/up`, { method: 'POST', body: 'x'.repeat(1000) })
  t.equal(r.status, 504)
  t.match(r.body.toString(), /ERR_HEADERS_TIMEOUT/)
})
