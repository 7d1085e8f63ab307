/**
 * docs/protocols/scgi.md walked as a new user: the page's YAML run by the real CLI in front of a
 * real uWSGI (--scgi-socket, python3 plugin), and the Response table's rows that a WSGI app can
 * produce checked through createProxy against uWSGI. What test/scgi/* already asserts is not
 * repeated here. Missing uWSGI: skipped locally, a failure under CI=true.
 */
import t, { type Test } from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import type { RequestEndEvent } from '../../src/index.js'
import { createProxy } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { tempDir } from '../cgi/harness.js'
import { root, runCli, serve } from '../cli/run.js'
import { ECHO_APP, haveUwsgi, launchUwsgi, startUwsgi, type UwsgiPeer } from '../scgi/uwsgi-peer.js'
import { guideBlocks, must } from './snippets.js'

type Tap = Test

const DOC = join(root, 'docs/protocols/scgi.md')
const block = guideBlocks(DOC)

async function uwsgi (t: Tap, app = ECHO_APP): Promise<UwsgiPeer> {
  const p = await startUwsgi('scgi', app)
  t.teardown(() => p.stop())
  return p
}

t.test('the page\'s YAML, as written, through `proxycore serve`: SCRIPT_NAME=/app, PATH_INFO=the rest', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!haveUwsgi(t)) return
  const backend = await uwsgi(t)
  const dir = tempDir(t, 'pc-scgiclaims-')
  let yaml = block('# SCGI', 'yaml')
  yaml = must(yaml, 'unix:/run/app/scgi.sock', `unix:${backend.socketPath}`)
  yaml = must(yaml, '/srv/app/app.py', ECHO_APP)
  const config = join(dir, 'proxycore.yaml')
  writeFileSync(config, `listen: 127.0.0.1:0\n${yaml}`)
  const s = await serve(config)
  t.teardown(async () => { try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {} ; await s.exited })
  const r = await get(`${s.url}/app/hello/world?x=1`)
  t.equal(r.status, 200, r.status === 200 ? 'served' : r.body.toString())
  const env = (JSON.parse(r.body.toString()) as { env: Record<string, string> }).env
  t.match(env, { SCRIPT_NAME: '/app', PATH_INFO: '/hello/world', QUERY_STRING: 'x=1', SCRIPT_FILENAME: ECHO_APP, CONTENT_LENGTH: '0', SCGI: '1' })
})

// A WSGI app for the Response table's rows, picked by the query string.
const ROWS_APP = `
import time

def application(environ, start_response):
    q = environ.get('QUERY_STRING', '')
    if q == 'short':
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '8')])
        def body():
            yield b'0123456789abcdefghij'
            time.sleep(120)
        return body()
    if q == 'interim':
        start_response('103 Early Hints', [('Link', '</a.css>; rel=preload')])
        return [b'x']
    if q == 'te':
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Transfer-Encoding', 'chunked')])
        return [b'5\\r\\nhello\\r\\n0\\r\\n\\r\\n']
    if q == 'hop':
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Connection', 'x-private'), ('Keep-Alive', 'timeout=5'),
                                  ('Upgrade', 'h2c'), ('Trailer', 'X-T'), ('TE', 'trailers'), ('X-CGI-Secret', '1'), ('X-Kept', 'yes')])
        return [b'hop']
    if q == 'nocontent':
        start_response('204 No Content', [('Content-Length', '5')])
        return [b'hello']
    if q == 'created':
        start_response('201 Created', [('Content-Type', 'text/plain')])
        return [b'made']
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [q.encode('latin1')]
`

interface Raw { status: number, headers: Record<string, string | string[] | undefined>, body: Buffer, complete: boolean, error?: string }

/** One request; resolves when the response ends or is cut (never hangs on a cut). */
function fetchRaw (port: number, path: string, method = 'GET'): Promise<Raw> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (c: Buffer) => parts.push(c))
      res.on('error', () => {})
      res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), complete: res.complete }))
    })
    req.on('error', (err) => resolve({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false, error: err.message }))
    req.end()
  })
}

