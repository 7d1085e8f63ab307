/**
 * HTTP adapter audit (round 36): response status lines undici gets wrong on its own.
 * - A status under 100 (`099`, `000`; llhttp takes any three digits): undici took it for a 1xx and
 *   failed an assertion, mapped to ERR_PROTOCOL ("not HTTP at all"). Now ERR_BAD_RESPONSE, as a
 *   600 is. node:http cannot send such a status (writeHead throws): a raw fake writes it.
 */
import t from 'tap'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

for (const status of ['099', '000']) {
  t.test(`status ${status}: 502 ERR_BAD_RESPONSE, not ERR_PROTOCOL`, async (t) => {
    const be = await rawBackend(t, (s) => { s.once('data', () => { s.end(`HTTP/1.1 ${status} Odd\r\nContent-Length: 2\r\n\r\nok`) }) })
    const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
    const ends: Array<string | null> = []
    proxy.events.on('request:end', (e) => ends.push(e.error))
    const r = await get(`${url}/`)
    t.equal(r.status, 502)
    t.match(r.body.toString(), 'ERR_BAD_RESPONSE', 'the 502 names ERR_BAD_RESPONSE')
    t.ok(await waitFor(() => ends.length === 1, 10_000), 'request:end')
    t.same(ends, ['ERR_BAD_RESPONSE'], 'request:end carries ERR_BAD_RESPONSE')
  })
}
