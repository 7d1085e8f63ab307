/**
 * A client that pauses inside its upload, longer than `timeouts.headers` but shorter than
 * `clientIdle`, is the client's pause, not a late backend: the backend read everything it was sent
 * and waits for the rest. It got 504 ERR_HEADERS_TIMEOUT, a failed attempt against a healthy
 * backend; the pause is clientIdle's (408 ERR_REQUEST_TIMEOUT past it) and minUploadRate's, as
 * nginx's client_body_timeout. A backend that stops reading (the proxy holding the client back)
 * is still timed by `headers` (test/component/http-front.test.ts).
 */
import t from 'tap'
import { request } from 'node:http'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer } from '../helpers/servers.js'
import { captureLogger } from '../cgi/harness.js'

t.test('a 1.5 s pause mid-upload under headers 300 ms, clientIdle 10 s: 200, nothing logged against the backend', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (req, res) => {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => { res.end(`got ${n}`) })
  })
  const { logger, lines } = captureLogger()
  const { url } = await proxyServer(t, { logger, routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: '300ms', clientIdle: '10s' } }] })
  const got = await new Promise<string>((resolve, reject) => {
    const req = request(`${url}/up`, { method: 'POST', headers: { 'content-length': 2000 }, agent: false }, (res) => {
      let b = ''
      res.on('data', (c: Buffer) => { b += c.toString() })
      res.on('end', () => resolve(`${res.statusCode} ${b.trim()}`))
    })
    req.on('error', reject)
    req.write(Buffer.alloc(1000, 97))
    // The pause: five times the headers timeout. The second half is sent on a timer because the
    // pause is the case itself (the client's own pace), not a wait for something to happen.
    setTimeout(() => { req.end(Buffer.alloc(1000, 98)) }, 1500)
  })
  t.equal(got, '200 got 2000', 'the whole body reached the backend, and its answer the client')
  t.same(lines.filter((l) => l.obj.code !== undefined).map((l) => l.obj.code), [], 'no timeout logged')
})
