/**
 * RFC 9110 §4.2.1: "A sender MUST NOT generate an "http" URI with an empty host identifier. A
 * recipient that processes such a URI reference MUST reject it as invalid." An absolute-form
 * target with an empty host (`http:///x`, `http://:80/x`) and a Host with a port but no host
 * (`Host: :80`) are 400 ERR_BAD_REQUEST, never forwarded. A Host left empty as a whole is still a
 * target without authority (RFC 9112 §3.2), and HTTP/1.0 without Host is still served.
 */
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

t.test('an empty host in the target or before a port is a 400; an empty Host is not', async (t) => {
  let reached = 0
  const b = await backend(t, (_req, res) => { reached++; res.end('ok') })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [b.address] }] })
  const status = async (head: string): Promise<string> => {
    const out = await rawRequest(port, head)
    return out.slice(9, 12)
  }
  const bad = [
    'GET http:///x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n',
    'GET http://:80/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n',
    'GET /x HTTP/1.1\r\nHost: :80\r\nConnection: close\r\n\r\n',
    'GET /x HTTP/1.1\r\nHost: :\r\nConnection: close\r\n\r\n',
  ]
  for (const head of bad) t.equal(await status(head), '400', JSON.stringify(head.slice(0, head.indexOf('\r\nConnection'))))
  t.equal(reached, 0, 'none reached the backend')
  t.equal(await status('GET /x HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n'), '200', 'an empty Host: no authority, served')
  t.equal(await status('GET /x HTTP/1.0\r\n\r\n'), '200', 'HTTP/1.0 without Host: served')
  t.equal(await status('GET http://a.example:80/x HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n'), '200', 'a real authority: served')
  t.equal(reached, 3)
})
