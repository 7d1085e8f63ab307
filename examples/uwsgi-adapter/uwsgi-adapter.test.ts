import t from 'tap'
import { createServer, request, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createProxy, silentLogger } from '../../src/index.js'
import { encodeUwsgiVars, uwsgiAdapter } from './adapter.js'
import { assertNoLeaks, leakBaseline } from '../../test/cgi-shared/leak-check.js'
import { headerMap, makeExchange, recorder, testContext, unixEndpoint } from '../../test/scgi/harness.js'
import { ECHO_APP, startUwsgi, uwsgiSkip } from '../../test/scgi/uwsgi-peer.js'

const baseline = leakBaseline()
const skip = uwsgiSkip()

t.test('uwsgi packet golden vector', async (t) => {
  const got = encodeUwsgiVars({ REQUEST_METHOD: 'GET' }, 0)
  const want = Buffer.from([
    0x00, 0x28, 0x00, 0x00, // modifier1 0, datasize 40 LE, modifier2 0
    0x0e, 0x00, ...Buffer.from('REQUEST_METHOD'), 0x03, 0x00, ...Buffer.from('GET'),
    0x0e, 0x00, ...Buffer.from('CONTENT_LENGTH'), 0x01, 0x00, ...Buffer.from('0')
  ])
  t.same(got, want)
  t.throws(() => encodeUwsgiVars({ X: 'a'.repeat(70000) }, 0), { code: 'ERR_BAD_HEADER_VALUE' })
})

t.test('uwsgi adapter against real uWSGI (--socket)', { skip }, async (t) => {
  const peer = await startUwsgi('uwsgi', ECHO_APP)
  t.teardown(() => peer.stop())
  const client = uwsgiAdapter.createClient(unixEndpoint(peer.socketPath), {}, testContext())

  await t.test('direct: GET with environ', async (t) => {
    const { handler, finished } = recorder()
    client.dispatch(makeExchange({ env: { REQUEST_METHOD: 'GET', PATH_INFO: '/x', QUERY_STRING: 'status=201', SERVER_NAME: 'h', SERVER_PORT: '80', SERVER_PROTOCOL: 'HTTP/1.1' } }), handler)
    const rec = await finished
    t.equal(rec.status, 201)
    t.equal(headerMap(rec.headers)['x-echo'], 'yes')
    t.match(JSON.parse(rec.body.toString()), { env: { PATH_INFO: '/x', CONTENT_LENGTH: '0' } })
    await client.close()
  })

  await t.test('through createProxy with { adapters: [uwsgiAdapter] }', async (t) => {
    const proxy = await createProxy({
      logger: silentLogger,
      adapters: [uwsgiAdapter],
      routes: [{ match: { prefix: '/app/' }, protocol: 'uwsgi', backends: [`unix:${peer.socketPath}`], scriptFilename: ECHO_APP }]
    } as Parameters<typeof createProxy>[0])
    const server: Server = createServer(proxy.handler)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.teardown(async () => {
      await new Promise((resolve) => server.close(resolve))
      await proxy.close()
    })
    const port = (server.address() as AddressInfo).port
    const res = await new Promise<{ status: number, body: string }>((resolve, reject) => {
      const req = request({ port, host: '127.0.0.1', method: 'POST', path: '/app/a%20b?q=1', headers: { 'content-type': 'text/plain', 'x-t': 'v', proxy: 'http://evil/' } }, (r) => {
        let body = ''
        r.setEncoding('utf8')
        r.on('data', (c: string) => { body += c })
        r.on('end', () => resolve({ status: r.statusCode ?? 0, body }))
      })
      req.on('error', reject)
      req.end('hello')
    })
    t.equal(res.status, 200)
    const out = JSON.parse(res.body) as { env: Record<string, string>, body_len: number }
    t.match(out.env, { REQUEST_METHOD: 'POST', SCRIPT_NAME: '/app', PATH_INFO: '/a b', QUERY_STRING: 'q=1', CONTENT_LENGTH: '5', CONTENT_TYPE: 'text/plain', HTTP_X_T: 'v' })
    t.notOk('HTTP_PROXY' in out.env, 'httpoxy: stripped by the core env builder')
    t.equal(out.body_len, 5)
  })
})

t.test('no leaked fd or child', (t) => assertNoLeaks(t, baseline))
