/**
 * X-Sendfile from an HTTP backend: the file's response carries the backend's fields filtered as for
 * any response (hop-by-hop and Connection-listed ones dropped), never the backend's framing.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

t.test('hop-by-hop fields of an X-Sendfile answer are dropped', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pc-sendfile-h-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  writeFileSync(join(root, 'f.txt'), 'file body')
  const be = await backend(t, (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'X-Sendfile': join(root, 'f.txt'), Connection: 'keep-alive, X-Hop', 'X-Hop': 'secret', 'Keep-Alive': 'timeout=1', 'X-Kept': 'yes' })
    res.end('backend body')
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], xSendfile: { allow: [root] } }] })
  const r = await rawRequest(port, 'GET /dl HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 200 [^]*\r\n\r\nfile body$/, 'the file, not the backend body')
  const head = r.slice(0, r.indexOf('\r\n\r\n'))
  t.match(head, /x-kept: yes/i)
  t.notMatch(head, /x-hop|keep-alive: timeout|x-sendfile/i, 'Connection-listed, Keep-Alive and X-Sendfile fields dropped')
})

t.test('X-Sendfile on a 204 or 304: no body, and a 204 without Content-Length (RFC 9110 §8.6)', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pc-sendfile-nb-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  writeFileSync(join(root, 'f.txt'), 'file body')
  const be = await backend(t, (req, res) => {
    res.writeHead(req.url === '/204' ? 204 : 304, { 'X-Sendfile': join(root, 'f.txt'), ETag: '"v1"' })
    res.end()
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], xSendfile: { allow: [root] } }] })
  // Two requests on one connection: a body sent after either head would be read as the next response.
  const r = await rawRequest(port, 'GET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /304 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  const [first, second, rest] = r.split('\r\n\r\n')
  t.match(first, /^HTTP\/1\.1 204 /)
  t.notMatch(first, /content-length/i, 'a 204 carries no Content-Length')
  t.match(second, /^HTTP\/1\.1 304 /, 'the next response follows the 204 head directly')
  t.match(second, /etag: "v1"/i)
  t.equal(rest, '', 'no body after the 304 either')
})
