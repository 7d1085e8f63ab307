/**
 * Request buffering (route `requestBuffering`, default on for the CGI family) with CGI and SCGI,
 * and the spool of a Content-Length body: the whole body is read (memory, then an unlinked temp
 * file) before a CGI process is started or an SCGI backend is contacted.
 *
 * - CGI (a real `sh` script under a SpawnManager pipe spawn) and SCGI (real uWSGI): a client that
 *   hangs up halfway through its Content-Length body never starts the script / the app.
 * - The spool's fd and file are gone however the exchange ends: success, client abort, 408 by
 *   clientIdle and by minUploadRate, a script that fails after the spool, 413 over spoolLimit
 *   (answered before any byte is read, no 100 Continue).
 * - `requestBuffering: true` on an http route is a config error; false streams again.
 *
 * The spool directory is os.tmpdir(), which reads TMPDIR on each call: a private one, so the
 * listing sees only this file's spools.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { createServer } from 'node:http'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createProxy, silentLogger } from '../../src/index.js'
import type { RouteConfig } from '../../src/config/schema.js'
import { collectStatus } from '../../src/status/model.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { closeServer, get, listen } from '../helpers/servers.js'
import { Raw, postHead } from '../helpers/raw-client.js'
import { tempDir, writeScripts } from '../cgi/harness.js'
import { privateSpoolDir } from '../helpers/spool.js'
import { SpawnManager } from '../../src/spawn/manager.js'
import type { CreateProxyOptions } from '../../src/index.js'
import { startUwsgi, uwsgiSkip } from '../scgi/uwsgi-peer.js'

const { spoolFds, spoolFiles, spoolGone } = privateSpoolDir(t, 'pc-rbuf-spool-')

const body = (n: number): Buffer => {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 13 + (i >> 9)) & 0xff
  return b
}
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** createProxy + node:http with the proxy's checkContinue listener, as the gateway registers it. */
async function gateway (t: Test, config: CreateProxyOptions) {
  const proxy = await createProxy({ logger: silentLogger, ...config })
  const server = createServer(proxy.handler)
  server.on('checkContinue', proxy.checkContinue)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  return { proxy, port, url: `http://127.0.0.1:${port}` }
}

/** A chunked response body's one data chunk is `text`. */
const chunkIs = (raw: string, text: string): boolean => raw.includes(`\r\n\r\n${text.length.toString(16)}\r\n${text}\r\n`)

/**
 * `rec.sh` appends `start` when it starts, then the byte count of its stdin; `fail.sh` reads its
 * stdin and exits without a head.
 */
async function cgiRig (t: Test, route: Partial<RouteConfig> = {}) {
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = tempDir(t, 'pc-rbuf-cgi-')
  const marks = tempDir(t, 'pc-rbuf-marks-')
  const log = join(marks, 'rec.log')
  writeScripts(dir, {
    'rec.sh': `#!/bin/sh\necho start >> '${log}'\nn=$(wc -c)\necho "$n" >> '${log}'\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s' "$n"\n`,
    'sha.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nsha256sum | cut -d' ' -f1\n",
    'fail.sh': '#!/bin/sh\ncat > /dev/null\nexit 3\n',
  })
  const manager = new SpawnManager()
  t.teardown(() => manager.close())
  manager.add('sh', { socketType: 'pipe', copyEnvironment: ['PATH'], stopTimeout: 500 })
  await manager.start()
  const p = await gateway(t, { processStarters: { sh: manager.pipeStarter('sh') }, routes: [{ protocol: 'cgi', spawn: 'sh', docroot: dir, match: { prefix: '/' }, ...route } as RouteConfig] })
  const recorded = (): string => existsSync(log) ? readFileSync(log, 'utf8') : ''
  return { ...p, recorded }
}

t.test('CGI: a client that hangs up halfway through its Content-Length body never starts the script', async (t) => {
  const p = await cgiRig(t)
  const c = new Raw(p.port, postHead('/rec.sh', 5000))
  await c.send(body(2500))
  // Streamed (requestBuffering: false), the script starts at once: give it the time to.
  await waitFor(() => p.recorded() !== '', 2000)
  c.socket.destroy()
  t.notOk(await waitFor(() => p.recorded() !== '', 2000), 'the script did not start', { recorded: p.recorded() })
  const next = await get(`${p.url}/rec.sh`, { method: 'POST', body: 'abc' })
  t.equal(next.status, 200)
  t.equal(next.body.toString().trim(), '3', 'a follow-up request runs the script on its whole body')
  t.equal(p.recorded(), 'start\n3\n', 'only the follow-up ran')
  t.ok(await spoolGone(), 'no spool fd or file', { fds: spoolFds(), files: spoolFiles() })
})

