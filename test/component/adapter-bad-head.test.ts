/**
 * A custom adapter (the public adapter API) that hands the core a head node:http refuses to write:
 * a control character in the reason phrase or in a field value. The client gets a 502 page with
 * node's own phrase. Before, writeHead kept the refused phrase and the 502 page's writeHead
 * reused it and threw again: the client got nothing and hung; a bad field under a good phrase gave
 * "502 OK".
 */
import t from 'tap'
import { scriptedAdapter } from '../helpers/adapters.js'
import { guardLeaks } from '../helpers/leaks.js'
import { proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

const badHeads = scriptedAdapter('bad-heads', (ex, h, done) => {
  done()
  if (ex.path === '/reason') h.onHead(200, ['content-length', '2'], { resume () {} }, 'O\u0001K')
  else h.onHead(200, ['x-bad', 'a\u0001b', 'content-length', '2'], { resume () {} }, 'OK')
  h.onData(Buffer.from('ok'))
  h.onEnd()
})

for (const path of ['/reason', '/field']) {
  t.test(`an adapter's head node:http refuses (${path.slice(1)}): 502 ERR_BAD_RESPONSE_HEADER, with node's phrase`, async (t) => {
    const { port } = await proxyServer(t, { adapters: [badHeads], routes: [{ protocol: 'bad-heads', backends: ['127.0.0.1:9'] }] })
    const r = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    t.match(r, /^HTTP\/1\.1 502 Bad Gateway\r\n/, 'a 502 with node\'s own reason phrase')
    t.match(r, /ERR_BAD_RESPONSE_HEADER/, 'the error page names the code')
    t.notMatch(r, /\x01/, 'no control character reached the client')
  })
}
