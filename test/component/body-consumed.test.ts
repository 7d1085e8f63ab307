/**
 * A body parser registered before proxy.handler (express.json(), body-parser) has read the
 * request body by the time the proxy gets the request. Forwarded anyway, the backend got an empty
 * body under the client's Content-Length: undici refused it as a 400 ERR_BAD_REQUEST that blamed
 * the client, FastCGI said the client went away (500 ERR_INTERNAL). It is now a 500
 * ERR_BODY_CONSUMED that names the fix, and no backend is asked. A bodiless request whose stream
 * a middleware touched is proxied as usual.
 */
import t from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createProxy, silentLogger } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, closeServer, get, listen } from '../helpers/servers.js'

t.test('a body read by earlier middleware: 500 ERR_BODY_CONSUMED, the backend never asked', async (t) => {
  guardLeaks(t)
  let hits = 0
  const be = await backend(t, (req, res) => { hits++; req.resume(); req.on('end', () => res.end('backend')) })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: [`127.0.0.1:${be.port}`] }] })
  // What express.json() does: read the whole body, then call the next middleware.
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    req.on('end', () => proxy.handler(req, res))
  })
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const url = `http://127.0.0.1:${port}/api`

  const posted = await get(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' })
  t.equal(posted.status, 500, 'a 500: the embedding is wrong, not the client')
  t.match(posted.body.toString(), /ERR_BODY_CONSUMED/)
  const chunked = await get(url, { method: 'POST', headers: { 'transfer-encoding': 'chunked' }, body: 'x'.repeat(10) })
  t.equal(chunked.status, 500, 'chunked too')
  t.match(chunked.body.toString(), /ERR_BODY_CONSUMED/)
  t.equal(hits, 0, 'no backend was asked')

  const got = await get(url)
  t.equal(got.status, 200, 'a GET whose (empty) stream was read is proxied')
  t.equal(got.body.toString(), 'backend')
  const empty = await get(url, { method: 'POST', headers: { 'content-length': '0' } })
  t.equal(empty.status, 200, 'so is a POST with Content-Length: 0')
  t.equal(hits, 2)
})
