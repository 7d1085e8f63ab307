/**
 * A `101 Switching Protocols` to a request that did not ask to upgrade (no Upgrade field): RFC 9110
 * §15.2.2 lets a server switch only to a protocol the client asked for, so the answer is invalid:
 * 502 ERR_BAD_RESPONSE, as any malformed backend response, never a tunnel and never a hang. A raw
 * TCP fake writes it (no real backend does). A 101 to an Upgrade request that names no protocol:
 * test/component/http-upgrade-refusals.test.ts.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

const answers: Array<{ name: string, head: string }> = [
  { name: 'a bare 101', head: 'HTTP/1.1 101 Switching Protocols\r\n\r\n' },
  { name: 'a 101 naming a protocol nobody asked for', head: 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n' },
  { name: 'a bare 101 followed by a 200', head: 'HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok' },
]

for (const a of answers) {
  for (const method of ['GET', 'POST']) {
    t.test(`${a.name} to a plain ${method}: 502 ERR_BAD_RESPONSE, the backend connection closed`, async (t) => {
      const be = await rawBackend(t, (s: Socket) => s.once('data', () => s.write(a.head)))
      const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
      const ends: RequestEndEvent[] = []
      proxy.events.on('request:end', (e) => ends.push(e))
      const res = await get(`${url}/x`, method === 'POST' ? { method, body: 'hello' } : {})
      t.equal(res.status, 502, 'the client gets 502')
      t.match(res.body.toString(), /ERR_BAD_RESPONSE/, 'the code in the body')
      t.ok(await waitFor(() => ends.length === 1), 'request:end')
      t.match(ends, [{ status: 502, error: 'ERR_BAD_RESPONSE' }], 'request:end names ERR_BAD_RESPONSE')
      t.ok(await waitFor(() => be.sockets[0]?.destroyed === true, 5000), 'the connection that carried the 101 is closed')
    })
  }
}