t.test('CGI: a slow upload holds no process: none is started before the body is complete', async (t) => {
  const p = await cgiRig(t)
  const whole = body(10_000)
  const c = new Raw(p.port, postHead('/rec.sh', whole.length))
  await c.send(whole.subarray(0, 1000))
  t.notOk(await waitFor(() => p.recorded() !== '', 1500), 'no process yet', { recorded: p.recorded() })
  await c.send(whole.subarray(1000))
  t.ok(await waitFor(() => chunkIs(c.raw, '10000'), 20_000), 'the script got the whole body', { raw: c.raw })
  t.equal(p.recorded(), 'start\n10000\n')
  c.socket.destroy()
})

t.test('SCGI (uWSGI): a client that hangs up halfway through its Content-Length body never reaches the app', { skip: uwsgiSkip() }, async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = tempDir(t, 'pc-rbuf-scgi-')
  const log = join(dir, 'app.log')
  const app = join(dir, 'app.py')
  writeFileSync(app, [
    'def application(environ, start_response):',
    `    with open(${JSON.stringify(log)}, 'a') as f: f.write('start\\n')`,
    "    n = int(environ.get('CONTENT_LENGTH') or 0)",
    "    got = len(environ['wsgi.input'].read(n)) if n else 0",
    `    with open(${JSON.stringify(log)}, 'a') as f: f.write(str(got) + '\\n')`,
    "    start_response('200 OK', [('Content-Type', 'text/plain')])",
    '    return [str(got).encode()]',
    '',
  ].join('\n'))
  const peer = await startUwsgi('scgi', app)
  t.teardown(() => peer.stop())
  const { port, url, proxy } = await gateway(t, { routes: [{ protocol: 'scgi', backends: [`unix:${peer.socketPath}`], scriptFilename: '/app' }] })
  const recorded = (): string => existsSync(log) ? readFileSync(log, 'utf8') : ''
  const c = new Raw(port, postHead('/x', 5000))
  await c.send(body(2500))
  t.ok(await waitFor(() => collectStatus(proxy as never).inflight === 1, 10_000), 'in flight')
  await waitFor(() => recorded() !== '', 2000)
  c.socket.destroy()
  t.ok(await waitFor(() => collectStatus(proxy as never).inflight === 0, 10_000), 'the proxy finished the aborted exchange')
  t.notOk(await waitFor(() => recorded() !== '', 2000), 'the app was not called', { recorded: recorded() })
  const next = await get(`${url}/x`, { method: 'POST', body: 'abcd' })
  t.equal(next.body.toString(), '4')
  t.equal(recorded(), 'start\n4\n', 'only the follow-up reached the app')
})

t.test('pipelined requests: two buffered bodies in one write, each answered with its own', async (t) => {
  const p = await cgiRig(t)
  const a = body(70_000)
  const b = body(3000).reverse()
  const c = new Raw(p.port, '')
  c.socket.write(Buffer.concat([Buffer.from(postHead('/rec.sh', a.length)), a, Buffer.from(postHead('/rec.sh', b.length, 'Connection: close\r\n')), b]))
  t.ok(await waitFor(() => c.closed, 20_000), 'both answered, then closed')
  t.ok(chunkIs(c.raw, '70000') && chunkIs(c.raw, '3000'), 'each script got its own whole body', { raw: c.raw })
  t.ok(c.raw.indexOf('70000') < c.raw.indexOf('\r\n3000\r\n'), 'in order')
  // node:http parses the second request while the first one's script runs: the two may interleave.
  t.same(p.recorded().split('\n').filter(Boolean).sort(), ['3000', '70000', 'start', 'start'])
})

t.test('spool of a Content-Length body: success, then its fd is closed', async (t) => {
  const p = await cgiRig(t)
  const whole = body(1024 * 1024)
  const c = new Raw(p.port, postHead('/sha.sh', whole.length))
  await c.send(whole)
  t.ok(await waitFor(() => c.raw.includes(sha256(whole)), 20_000), 'the body arrived whole', { raw: c.raw.slice(0, 300) })
  c.socket.destroy()
  t.ok(await spoolGone(), 'no spool fd or file', { fds: spoolFds(), files: spoolFiles() })
})

