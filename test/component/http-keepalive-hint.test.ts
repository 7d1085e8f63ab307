/**
 * HTTP adapter keep-alive with backends that announce a short idle timeout. node:http sends
 * `Keep-Alive: timeout=N` (N = its `keepAliveTimeout` in whole seconds); undici gives an idle
 * connection up 2 s before that by default, which for N of 1 or 2 is never reused at all: one
 * connection per request, TIME_WAIT piling up. The adapter keeps half a second of margin instead,
 * so back-to-back requests share one connection whatever the backend announces.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

for (const keepAliveTimeout of [1000, 2500, 5000]) {
  t.test(`a node:http backend with keepAliveTimeout ${keepAliveTimeout} ms: back-to-back requests reuse one connection`, async (t) => {
    const sockets = new Set<Socket>()
    const be = await backend(t, (req, res) => { sockets.add(req.socket); res.end('ok') })
    be.server.keepAliveTimeout = keepAliveTimeout
    const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
    const N = 10
    const statuses: number[] = []
    for (let i = 0; i < N; i++) statuses.push((await get(`${url}/${i}`)).status)
    t.same(statuses, Array(N).fill(200))
    // One connection (each request follows the last by far less than the 0.5 s margin); room for
    // a loaded machine's stall. Without the margin it is one connection per request.
    t.ok(sockets.size <= 3, `${N} requests, ${sockets.size} backend connection(s), not one each`)
  })
}
