import t from 'tap'
import { createHash } from 'node:crypto'
import { PassThrough } from 'node:stream'
import { request } from 'node:http'
import { proxyServer } from '../helpers/servers.js'
import { scgiAdapter } from '../../src/protocols/scgi/index.js'
import { alive, processGroup, waitFor } from '../helpers/leaks.js'
import { assertNoLeaks, leakBaseline } from '../cgi-shared/leak-check.js'
import { headerMap, makeExchange, recorder, testContext, unixEndpoint, type ExchangeInit, type Recorded } from './harness.js'
import { ECHO_APP, startUwsgi, uwsgiSkip } from './uwsgi-peer.js'

const baseline = leakBaseline()
const skip = uwsgiSkip()

t.test('SCGI against real uWSGI (--scgi-socket)', { skip }, async (t) => {
  const peer = await startUwsgi('scgi')
  const client = scgiAdapter.createClient(unixEndpoint(peer.socketPath), scgiAdapter.parseOptions(undefined, '/o'), testContext())
  t.teardown(async () => { client.destroy(); await peer.stop() }) // safety net if a subtest threw

  const env = (over: Record<string, string> = {}): Record<string, string> => ({
    GATEWAY_INTERFACE: 'CGI/1.1', SERVER_PROTOCOL: 'HTTP/1.1', SERVER_NAME: 'h.example', SERVER_PORT: '8080',
    REQUEST_METHOD: 'GET', REQUEST_URI: '/app/x', SCRIPT_NAME: '/app', PATH_INFO: '/x', QUERY_STRING: '',
    REMOTE_ADDR: '127.0.0.1', REMOTE_PORT: '50000', HTTP_HOST: 'h.example:8080', ...over
  })
  async function go (init: ExchangeInit): Promise<Recorded> {
    const { handler, finished } = recorder()
    client.dispatch(makeExchange(init), handler)
    return await finished
  }

  await t.test('GET: the WSGI environ carries the CGI variables', async (t) => {
    const rec = await go({ env: env({ QUERY_STRING: 'a=1&b=%20', PATH_INFO: '/é x', HTTP_X_TEST: 'v' }) })
    t.equal(rec.status, 200)
    t.equal(rec.statusText, 'Whatever')
    t.equal(headerMap(rec.headers)['x-echo'], 'yes')
    const out = JSON.parse(rec.body.toString()) as { env: Record<string, string>, body_len: number }
    t.match(out.env, { REQUEST_METHOD: 'GET', SCRIPT_NAME: '/app', QUERY_STRING: 'a=1&b=%20', HTTP_X_TEST: 'v', CONTENT_LENGTH: '0', SCGI: '1' })
    // PEP 3333: environ strings are latin1-decoded bytes; the UTF-8 wire bytes come back intact.
    t.equal(Buffer.from(out.env.PATH_INFO, 'latin1').toString('utf8'), '/é x')
    t.equal(out.body_len, 0)
    t.ok(rec.ended)
  })

  await t.test('POST: a 3 MiB streamed body arrives byte-exact', async (t) => {
    const total = 3 << 20
    const src = new PassThrough()
    const hash = createHash('sha256')
    const p = go({ method: 'POST', env: env({ REQUEST_METHOD: 'POST', CONTENT_TYPE: 'application/octet-stream' }), body: src, contentLength: total })
    for (let off = 0; off < total; off += 65536) {
      const c = Buffer.alloc(65536, (off >> 16) & 0xff)
      hash.update(c)
      if (!src.write(c)) await new Promise((resolve) => src.once('drain', resolve))
    }
    src.end()
    const rec = await p
    const out = JSON.parse(rec.body.toString()) as { env: Record<string, string>, body_len: number, body_sha256: string }
    t.equal(out.env.CONTENT_LENGTH, String(total))
    t.equal(out.body_len, total)
    t.equal(out.body_sha256, hash.digest('hex'))
  })

  await t.test('status from the app passes through', async (t) => {
    const rec = await go({ env: env({ QUERY_STRING: 'status=404' }) })
    t.equal(rec.status, 404)
    t.ok(rec.ended)
  })

  await t.test('a 5 MiB response streams with its Content-Length', async (t) => {
    const rec = await go({ env: env({ QUERY_STRING: `big=${5 << 20}` }) })
    t.equal(rec.status, 200)
    t.equal(headerMap(rec.headers)['content-length'], String(5 << 20))
    t.equal(rec.body.length, 5 << 20)
    t.ok(rec.ended)
  })

  await t.test('concurrent exchanges each get their own answer', async (t) => {
    const recs = await Promise.all(Array.from({ length: 8 }, (_, i) => go({ env: env({ HTTP_X_N: String(i) }) })))
    recs.forEach((rec, i) => t.equal((JSON.parse(rec.body.toString()) as { env: Record<string, string> }).env.HTTP_X_N, String(i)))
    t.equal(client.inflight, 0)
  })

  await t.test('killing the backend mid-flight is a 502-class error, not a hang', async (t) => {
    const { handler, finished } = recorder()
    const src = new PassThrough()
    client.dispatch(makeExchange({ method: 'POST', env: env(), body: src, contentLength: 10 }), handler)
    src.write('abc')
    t.ok(await waitFor(() => client.inflight === 1))
    await peer.stop()
    const rec = await finished
    t.equal(rec.error?.status, 502)
    t.notOk(alive(peer.pid))
    t.ok(await waitFor(() => processGroup(peer.pid).every((p) => p.state === 'Z')), 'the whole uWSGI group is gone, workers too')
    src.destroy()
    await client.close()
  })
})

t.test('SCGI through createProxy: chunked upload is spooled, env built by the core', { skip }, async (t) => {
  const peer = await startUwsgi('scgi')
  t.teardown(() => peer.stop()) // teardowns run last-first: after the proxy below has closed
  const { port } = await proxyServer(t, {
    routes: [{ match: { prefix: '/app/' }, protocol: 'scgi', backends: [`unix:${peer.socketPath}`], scriptFilename: ECHO_APP }]
  } as Parameters<typeof proxyServer>[1])
  const hash = createHash('sha256')
  const res = await new Promise<{ status: number, body: string }>((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', method: 'POST', path: '/app/x/%C3%A9?k=v', headers: { 'transfer-encoding': 'chunked', 'x_evil': '1', 'x-good': '2' } }, (r) => {
      let body = ''
      r.setEncoding('utf8')
      r.on('data', (c: string) => { body += c })
      r.on('end', () => resolve({ status: r.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    for (let i = 0; i < 40; i++) {
      const c = Buffer.alloc(8192, i)
      hash.update(c)
      req.write(c)
    }
    req.end()
  })
  t.equal(res.status, 200)
  const out = JSON.parse(res.body) as { env: Record<string, string>, body_len: number, body_sha256: string }
  t.match(out.env, { SCRIPT_NAME: '/app', QUERY_STRING: 'k=v', CONTENT_LENGTH: String(40 * 8192), HTTP_X_GOOD: '2', SCGI: '1' })
  t.equal(Buffer.from(out.env.PATH_INFO, 'latin1').toString('utf8'), '/x/é')
  t.notOk('HTTP_X_EVIL' in out.env, 'underscore header dropped')
  t.equal(out.body_sha256, hash.digest('hex'), 'spooled chunked body arrives byte-exact')
})

t.test('no leaked fd or child', (t) => assertNoLeaks(t, baseline))