t.test('spool of a Content-Length body: the client hangs up in the middle, the fd is closed', async (t) => {
  const p = await cgiRig(t)
  const c = new Raw(p.port, postHead('/rec.sh', 1024 * 1024))
  await c.send(body(512 * 1024))
  t.ok(await waitFor(() => spoolFds().length === 1, 10_000), 'the body is being spooled to a file')
  // The unlink follows the open asynchronously: under load the fd shows up first.
  t.ok(await waitFor(() => spoolFiles().length === 0 && spoolFds().length === 1, 10_000), 'the file is unlinked while its fd is open', { files: spoolFiles() })
  c.socket.destroy()
  t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
  t.equal(p.recorded(), '', 'the script never started')
})

for (const [name, timeouts, code] of [
  ['clientIdle', { clientIdle: '1s' }, 'ERR_REQUEST_TIMEOUT'],
  ['minUploadRate', { clientIdle: 0, minUploadRate: 1024 * 1024, uploadGrace: '1s' }, 'ERR_UPLOAD_TOO_SLOW'],
] as const) {
  t.test(`spool of a Content-Length body: 408 by ${name} in the middle, the fd is closed`, async (t) => {
    const p = await cgiRig(t, { timeouts })
    const c = new Raw(p.port, postHead('/rec.sh', 4 * 1024 * 1024))
    await c.send(body(512 * 1024))
    t.ok(await c.answered(), 'answered')
    t.equal(c.status(), 408)
    t.match(c.raw, code)
    c.socket.destroy()
    t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
    t.equal(p.recorded(), '', 'the script never started')
  })
}

t.test('spool of a Content-Length body: the script fails after the spool, the fd is closed', async (t) => {
  const p = await cgiRig(t)
  const whole = body(1024 * 1024)
  const c = new Raw(p.port, postHead('/fail.sh', whole.length))
  await c.send(whole)
  t.ok(await c.answered(), 'answered')
  t.equal(c.status(), 502)
  c.socket.destroy()
  t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
})

t.test('a Content-Length over spoolLimit: 413 before any byte is read (no 100 Continue), nothing spooled', async (t) => {
  const p = await cgiRig(t, { spoolLimit: '64KiB' })
  const c = new Raw(p.port, postHead('/rec.sh', 65537, 'Expect: 100-continue\r\n'))
  t.ok(await c.answered(), 'answered')
  t.equal(c.status(), 413, c.raw.slice(0, 200))
  t.match(c.raw, /ERR_BODY_TOO_LARGE/)
  t.notOk(c.raw.includes('100 Continue'), 'no 100 Continue')
  c.socket.destroy()
  t.equal(spoolFiles().length + spoolFds().length, 0, 'nothing spooled')
  t.equal(p.recorded(), '', 'the script never started')
  const ok = await get(`${p.url}/rec.sh`, { method: 'POST', body: body(65536) })
  t.equal(ok.body.toString(), '65536', 'a body of exactly spoolLimit is taken')
})

t.test('requestBuffering: false streams a Content-Length body: the script starts before it is complete', async (t) => {
  const p = await cgiRig(t, { requestBuffering: false, spoolLimit: '64KiB' })
  const whole = body(100_000)
  const c = new Raw(p.port, postHead('/rec.sh', whole.length))
  await c.send(whole.subarray(0, 1000))
  t.ok(await waitFor(() => p.recorded() === 'start\n', 10_000), 'the script started on the first bytes')
  t.equal(spoolFds().length, 0, 'nothing spooled')
  await c.send(whole.subarray(1000))
  t.ok(await waitFor(() => chunkIs(c.raw, '100000'), 20_000), 'over spoolLimit, streamed whole', { raw: c.raw })
  c.socket.destroy()
})

t.test('requestBuffering: true on an http route is a config error; false is accepted', async (t) => {
  await t.rejects(createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: ['127.0.0.1:9'], requestBuffering: true }] }),
    { name: 'ConfigError', issues: [{ path: '/routes/0/requestBuffering', message: /http streams request bodies/ }] })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: ['127.0.0.1:9'], requestBuffering: false }] })
  await proxy.close(100)
  await t.rejects(createProxy({ logger: silentLogger, routes: [{ protocol: 'fastcgi', backends: ['127.0.0.1:9'], docroot: '/srv', requestBuffering: 'yes' } as unknown as RouteConfig] }),
    { name: 'ConfigError' }, 'a non-boolean is refused')
})
