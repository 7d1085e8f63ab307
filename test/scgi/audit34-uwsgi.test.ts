/**
 * Audit 34: the SCGI adapter against real uWSGI (`--scgi-socket`, python3 plugin, master + 2
 * workers) through createProxy, for the cases the other files leave out: a head then a stall
 * (timeouts.idle), nothing at all (timeouts.headers), a worker that dies before the head, a head
 * over maxResponseHeadSize (uWSGI itself refuses a head over 64 KiB: "unable to add header"), a slow-reading app taking 4 MiB bodies (Content-Length streamed and
 * chunked, spooled) byte-exact, and 64 concurrent requests against 2 workers.
 * The WSGI app is written here into a temp dir.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { request } from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { proxyServer } from '../helpers/servers.js'
import { captureLogger, fetchRaw, tempDir, type LogLine } from '../cgi/harness.js'
import { launchUwsgi, uwsgiSkip } from './uwsgi-peer.js'

const skip = uwsgiSkip()

const APP = `
import hashlib, os, time
def application(environ, start_response):
    q = environ.get('QUERY_STRING', '')
    if q.startswith('stall'):
        start_response('200 OK', [('Content-Type', 'text/plain')])
        yield b'first bytes'
        time.sleep(60)
        return
    if q.startswith('silent'):
        time.sleep(60)
    if q.startswith('die'):
        os._exit(1)
    if q.startswith('bighead'):
        # uWSGI keeps a value's length in 16 bits (a 70000-byte value goes out as 4464 bytes) and
        # refuses a head over 64 KiB itself: two 30000-byte fields, against a 32 KiB limit.
        start_response('200 OK', [('X-Big-%d' % i, 'a' * 30000) for i in range(2)])
        yield b'never'
        return
    if q.startswith('sink'):
        h = hashlib.sha256()
        n = 0
        inp = environ['wsgi.input']
        while True:
            b = inp.read(16384)
            if not b:
                break
            h.update(b)
            n += len(b)
            time.sleep(0.002)
        out = ('%d %s' % (n, h.hexdigest())).encode()
        start_response('200 OK', [('Content-Length', str(len(out)))])
        yield out
        return
    if q.startswith('id='):
        time.sleep(0.02)
        out = q.encode()
        start_response('200 OK', [('Content-Length', str(len(out)))])
        yield out
        return
    start_response('404 Not Found', [])
    yield b''
`

interface Setup { port: number, lines: LogLine[], events: RequestEndEvent[] }

async function setup (t: Test, route: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Promise<Setup> {
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = tempDir(t, 'pc-scgi-audit-')
  const app = join(dir, 'app.py')
  writeFileSync(app, APP)
  const peer = await launchUwsgi((socketPath) => [
    '--plugin', 'python3', '--scgi-socket', socketPath, '--wsgi-file', app, '--master', '--processes', '2',
    '--die-on-term', '--disable-logging', '--buffer-size', '32768'
  ])
  t.teardown(peer.stop)
  const { logger, lines } = captureLogger()
  const { proxy, port } = await proxyServer(t, {
    logger,
    ...top,
    routes: [{ match: { prefix: '/app/' }, protocol: 'scgi', backends: [`unix:${peer.socketPath}`], scriptFilename: app, ...route }]
  })
  const events: RequestEndEvent[] = []
  proxy.events.on('request:end', (e: RequestEndEvent) => events.push(e))
  return { port, lines, events }
}

async function endOf (s: Setup, url: string): Promise<RequestEndEvent | undefined> {
  await waitFor(() => s.events.some((e) => e.url === url), 10_000)
  return s.events.find((e) => e.url === url)
}

const errorCodes = (s: Setup): unknown[] => s.lines.filter((l) => l.level === 'error' || l.level === 'warn').map((l) => l.obj.code)

t.test('a head, then the app stalls: the client is cut after timeouts.idle, ERR_BODY_TIMEOUT', { skip }, async (t) => {
  const s = await setup(t, { timeouts: { idle: '1s' } })
  const url = '/app/?stall'
  const started = Date.now()
  const r = await fetchRaw(`http://127.0.0.1:${s.port}${url}`)
  const took = Date.now() - started
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'first bytes', 'what the app sent arrived')
  t.notOk(r.complete, 'cut, not ended cleanly')
  t.ok(took >= 900 && took < 20_000, `cut after ${took} ms`)
  const end = await endOf(s, url)
  t.same([end?.status, end?.error], [200, 'ERR_BODY_TIMEOUT'])
  t.same(errorCodes(s), ['ERR_BODY_TIMEOUT'])
})

t.test('the app sends nothing: 504 ERR_HEADERS_TIMEOUT after timeouts.headers', { skip }, async (t) => {
  const s = await setup(t, { timeouts: { headers: '1s' } })
  const url = '/app/?silent'
  const r = await fetchRaw(`http://127.0.0.1:${s.port}${url}`)
  t.equal(r.status, 504)
  t.match(r.body.toString(), 'ERR_HEADERS_TIMEOUT')
  const end = await endOf(s, url)
  t.same([end?.status, end?.error], [504, 'ERR_HEADERS_TIMEOUT'])
  t.same(errorCodes(s), ['ERR_HEADERS_TIMEOUT'])
})

t.test('the worker dies before the head: 502 ERR_BACKEND_CLOSED; the next request is served', { skip }, async (t) => {
  const s = await setup(t, { retries: 0 })
  const url = '/app/?die'
  const r = await fetchRaw(`http://127.0.0.1:${s.port}${url}`)
  t.equal(r.status, 502)
  t.match(r.body.toString(), 'ERR_BACKEND_CLOSED')
  const end = await endOf(s, url)
  t.same([end?.status, end?.error], [502, 'ERR_BACKEND_CLOSED'])
  const next = await fetchRaw(`http://127.0.0.1:${s.port}/app/?id=after`)
  t.same([next.status, next.body.toString()], [200, 'id=after'])
})

t.test('a 60 KB head, over maxResponseHeadSize (32 KiB here; uWSGI cannot send one over 64 KiB): 502 ERR_RESPONSE_HEAD_TOO_LARGE', { skip }, async (t) => {
  const s = await setup(t, {}, { maxResponseHeadSize: '32KiB' })
  const url = '/app/?bighead'
  const r = await fetchRaw(`http://127.0.0.1:${s.port}${url}`)
  t.equal(r.status, 502)
  t.match(r.body.toString(), 'ERR_RESPONSE_HEAD_TOO_LARGE')
  const end = await endOf(s, url)
  t.same([end?.status, end?.error], [502, 'ERR_RESPONSE_HEAD_TOO_LARGE'])
  t.same(errorCodes(s), ['ERR_RESPONSE_HEAD_TOO_LARGE'])
})

for (const mode of ['content-length, streamed', 'content-length, buffered', 'chunked'] as const) {
  t.test(`a 4 MiB body (${mode}) to an app that reads slowly: byte-exact (sha256)`, { skip }, async (t) => {
    const s = await setup(t, mode === 'content-length, streamed' ? { requestBuffering: false } : {})
    const total = 4 << 20
    const body = Buffer.alloc(total)
    for (let i = 0; i < total; i++) body[i] = (i * 7 + (i >> 12)) & 0xff
    const want = createHash('sha256').update(body).digest('hex')
    const got = await new Promise<{ status: number, text: string }>((resolve, reject) => {
      const headers: Record<string, string> = mode === 'chunked' ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(total) }
      const req = request({ host: '127.0.0.1', port: s.port, method: 'POST', path: '/app/?sink', headers, agent: false }, (res) => {
        let text = ''
        res.setEncoding('latin1')
        res.on('data', (c: string) => { text += c })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
      })
      req.on('error', reject)
      // 64 KiB writes, each after the last was taken: the proxy's backpressure paces the client.
      let off = 0
      const next = (): void => {
        if (off >= total) { req.end(); return }
        const part = body.subarray(off, off + 65536)
        off += part.length
        req.write(part, () => next())
      }
      next()
    })
    t.same(got, { status: 200, text: `${total} ${want}` })
  })
}

t.test('64 concurrent requests, 2 workers: every one answered, its own answer', { skip }, async (t) => {
  const s = await setup(t)
  const ids = Array.from({ length: 64 }, (_, i) => i)
  const results = await Promise.all(ids.map(async (i) => await fetchRaw(`http://127.0.0.1:${s.port}/app/?id=${i}`)))
  t.same(results.map((r) => [r.status, r.body.toString(), r.complete]), ids.map((i) => [200, `id=${i}`, true]))
  t.ok(await waitFor(() => s.events.length === 64, 10_000), 'a request:end for each')
  t.same(errorCodes(s), [])
})
