/**
 * An Upgrade request sent on a reused keep-alive connection that the backend closes as the request
 * arrives (the keep-alive race a plain bodiless GET is replayed for, exchange.ts replay) is sent
 * once more on a fresh connection: the client gets the backend's 101, not a 502
 * ERR_BACKEND_CLOSED. A raw TCP fake closes the kept-alive connection exactly when the Upgrade
 * arrives (a real server's keep-alive timeout cannot be made to fire at that instant); a fresh
 * connection that fails so is a real failure, not replayed.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

const UPGRADE = (path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n` +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'

/** Sends an Upgrade to the proxy; resolves with the head the client got and, after a 101, what `ping` echoes back. */
function upgradeThrough (port: number, path: string): Promise<{ head: string, echo: string }> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect(port, '127.0.0.1')
    let buf = ''
    let head: string | null = null
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`no answer: ${JSON.stringify(buf)}`)) }, 20_000)
    s.on('error', (err) => { clearTimeout(timer); reject(err) })
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1')
      if (head === null) {
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        head = buf.slice(0, end)
        buf = buf.slice(end + 4)
        if (!head.startsWith('HTTP/1.1 101')) return
        s.write('ping')
      }
      if (head.startsWith('HTTP/1.1 101') && buf.length >= 4) { clearTimeout(timer); s.destroy(); resolve({ head, echo: buf }) }
    })
    s.on('end', () => { clearTimeout(timer); s.destroy(); resolve({ head: head ?? buf, echo: buf }) })
    s.write(UPGRADE(path))
  })
}

/**
 * A raw keep-alive backend: a plain request gets a 200 kept alive; an Upgrade on a connection
 * that already answered one is met by `race` (the backend closing it); an Upgrade on a fresh
 * connection gets a 101 and then echoes.
 */
async function racingBackend (t: Parameters<typeof rawBackend>[0], race: (s: Socket) => void) {
  let raced = 0
  const be = await rawBackend(t, (s) => {
    let answered = 0
    let buf = ''
    const onData = (d: Buffer): void => {
      buf += d.toString('latin1')
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      const head = buf.slice(0, end)
      buf = buf.slice(end + 4)
      if (!/\r\nupgrade:/i.test(head)) {
        answered++
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=60\r\n\r\nok')
        return
      }
      if (answered > 0) { raced++; race(s); return }
      s.off('data', onData)
      s.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n')
      s.on('data', (x: Buffer) => s.write(x))
    }
    s.on('data', onData)
  })
  return { ...be, raced: () => raced }
}

for (const [name, race] of [['a FIN', (s: Socket) => { s.end() }], ['a reset', (s: Socket) => { s.resetAndDestroy() }]] as const) {
  t.test(`the backend closes a kept-alive connection (${name}) as the Upgrade arrives: replayed on a fresh one, 101`, async (t) => {
    const be = await racingBackend(t, race)
    const { port, url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
    const ends: RequestEndEvent[] = []
    proxy.events.on('request:end', (e) => ends.push(e))
    const plain = await get(`${url}/plain`)
    t.equal(`${plain.status} ${plain.body.toString()}`, '200 ok', 'the plain request leaves its connection kept alive')
    const r = await upgradeThrough(port, '/ws')
    t.match(r.head, /^HTTP\/1\.1 101 /, 'the client gets the 101', { head: r.head })
    t.equal(r.echo, 'ping', 'the tunnel carries bytes')
    t.equal(be.raced(), 1, 'the Upgrade met the closing connection once')
    t.equal(be.sockets.length, 2, 'and went once more, on a fresh connection')
    t.ok(await waitFor(() => ends.length === 2), 'request:end')
    t.match(ends[1], { url: '/ws', status: 101, error: null })
    t.equal(proxy.routes[0].pool.backends[0].state, 'up')
  })
}

t.test('a fresh connection closed at the Upgrade is not replayed: 502 ERR_BACKEND_CLOSED', async (t) => {
  const be = await rawBackend(t, (s) => { s.once('data', () => { s.end() }) })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
  const r = await upgradeThrough(port, '/ws')
  t.match(r.head, /^HTTP\/1\.1 502 /, 'a 502')
  t.match(r.echo, /ERR_BACKEND_CLOSED/)
  t.equal(be.sockets.length, 1, 'one connection: the Upgrade went once')
  t.equal(proxy.routes[0].pool.backends[0].attemptFails, 1, 'passive health counted one failed attempt')
})
