/**
 * A 426 Upgrade Required keeps its Upgrade field (RFC 9110 §15.5.22: "The server MUST send an
 * Upgrade header field in a 426 response to indicate the required protocol(s)"), as nginx passes it
 * to an HTTP/1.1 client (its proxy_connection_headers.t, 'upgrade in 426'). It used to be stripped as
 * hop-by-hop, as on every status but 101. Any other status still loses it, a 101 keeps it as before,
 * and a 426 to an Upgrade request is still no tunnel. A CGI script's head goes through the same
 * filter (exchange.ts), so a script printing `Status: 426` keeps its Upgrade too.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, get, proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

t.test('an HTTP backend\'s 426 keeps Upgrade; a 200\'s Upgrade is still dropped', async (t) => {
  let requests = 0
  const be = await backend(t, (req, res) => {
    requests++
    if (req.url === '/426') {
      res.writeHead(426, { Upgrade: 'TLS/1.2, HTTP/1.1', Connection: 'Upgrade' })
      res.end('use TLS')
    } else if (req.url === '/426-listed') {
      // Upgrade also listed in Connection with another option: still the 426's own field.
      res.writeHead(426, { Upgrade: 'h2c', Connection: 'Upgrade, X-Private', 'X-Private': 'secret' })
      res.end()
    } else {
      res.writeHead(200, { Upgrade: 'h2c', Connection: 'Upgrade' })
      res.end('ok')
    }
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const r = await get(`http://127.0.0.1:${port}/426`)
  t.equal(r.status, 426)
  t.equal(r.headers.upgrade, 'TLS/1.2, HTTP/1.1', 'the 426 names the protocols to switch to')
  t.equal(r.body.toString(), 'use TLS')
  const listed = await get(`http://127.0.0.1:${port}/426-listed`)
  t.equal(listed.status, 426)
  t.equal(listed.headers.upgrade, 'h2c')
  t.equal(listed.headers['x-private'], undefined, 'a Connection-listed field other than Upgrade is still dropped')
  const ok = await get(`http://127.0.0.1:${port}/200`)
  t.equal(ok.status, 200)
  t.equal(ok.headers.upgrade, undefined, 'a 200 loses Upgrade, as before')
  t.equal(requests, 3)
})

t.test('a 426 to a WebSocket Upgrade request keeps Upgrade, and is no tunnel', async (t) => {
  const paths: string[] = []
  // No 'upgrade' listener: node:http hands the Upgrade request to the request handler.
  const be = await backend(t, (req, res) => {
    paths.push(req.url ?? '')
    res.writeHead(426, { Upgrade: 'websocket', Connection: 'Upgrade', 'Content-Length': '0' })
    res.end()
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const answer = await rawRequest(port, 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nGET /private HTTP/1.1\r\nHost: a\r\n\r\n')
  t.match(answer, /^HTTP\/1\.1 426 /, answer.slice(0, 40))
  t.match(answer, /^upgrade: websocket\r$/im, 'the 426 names the protocol')
  t.notMatch(answer, /HTTP\/1\.1 101/, 'no switch')
  t.same(paths, ['/ws'], 'the pipelined bytes never reached the backend as a tunnel')
})

// The CGI-family head parser (src/core/cgi/response-head.ts) leaves Upgrade to the filter, which
// drops it on any status but 101 and 426, and its Connection-listed drop spares a 426's Upgrade.
t.test('a CGI script\'s Status: 426 keeps its Upgrade; its 200 loses it', async (t) => {
  const docroot = mkdtempSync(join(tmpdir(), 'pc-audit37-426-'))
  t.teardown(() => rmSync(docroot, { recursive: true, force: true }))
  writeFileSync(join(docroot, 'up.sh'), "#!/bin/sh\nprintf 'Status: 426 Upgrade Required\\nUpgrade: TLS/1.2\\nConnection: Upgrade\\nContent-Type: text/plain\\n\\nupgrade\\n'\n", { mode: 0o755 })
  writeFileSync(join(docroot, 'ok.sh'), "#!/bin/sh\nprintf 'Upgrade: TLS/1.2\\nContent-Type: text/plain\\n\\nok\\n'\n", { mode: 0o755 })
  const { port } = await proxyServer(t, { spawns: { cgi: { socketType: 'pipe' } }, routes: [{ protocol: 'cgi', spawn: 'cgi', docroot }] })
  const r = await get(`http://127.0.0.1:${port}/up.sh`)
  t.equal(r.status, 426)
  t.equal(r.headers.upgrade, 'TLS/1.2')
  t.equal(r.body.toString(), 'upgrade\n')
  const ok = await get(`http://127.0.0.1:${port}/ok.sh`)
  t.equal(ok.status, 200)
  t.equal(ok.headers.upgrade, undefined)
})
