/**
 * Request framing behind a lenient front server. node's strict parser 400s
 * `Content-Length` + `Transfer-Encoding` itself; a host that made its server with
 * `insecureHTTPParser: true` hands such a request over, and proxycore must still refuse it rather
 * than send the client's Content-Length in front of a de-chunked body of another length.
 */
import t from 'tap'
import { createServer } from 'node:http'
import { createProxy, silentLogger } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { closeServer, listen, rawBackend, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

t.test('Content-Length + Transfer-Encoding is a 400 even when the front parser let it through', async (t) => {
  const received: string[] = []
  const be = await rawBackend(t, (s) => {
    s.on('data', (d: Buffer) => {
      received.push(d.toString('latin1'))
      if (d.includes('\r\n\r\n')) s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
    })
  })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: [be.address] }] })
  const codes: Array<string | null> = []
  proxy.events.on('request:end', (e) => { codes.push(e.error) })
  const server = createServer({ insecureHTTPParser: true }, proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })

  for (const order of [
    'Content-Length: 4\r\nTransfer-Encoding: chunked\r\n',
    'Transfer-Encoding: chunked\r\nContent-Length: 4\r\n',
  ]) {
    received.length = 0
    codes.length = 0
    // Pipelined: a second request must not be read as part of the first one's body.
    const out = await rawRequest(port, `POST /x HTTP/1.1\r\nHost: a\r\n${order}\r\n3\r\nabc\r\n0\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n`)
    t.match(out, /^HTTP\/1\.1 400 Bad Request\r\n/, `${JSON.stringify(order)}: 400`)
    t.match(out, /ERR_BAD_REQUEST\n$/, 'stable code, and nothing after it: the connection is closed')
    t.match(out, /\r\nConnection: close\r\n/i)
    t.same(received, [], 'no byte of it reached the backend')
    // (The pipelined GET, if node parsed it before the close, ends as ERR_CLIENT_ABORTED unsent.)
    t.equal(codes[0], 'ERR_BAD_REQUEST')
  }

  // A plain chunked request still goes through.
  received.length = 0
  const ok = await rawRequest(port, 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n')
  t.match(ok, /^HTTP\/1\.1 200 OK\r\n/)
  const seen = received.join('')
  t.notMatch(seen, /content-length/i, 'no Content-Length to the backend for a chunked upload')
  t.match(seen, /abc/)
})
