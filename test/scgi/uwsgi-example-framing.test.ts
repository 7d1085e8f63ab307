/**
 * Audit of examples/uwsgi-adapter against real uWSGI (native protocol): responses that carry a
 * Content-Length but no body (a HEAD answered by an app that honours HEAD, a 304 / 204) must end
 * cleanly, not cut the client connection waiting for bytes that never come (RFC 9110 §6.4.1).
 * And a reset after the head is reported as ERR_BACKEND_RESET, as the built-in adapters do.
 */
import t from 'tap'
import { request } from 'node:http'
import { createServer as netServer, type AddressInfo, type Socket } from 'node:net'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { RequestEndEvent } from '../../src/index.js'
import { uwsgiAdapter } from '../../examples/uwsgi-adapter/adapter.js'
import { assertNoLeaks, leakBaseline } from '../cgi-shared/leak-check.js'
import { waitFor } from '../helpers/leaks.js'
import { proxyServer } from '../helpers/servers.js'
import { makeExchange, recorder, tcpEndpoint, testContext, unixEndpoint } from './harness.js'
import { startUwsgi, uwsgiSkip } from './uwsgi-peer.js'

const baseline = leakBaseline()
const skip = uwsgiSkip()

// An app that honours HEAD (no body, the GET's Content-Length), and answers ?status=304 / 204
// with a Content-Length and no body, as conditional-GET middleware does.
const HEAD_APP = `
def application(environ, start_response):
    body = b'0123456789' * 10
    status = environ.get('QUERY_STRING', '').partition('status=')[2] or '200'
    start_response(status + ' X', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    if environ['REQUEST_METHOD'] == 'HEAD' or status in ('204', '304'):
        return []
    return [body]
`

interface Got { status: number, length: number, complete: boolean, contentLength: string | undefined, error?: string }

function get (port: number, method: string, path: string): Promise<Got> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      let length = 0
      res.on('data', (c: Buffer) => { length += c.length })
      res.on('error', () => {})
      res.on('close', () => resolve({ status: res.statusCode ?? 0, length, complete: res.complete, contentLength: res.headers['content-length'] }))
    })
    req.on('error', (err) => resolve({ status: 0, length: 0, complete: false, contentLength: undefined, error: err.message }))
    req.end()
  })
}

t.test('uwsgi example: bodyless answers with a Content-Length end cleanly (real uWSGI)', { skip }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pc-uwsgi-example-'))
  const app = join(dir, 'head_app.py')
  await writeFile(app, HEAD_APP)
  const peer = await startUwsgi('uwsgi', app)
  t.teardown(async () => { await peer.stop(); await rm(dir, { recursive: true, force: true }) })

  await t.test('direct: HEAD gets head then onEnd, never onError', async (t) => {
    const client = uwsgiAdapter.createClient(unixEndpoint(peer.socketPath), {}, testContext())
    const { handler, finished } = recorder()
    client.dispatch(makeExchange({ method: 'HEAD', env: { REQUEST_METHOD: 'HEAD', QUERY_STRING: '', PATH_INFO: '/', SERVER_NAME: 'h', SERVER_PORT: '80', SERVER_PROTOCOL: 'HTTP/1.1' } }), handler)
    const rec = await finished
    t.equal(rec.error?.code, undefined, 'no error')
    t.same(rec.calls, ['head', 'end'])
    t.equal(rec.status, 200)
    await client.close()
  })

  const { proxy, port } = await proxyServer(t, {
    adapters: [uwsgiAdapter],
    routes: [{ match: { prefix: '/app/' }, protocol: 'uwsgi', backends: [`unix:${peer.socketPath}`], scriptFilename: app }]
  })
  const events: RequestEndEvent[] = []
  proxy.events.on('request:end', (e: RequestEndEvent) => events.push(e))

  for (const [method, path, status] of [['HEAD', '/app/x', 200], ['GET', '/app/x?status=304', 304], ['GET', '/app/x?status=204', 204]] as const) {
    await t.test(`through createProxy: ${method} ${path}`, async (t) => {
      events.length = 0
      const got = await get(port, method, path)
      t.equal(got.error, undefined, 'no connection error (socket hang up)')
      t.equal(got.status, status)
      t.equal(got.length, 0)
      t.ok(got.complete, 'the response ended cleanly')
      if (status !== 204) t.equal(got.contentLength, '100', 'Content-Length of the GET kept')
      t.ok(await waitFor(() => events.length > 0, 5000), 'request:end')
      t.equal(events[0]?.error, null, 'request:end records no error')
    })
  }
  await t.test('the GET itself still gets its 100 bytes', async (t) => {
    const got = await get(port, 'GET', '/app/x')
    t.equal(got.status, 200)
    t.equal(got.length, 100)
    t.ok(got.complete)
  })
})

// A real uWSGI cannot be made to reset a connection on cue: a TCP fake does it.
t.test('uwsgi example: a reset after the head is ERR_BACKEND_RESET, not a clean close', async (t) => {
  const sockets = new Set<Socket>()
  const fake = netServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.once('data', () => { s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart') })
  })
  await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise((resolve) => fake.close(resolve))
  })
  const client = uwsgiAdapter.createClient(tcpEndpoint((fake.address() as AddressInfo).port), {}, testContext())
  const { handler, finished, rec: live } = recorder()
  client.dispatch(makeExchange({ env: { REQUEST_METHOD: 'GET' } }), handler)
  // Reset only once the body bytes reached the handler: an RST read together with the last bytes
  // is an EOF for libuv (docs/protocols/scgi.md), which no adapter can tell from a clean close.
  t.ok(await waitFor(() => live.body.length > 0, 5000), 'head and body bytes delivered')
  for (const s of sockets) s.resetAndDestroy()
  const rec = await finished
  t.same(rec.calls.filter((c) => c !== 'data'), ['head', 'error'])
  t.equal(rec.error?.code, 'ERR_BACKEND_RESET')
  t.equal(rec.error?.phase, 'body')
  await client.close()
})

t.test('no leaked fd or child', (t) => assertNoLeaks(t, baseline))
