/**
 * The HTTP keep-alive race (docs/design/architecture.md): a backend closes a reused idle
 * connection just as a request arrives on it. An idempotent request without a body that failed so,
 * before any response byte, is replayed once on a fresh connection — to the same backend if it is
 * the only one: the backend is healthy, so it is no failover, costs none of `retries`, and the pool
 * is not reported down. A raw TCP backend, since a real one cannot be made to lose this race on cue.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import type { BackendStateEvent } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t)

/**
 * Answers the first request of each connection with keep-alive; closes the connection when a
 * second request arrives on it (its idle timeout racing the request). With `closeAll`, every
 * connection after the first is closed on its first request too.
 */
function racer (closeAll = false) {
  let connection = 0
  const seen = { requests: 0 }
  const onSocket = (s: Socket): void => {
    const n = ++connection
    let onThis = 0
    let buf = ''
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1')
      while (buf.includes('\r\n\r\n')) {
        buf = buf.slice(buf.indexOf('\r\n\r\n') + 4)
        seen.requests++
        onThis++
        if (onThis === 1 && (!closeAll || n === 1)) s.write(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=10\r\n\r\n${n}${onThis}`)
        else { s.destroy(); return }
      }
    })
  }
  return { onSocket, seen, connections: () => connection }
}

for (const [backendsOf, retries] of [[1, 2], [1, 0], [2, 0]] as const) {
  t.test(`${backendsOf} backend(s), retries ${retries}: a GET on a connection the backend just closed is replayed on a fresh one`, async (t) => {
    const r = racer()
    const be = await rawBackend(t, r.onSocket)
    const backends = backendsOf === 1 ? [be.address] : [be.address, `localhost:${be.port}`]
    const { proxy, url } = await proxyServer(t, { routes: [{ protocol: 'http', backends, retries, balance: 'sticky' }] })
    const states: BackendStateEvent[] = []
    proxy.events.on('pool:down', (e) => states.push(e))
    proxy.events.on('backend:disabled', (e) => states.push(e))
    const first = await get(`${url}/1`)
    t.equal(first.status, 200)
    const second = await get(`${url}/2`)
    t.equal(second.status, 200, 'the replay got the answer')
    t.equal(second.body.toString(), '21', 'from a fresh connection')
    t.same(states, [], 'no backend disabled, no pool down')
  })
}

t.test('the replay happens once: a second close of the same kind is a failure, not a loop', async (t) => {
  const r = racer(true)
  const be = await rawBackend(t, r.onSocket)
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
  t.equal((await get(`${url}/1`)).status, 200)
  const second = await get(`${url}/2`)
  t.equal(second.status, 502)
  t.match(second.body.toString(), /ERR_BACKEND_(CLOSED|RESET)/)
  t.equal(r.seen.requests, 3, 'the first request, the raced one, and one replay')
})

t.test('a request with a body is not replayed', async (t) => {
  const r = racer()
  const be = await rawBackend(t, r.onSocket)
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 2 }] })
  t.equal((await get(`${url}/1`)).status, 200)
  const second = await get(`${url}/2`, { method: 'POST', body: 'payload' })
  t.equal(second.status, 502, 'the backend may have acted on it: the client decides')
  t.equal(r.seen.requests, 2)
})
