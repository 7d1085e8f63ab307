/**
 * Upgrade tunnels (src/core/upgrade.ts) at their edges: backpressure both ways (a side that does
 * not read holds the other back, the proxy's queues stay bounded, and every byte arrives once it
 * reads), tunnel bytes that come in the same packet as the backend's 101, a client that sends far
 * more than the early-bytes buffer before the 101, and a 101 to a request that asked for no
 * upgrade. node:http backends (their 'upgrade' socket) where they can show it; raw TCP for the
 * byte-level faults a real peer cannot make.
 */
import t from 'tap'
import { createServer, type IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Proxy, RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { closeServer, get, listen, proxyServer, rawBackend, upgradeBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

interface Tap { teardown (fn: () => unknown): void }

const UPGRADE = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x-raw\r\n\r\n`
const SWITCHED = 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x-raw\r\n\r\n'
const MiB = 1024 * 1024
/** What the proxy may queue in either direction while a side does not read: a few chunks of node's, far below the transfer. */
const BOUND = 2 * MiB

function ends (proxy: Proxy): RequestEndEvent[] {
  const out: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => out.push(e))
  return out
}

/** A raw client; counts what follows the response head. */
function rawClient (t: Tap, port: number) {
  const sock = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  let buf = ''
  let headDone = false
  const st = { sock, head: '', body: 0, bodyText: '', fin: false, closed: new Promise<void>((resolve) => sock.once('close', () => resolve())) }
  sock.on('data', (d: Buffer) => {
    if (headDone) { st.body += d.length; if (st.bodyText.length < 64) st.bodyText += d.toString('latin1', 0, Math.min(d.length, 64)); return }
    buf += d.toString('latin1')
    const i = buf.indexOf('\r\n\r\n')
    if (i < 0) return
    headDone = true
    st.head = buf.slice(0, i + 4)
    const rest = buf.slice(i + 4)
    st.body += rest.length
    st.bodyText += rest.slice(0, 64)
  })
  sock.on('end', () => { st.fin = true })
  sock.on('error', () => {})
  t.teardown(() => { sock.destroy() })
  return st
}

/** Writes `total` bytes as fast as the socket takes them. */
function pump (s: Duplex, total: number, piece = 64 * 1024): { sent: () => number } {
  const chunk = Buffer.alloc(piece, 'z')
  let sent = 0
  const go = (): void => {
    while (sent < total) {
      sent += chunk.length
      if (!s.write(chunk)) { s.once('drain', go); return }
    }
  }
  go()
  return { sent: () => sent }
}

/**
 * Until the writer is held back: `sent` unchanged over 20 looks 25 ms apart (bounded by the
 * deadline). Meanwhile `sample` is called every 5 ms, so the peak of what the proxy holds is seen.
 */
async function heldBack (sent: () => number, sample: () => void): Promise<boolean> {
  const timer = setInterval(sample, 5)
  try {
    let last = -1
    let same = 0
    return await waitFor(() => {
      const now = sent()
      if (now === last) same++
      else { last = now; same = 0 }
      return same >= 20
    }, 30_000, 25)
  } finally {
    clearInterval(timer)
  }
}

/** The proxy's client socket of the tunnel (the one node:http hands to the 'upgrade' listener). */
function frontSocket (server: import('node:http').Server): () => Socket | null {
  let front: Socket | null = null
  server.on('upgrade', (_req, s: Socket) => { front = s })
  return () => front
}

/** What the proxy holds in memory for one direction: `from`'s read buffer and its pipe destination's write queue. */
function held (from: Socket): number {
  const st = (from as unknown as { _readableState: { length: number, pipes: Duplex[] } })._readableState
  return st.length + st.pipes.reduce((n, d) => n + d.writableLength, 0)
}

t.test('backpressure, client to backend: a backend that does not read holds the client back; bounded; every byte arrives once it reads', async (t) => {
  const TOTAL = 64 * MiB
  let got = 0
  const be = await upgradeBackend(t, (_req, socket) => {
    socket.write(SWITCHED)
    socket.pause()
    socket.on('data', (d: Buffer) => { got += d.length })
  })
  const { port, proxy, server } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ev = ends(proxy)
  const front = frontSocket(server)
  const c = rawClient(t, port)
  c.sock.write(UPGRADE('/up'))
  t.ok(await waitFor(() => c.head !== '', 5000), 'the 101')
  const p = pump(c.sock, TOTAL)
  let peak = 0
  t.ok(await heldBack(p.sent, () => { const f = front(); if (f !== null) peak = Math.max(peak, held(f)) }), 'the client is held back')
  t.ok(p.sent() < TOTAL, `the client could send ${p.sent()} of ${TOTAL} bytes`)
  t.equal(got, 0, 'the backend read nothing yet')
  t.ok(peak < BOUND, `the proxy held at most ${peak} bytes (< ${BOUND})`)
  ;(be.sockets[0] as Socket).resume()
  t.ok(await waitFor(() => got === TOTAL, 60_000), `every byte reached the backend (${got} of ${TOTAL})`)
  be.sockets[0].destroy()
  c.sock.destroy()
  t.ok(await waitFor(() => ev.length === 1, 5000))
})

t.test('backpressure, backend to client: a client that does not read holds the backend back; bounded; every byte arrives once it reads', async (t) => {
  const TOTAL = 64 * MiB
  let p: { sent: () => number } | null = null
  const be = await upgradeBackend(t, (_req, socket) => {
    socket.write(SWITCHED)
    p = pump(socket, TOTAL)
  })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ev = ends(proxy)
  const c = rawClient(t, port)
  c.sock.write(UPGRADE('/down'))
  t.ok(await waitFor(() => c.head !== '' && p !== null, 5000), 'the 101')
  c.sock.pause()
  const sent = (): number => (p as unknown as { sent: () => number }).sent()
  // The proxy's backend socket is the one piped into its client socket: the backend's peer.
  let peak = 0
  const proxyBackend = (): Socket | null => {
    for (const h of (process as unknown as { _getActiveHandles: () => unknown[] })._getActiveHandles()) {
      const s = h as Socket
      if (s.remotePort === Number(be.address.split(':')[1]) && s.localPort !== undefined) return s
    }
    return null
  }
  const pb = proxyBackend()
  t.ok(pb !== null, 'found the proxy\'s backend socket')
  t.ok(await heldBack(sent, () => { peak = Math.max(peak, held(pb as Socket)) }), 'the backend is held back')
  t.ok(sent() < TOTAL, `the backend could send ${sent()} of ${TOTAL} bytes`)
  t.ok(peak < BOUND, `the proxy held at most ${peak} bytes (< ${BOUND})`)
  c.sock.resume()
  t.ok(await waitFor(() => c.body === TOTAL, 60_000), `every byte reached the client (${c.body} of ${TOTAL})`)
  be.sockets[0].destroy()
  c.sock.destroy()
  t.ok(await waitFor(() => ev.length === 1, 5000))
})

t.test('tunnel bytes in the same packet as the 101 reach the client, first, and are counted', async (t) => {
  const be = await rawBackend(t, (s) => {
    s.once('data', () => { s.resume(); s.write(`${SWITCHED}first bytes`) })
  })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ev = ends(proxy)
  const c = rawClient(t, port)
  c.sock.write(UPGRADE('/same'))
  t.ok(await waitFor(() => c.bodyText === 'first bytes', 5000), `after the 101: ${JSON.stringify(c.bodyText)}`)
  t.match(c.head, /^HTTP\/1\.1 101 /)
  be.sockets[0].write(' and more')
  t.ok(await waitFor(() => c.bodyText === 'first bytes and more', 5000), 'the tunnel goes on')
  be.sockets[0].end()
  c.sock.end()
  t.ok(await waitFor(() => ev.length === 1, 5000))
  t.match(ev[0], { status: 101, error: null, bytesOut: 'first bytes and more'.length })
})

t.test('a client that sends 4 MiB before the 101: all of it reaches the backend after the 101, in order', async (t) => {
  const TOTAL = 4 * MiB
  let got = 0
  let bad = -1
  const be = await upgradeBackend(t, (_req, socket, head) => {
    const seen = (d: Buffer): void => {
      for (let i = 0; i < d.length; i++) if (bad < 0 && d[i] !== (got + i) % 251) bad = got + i
      got += d.length
    }
    seen(head)
    socket.pause()
    // Late: the client has long filled the proxy's early buffer (64 KiB) and been paused.
    setTimeout(() => { socket.write(SWITCHED); socket.on('data', seen); socket.resume() }, 300)
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const c = rawClient(t, port)
  const body = Buffer.alloc(TOTAL)
  for (let i = 0; i < TOTAL; i++) body[i] = i % 251
  c.sock.write(UPGRADE('/early'))
  c.sock.write(body)
  t.ok(await waitFor(() => got === TOTAL, 30_000), `every byte reached the backend (${got} of ${TOTAL})`)
  t.equal(bad, -1, 'in order')
  t.match(c.head, /^HTTP\/1\.1 101 /)
  be.sockets[0].destroy()
  c.sock.destroy()
})

t.test('a 101 to a request that asked for no upgrade: 502, no tunnel, the route still serves', async (t) => {
  const cases: Array<[string, string]> = [
    [SWITCHED, 'ERR_BAD_RESPONSE'],
    [`${SWITCHED}tunnel bytes`, 'ERR_BAD_RESPONSE'],
    // Without Upgrade undici would trip over its own assertion (assert(upgrade)): the HTTP
    // adapter refuses any 101 to a plain request first (test/component/bare-101-plain-request.test.ts).
    ['HTTP/1.1 101 Switching Protocols\r\n\r\n', 'ERR_BAD_RESPONSE'],
  ]
  for (const [answer, code] of cases) {
    let answered = 0
    const be = await rawBackend(t, (s) => {
      s.once('data', (d: Buffer) => {
        s.resume()
        if (d.toString('latin1').startsWith('GET /ok')) s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok')
        else { answered++; s.write(answer) }
      })
    })
    const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: 3000 } }] })
    const ev = ends(proxy)
    const r = await get(`${url}/plain`)
    t.equal(r.status, 502, `${JSON.stringify(answer)}: 502`)
    t.equal(answered, 1, 'asked once, not replayed')
    t.match(r.body.toString(), code)
    t.ok(await waitFor(() => ev.length === 1, 5000))
    t.match(ev[0], { status: 502, error: code })
    t.equal((await get(`${url}/ok`)).status, 200, 'the route still serves')
  }
})

t.test('an h2c Upgrade GET (no body) to an http route goes to the backend as an upgrade, without HTTP2-Settings; its plain answer comes back', async (t) => {
  const seen: IncomingMessage['headers'][] = []
  const be = createServer((req, res) => { seen.push(req.headers); res.end('plain h1') })
  const bePort = await listen(be, t)
  t.teardown(() => closeServer(be))
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [`127.0.0.1:${bePort}`] }] })
  const ev = ends(proxy)
  const c = rawClient(t, port)
  c.sock.write('GET /h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n')
  t.ok(await waitFor(() => c.fin, 5000), 'the answer ends with the connection')
  c.sock.end()
  t.match(c.head, /^HTTP\/1\.1 200 OK\r\n/)
  t.match(c.head, /\r\nconnection: close\r\n/i)
  t.equal(c.bodyText, 'plain h1')
  t.equal(seen.length, 1)
  t.equal(seen[0].upgrade, 'h2c', 'the backend is asked for the upgrade')
  t.equal(seen[0]['http2-settings'], undefined, 'but without HTTP2-Settings (named in Connection: hop-by-hop), so an HTTP/2 server must not upgrade (RFC 7540 §3.2.1)')
  t.ok(await waitFor(() => ev.length === 1, 5000))
  t.match(ev[0], { status: 200, error: null })
})