t.test('Response rows against uWSGI (through createProxy)', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!haveUwsgi(t)) return
  const dir = tempDir(t, 'pc-scgiclaims-')
  const app = join(dir, 'rows.py')
  writeFileSync(app, ROWS_APP)
  // Three workers: the `short` row leaves one asleep for the rest of the test.
  const backend = await launchUwsgi((sock) => ['--plugin', 'python3', '--scgi-socket', sock, '--wsgi-file', app,
    '--master', '--processes', '3', '--die-on-term', '--disable-logging'])
  t.teardown(() => backend.stop())
  const events: RequestEndEvent[] = []
  const route = { match: { prefix: '/app/' }, protocol: 'scgi', backends: [`unix:${backend.socketPath}`], scriptFilename: app }
  const { proxy, port } = await proxyServer(t, { routes: [route] })
  proxy.events.on('request:end', (e: RequestEndEvent) => events.push(e))
  const lastEnd = async (): Promise<RequestEndEvent | undefined> => {
    const n = events.length
    await waitFor(() => events.length > n, 5000)
    return events.at(-1)
  }

  // uWSGI in SCGI mode writes `Status: 201 Created\r\n...` (seen on the wire), never an HTTP status line.
  await t.test('uWSGI answers with a CGI Status: field, so acceptStatusLine: false serves it as well', async (t) => {
    const strict = await proxyServer(t, { routes: [{ ...route, options: { acceptStatusLine: false } }] })
    const r = await fetchRaw(strict.port, '/app/x?created')
    t.same([r.status, r.body.toString()], [201, 'made'])
  })

  await t.test('Status: 1xx → 502 ERR_BAD_RESPONSE', async (t) => {
    const end = lastEnd()
    const r = await fetchRaw(port, '/app/x?interim')
    t.equal(r.status, 502)
    t.equal((await end)?.error, 'ERR_BAD_RESPONSE')
  })

  await t.test('Transfer-Encoding from the app → 502 ERR_BAD_RESPONSE_HEADER', async (t) => {
    const end = lastEnd()
    const r = await fetchRaw(port, '/app/x?te')
    t.equal(r.status, 502)
    t.equal((await end)?.error, 'ERR_BAD_RESPONSE_HEADER')
  })

  await t.test('Connection, Keep-Alive, Upgrade, Trailer, TE, X-CGI-* dropped', async (t) => {
    const r = await fetchRaw(port, '/app/x?hop')
    t.same([r.status, r.body.toString(), r.headers['x-kept']], [200, 'hop', 'yes'])
    for (const h of ['keep-alive', 'upgrade', 'trailer', 'te', 'x-cgi-secret']) t.equal(r.headers[h], undefined, `${h} dropped`)
    t.not(r.headers.connection, 'x-private', 'the app\'s Connection value is not passed on')
  })

  await t.test('Status: 204 with a Content-Length: the head only, ended cleanly, without its Content-Length', async (t) => {
    const r = await fetchRaw(port, '/app/x?nocontent')
    t.same([r.status, r.body.length, r.complete, r.error], [204, 0, true, undefined])
    t.equal(r.headers['content-length'], undefined)
  })

  await t.test('Content-Length: 8 and 20 bytes: the 8 bytes, complete without waiting for the close', async (t) => {
    const at = Date.now()
    const r = await fetchRaw(port, '/app/x?short')
    const ms = Date.now() - at
    t.same([r.status, r.body.toString(), r.complete], [200, '01234567', true])
    t.ok(ms < 10_000, `answered in ${ms} ms while the app sleeps 120 s before closing`)
  })
})

t.test('Request: a NUL cannot reach the SCGI head through the proxy', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!haveUwsgi(t)) return
  const backend = await uwsgi(t)
  const route = { match: { prefix: '/app/' }, protocol: 'scgi', backends: [`unix:${backend.socketPath}`], scriptFilename: ECHO_APP }

  await t.test('a route params value with a NUL is refused when the config is loaded', async (t) => {
    await t.rejects(createProxy({ routes: [{ ...route, params: { X_NUL: 'a\0b' } }] }), { name: 'ConfigError' })
    const dir = tempDir(t, 'pc-scgiclaims-')
    const config = join(dir, 'proxycore.yaml')
    writeFileSync(config, `routes:\n  - match: { prefix: /app/ }\n    protocol: scgi\n    backends: ["unix:${backend.socketPath}"]\n    params: { X_NUL: "a\\0b" }\n`)
    const r = await runCli(['check', config])
    t.not(r.code, 0, 'proxycore check refuses it too')
    t.match(r.stdout + r.stderr, '/routes/0/params/X_NUL')
  })

  await t.test('%00 in the path: 400 ERR_BAD_REQUEST; in the query string it is sent undecoded', async (t) => {
    const { proxy, port } = await proxyServer(t, { routes: [route] })
    const events: RequestEndEvent[] = []
    proxy.events.on('request:end', (e: RequestEndEvent) => events.push(e))
    const bad = await fetchRaw(port, '/app/a%00b')
    t.equal(bad.status, 400)
    t.ok(await waitFor(() => events.length === 1))
    t.equal(events[0].error, 'ERR_BAD_REQUEST')
    const q = await fetchRaw(port, '/app/x?q=%00')
    t.equal(q.status, 200)
    t.equal((JSON.parse(q.body.toString()) as { env: Record<string, string> }).env.QUERY_STRING, 'q=%00')
  })
})

t.test('the Options table lists acceptStatusLine with its default', async (t) => {
  const { SCGI_DEFAULTS } = await import('../../src/protocols/scgi/index.js')
  const doc = readFileSync(DOC, 'utf8')
  for (const [key, value] of Object.entries(SCGI_DEFAULTS)) t.match(doc, new RegExp(`\\| \`${key}\` \\| \`${String(value)}\` \\|`), key)
})
