/**
 * `request:end` carries node's HTTP version, Referer and User-Agent of the request, on the three
 * paths that emit it: an exchange, an upgrade (a tunnel through an http route) and a request the
 * proxy refuses itself (404, no route). A request node's parser refused has none of them.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import { type RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'

t.test('version, referer and user agent on every request:end', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => { res.end('hello') })
  const sockets: Socket[] = []
  // A tunnel that ends at once: the backend answers 101 and closes.
  be.server.on('upgrade', (_req, socket: Socket) => { sockets.push(socket); socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n') })
  const { proxy, server, port } = await proxyServer(t, {
    routes: [{ name: 'api', match: { prefix: '/api/' }, protocol: 'http', backends: [be.address] }],
  })
  server.on('clientError', proxy.clientError)
  const ends: RequestEndEvent[] = []
  const onEnd = (e: RequestEndEvent): void => { ends.push(e) }
  proxy.events.on('request:end', onEnd)
  t.teardown(() => { proxy.events.off('request:end', onEnd) })

  t.match(await rawRequest(port, 'GET /api/x HTTP/1.0\r\nHost: h\r\nReferer: http://r/1\r\nUser-Agent: ua/1.0\r\n\r\n'), /^HTTP\/1\.1 200 /)
  t.match(await rawRequest(port, 'GET /nowhere HTTP/1.0\r\nHost: h\r\nReferer: http://r/2\r\nUser-Agent: ua/2\r\n\r\n'), /^HTTP\/1\.1 404 /)
  t.match(await rawRequest(port, 'GET /api/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nUser-Agent: ua/3\r\n\r\n'), /^HTTP\/1\.1 101 /)
  t.match(await rawRequest(port, 'GET /api/none HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 /)
  t.match(await rawRequest(port, 'GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400 /)
  await waitFor(() => ends.length >= 5, 10_000)
  const pick = (e: RequestEndEvent): unknown[] => [e.url, e.status, e.httpVersion, e.referer, e.userAgent]
  // The tunnel's end may come after the next request's: compare as a set.
  t.same(ends.map(pick).sort((a, b) => String(a[0]).localeCompare(String(b[0]))), [
    ['', 400, undefined, undefined, undefined],
    ['/api/none', 200, '1.1', undefined, undefined],
    ['/api/ws', 101, '1.1', undefined, 'ua/3'],
    ['/api/x', 200, '1.0', 'http://r/1', 'ua/1.0'],
    ['/nowhere', 404, '1.0', 'http://r/2', 'ua/2'],
  ])
  for (const s of sockets) s.destroy()
})
