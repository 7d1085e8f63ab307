/**
 * Access log lines from real exchanges (combined and JSON) with upstream address, upstream status
 * and timings; log injection escaped; and the core's error log carrying the stable error code.
 */
import t from 'tap'
import { PassThrough } from 'node:stream'
import { createProxy, type Logger } from '../../src/index.js'
import { createAccessLog, type AccessLogFormat } from '../../src/status/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { deadPort } from '../helpers/ports.js'
import { backend, get, proxyServer, rawRequest } from '../helpers/servers.js'

function sink (): { stream: PassThrough, lines: () => string[] } {
  const stream = new PassThrough()
  let text = ''
  stream.setEncoding('utf8').on('data', (s: string) => { text += s })
  return { stream, lines: () => text.split('\n').filter((l) => l !== '') }
}

function recordingLogger (): { logger: Logger, entries: Array<{ level: string, obj: Record<string, unknown>, msg: string | undefined }> } {
  const entries: Array<{ level: string, obj: Record<string, unknown>, msg: string | undefined }> = []
  const at = (level: string) => (obj: object, msg?: string): void => { entries.push({ level, obj: obj as Record<string, unknown>, msg }) }
  return { logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, entries }
}

for (const format of ['combined', 'json'] as AccessLogFormat[]) {
  t.test(`${format}: upstream, status, timings, error codes`, async (t) => {
    guardLeaks(t)
    const be = await backend(t, (req, res) => { res.writeHead(req.url === '/api/teapot' ? 418 : 200); res.end('hello') })
    const dead = { address: `127.0.0.1:${await deadPort()}` }
    const log = recordingLogger()
    const { proxy, url } = await proxyServer(t, {
      logger: log.logger,
      routes: [
        { name: 'api', match: { prefix: '/api/' }, protocol: 'http', backends: [be.address] },
        { name: 'down', match: { prefix: '/down/' }, protocol: 'http', backends: [dead.address], retries: 0 },
      ],
    })
    const out = sink()
    const access = createAccessLog(proxy.events, { format, stream: out.stream, now: () => Date.UTC(2025, 9, 10, 13, 55, 36) })
    t.teardown(() => access.close())
    await get(`${url}/api/ok?q=1`, { headers: { 'user-agent': 'curl/8.5' } })
    await get(`${url}/api/teapot`)
    const failed = await get(`${url}/down/x`)
    t.equal(failed.status, 502)
    // (A backslash in the path itself is refused before routing, 400; the query keeps it.)
    await rawRequest(Number(new URL(url).port), 'GET /api/"evil?\\path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    t.equal(access.written, 4)
    const [ok, teapot, down, evil] = out.lines()
    if (format === 'combined') {
      t.match(ok, /^127\.0\.0\.1 - - \[10\/Oct\/2025:13:55:36 \+0000\] "GET \/api\/ok\?q=1 HTTP\/1\.1" 200 5 "-" "(-|curl\/8\.5)" route=api /)
      t.match(ok, new RegExp(`upstream=${be.address.replace(/\./g, '\\.')} upstream_status=200 rt=\\d+\\.\\d{3} uht=\\d+\\.\\d{3} code=-$`))
      t.match(teapot, /" 418 5 .* upstream_status=418 /)
      t.match(down, /" 502 (\d+|-) .*route=down upstream=(-|127\.0\.0\.1:\d+) upstream_status=- .* code=ERR_CONNECT_REFUSED$/)
      t.match(evil, /"GET \/api\/\\x22evil\?\\x5Cpath HTTP\/1\.1"/, 'quote and backslash escaped')
    } else {
      const o = JSON.parse(ok)
      t.match(o, { time: '2025-10-10T13:55:36.000Z', client: '127.0.0.1', method: 'GET', url: '/api/ok?q=1', status: 200, bytes: 5, route: 'api', upstream: be.address, upstreamStatus: 200, error: null })
      t.ok(o.headMs >= 0 && o.totalMs >= o.headMs)
      t.equal(JSON.parse(teapot).upstreamStatus, 418)
      t.match(JSON.parse(down), { status: 502, upstreamStatus: null, error: 'ERR_CONNECT_REFUSED', route: 'down' })
      t.equal(JSON.parse(evil).url, '/api/"evil?\\x5Cpath')
    }
    // The core's error log names the same stable code (H-LOG), without a stack trace.
    const err = log.entries.find((e) => e.obj.code === 'ERR_CONNECT_REFUSED')
    t.ok(err, 'error log line carries code ERR_CONNECT_REFUSED')
    t.equal(err?.level, 'error')
    t.equal(err?.obj.route, 'down')
    t.notMatch(JSON.stringify(log.entries), /\n\s+at /, 'no stack traces in the log')
  })
}

t.test('a stalled stream drops lines instead of buffering without bound', async (t) => {
  const proxy = await createProxy({ logger: recordingLogger().logger, routes: [{ protocol: 'http', backends: ['127.0.0.1:9'] }] })
  t.teardown(() => proxy.close())
  const stalled = new PassThrough({ highWaterMark: 16 })
  const access = createAccessLog(proxy.events, { stream: stalled, maxBuffered: 200 })
  const e = { id: 1, route: 'r', method: 'GET', url: '/x'.repeat(50), client: '127.0.0.1', status: 200, backend: '', headMs: 1, totalMs: 2, bytesOut: 0, error: null }
  for (let i = 0; i < 50; i++) proxy.events.requestEnd({ ...e, id: i })
  t.ok(access.dropped > 0, `dropped ${access.dropped}`)
  t.ok(stalled.writableLength < 200 + 400, 'queued bytes stay near the cap')
  access.close()
})

t.test('requests refused before or instead of an exchange are logged too: 400, 404, 413, 431, upgrades', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => { res.end('hello') })
  const { proxy, server, port } = await proxyServer(t, {
    routes: [
      { name: 'api', match: { prefix: '/api/' }, protocol: 'http', backends: [be.address], maxBodySize: 10 },
      { name: 'scgi', match: { prefix: '/scgi/' }, protocol: 'scgi', backends: ['127.0.0.1:9'], scriptFilename: '/srv/app.py' },
    ],
  })
  server.on('clientError', proxy.clientError)
  server.on('checkContinue', proxy.checkContinue)
  const out = sink()
  const access = createAccessLog(proxy.events, { stream: out.stream })
  t.teardown(() => access.close())
  const raw = (head: string): Promise<string> => rawRequest(port, head).then(String)

  t.match(await raw('GET /api/a HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /, 'duplicate Host')
  t.match(await raw('GET /api/b HTTP/1.1\r\nHost: a@b\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /, 'userinfo in Host')
  t.match(await raw('GET /api/%2e%2e%5cc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /, 'backslash in the path')
  t.match(await raw('GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 404 /, 'no route')
  t.match(await raw('POST /api/up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 99\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 413 /, 'over maxBodySize, refused before 100')
  t.match(await raw(`GET /api/big HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`), /^HTTP\/1\.1 431 /, 'head over maxHeaderSize')
  t.match(await raw('GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400 /, 'no request line')
  t.match(await raw('GET /elsewhere HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'), /^HTTP\/1\.1 404 /, 'upgrade without a route')
  t.match(await raw('GET /scgi/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'), /^HTTP\/1\.1 400 /, 'upgrade on a route that cannot carry one')

  const lines = out.lines()
  t.equal(lines.length, 9, 'one line per refused request')
  const fields = lines.map((l) => { const m = /"(.*)" (\d+) (\S+) .* route=(\S+) upstream=- upstream_status=- rt=\S+ uht=- code=(\S+)$/.exec(l); return m === null ? l : [m[1], Number(m[2]), m[3], m[4], m[5]] })
  t.strictSame(fields, [
    ['GET /api/a HTTP/1.1', 400, '32', '-', 'ERR_BAD_REQUEST'],
    ['GET /api/b HTTP/1.1', 400, '32', '-', 'ERR_BAD_REQUEST'],
    ['GET /api/%2e%2e%5cc HTTP/1.1', 400, '32', '-', 'ERR_BAD_REQUEST'],
    ['GET /nowhere HTTP/1.1', 404, '27', '-', 'ERR_NO_ROUTE'],
    ['POST /api/up HTTP/1.1', 413, '41', 'api', 'ERR_BODY_TOO_LARGE'],
    ['-', 431, '-', '-', 'ERR_BAD_REQUEST'],
    ['-', 400, '-', '-', 'ERR_BAD_REQUEST'],
    ['GET /elsewhere HTTP/1.1', 404, '-', '-', 'ERR_NO_ROUTE'],
    ['GET /scgi/x HTTP/1.1', 400, '-', 'scgi', 'ERR_BAD_REQUEST'],
  ])
})
