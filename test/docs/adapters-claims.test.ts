/**
 * docs/adapters.md, walked as a framework author outside the repository does: a small adapter
 * written from the page alone (plain ESM importing `proxycore`, the built package, from a scratch
 * project), registered both ways the page shows (`registerAdapter`, `createProxy({ adapters })`),
 * routed to, and driven over HTTP. Each test is a claim of the page about what the core does with
 * what the adapter reports: the `onHead` checks (status range, latin1 values, values and reasons
 * node refuses), 103 hints, trailers, `onError` before and after the head (`statusFor`, the cut),
 * `closeAfterResponse`, `onData`/`flow.resume` backpressure, aborts, which errors are retried and
 * which disable a backend, `replayable`, the `cgiEnv` request buffering, and two misbehaviours the
 * page now names (a second `onHead`, `onEnd` before any head).
 *
 * Not repeated here (test/component/adapter-dispatch-faults.test.ts and adapter-load-faults.test.ts
 * have them): dispatch/upgrade throwing or rejecting, reports after the end, an exchange that never
 * ends, abort hooks or resume() that throw, parseOptions/createClient/close faults. Nor the type
 * and export checks of test/docs/guide-adapter-claims.test.ts.
 */
import t from 'tap'
import { request } from 'node:http'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { rawRequest } from '../helpers/servers.js'
import { Raw } from '../helpers/raw-client.js'
import { ensureBuilt, root } from '../cli/run.js'
import { ProxyError, statusFor } from '../../src/index.js'
import { project, run } from './snippets.js'

/** The page, its lines joined (its paragraphs are wrapped). */
const page = readFileSync(join(root, 'docs/adapters.md'), 'utf8').replace(/\n(?!\n|\|)/g, ' ')

/** The author's program: their adapter, registered and routed to, logging as JSON lines on stdout. */
const MAIN = String.raw`import http from 'node:http'
import { createProxy, getAdapter, isAborted, ProxyError, registerAdapter, watchAbort } from 'proxycore'

const say = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const log = (level) => (obj, msg) => say({ log: level, ...obj, err: undefined, msg: msg ?? '' })
const logger = { debug () {}, info () {}, warn: log('warn'), error: log('error') }

class Client {
  inflight = 0
  constructor (endpoint) { this.endpoint = endpoint }
  dispatch (ex, h) {
    const q = new URL(ex.url, 'http://x').searchParams
    const p = ex.path.replace(/^\/\w+\//, '/')
    say({ ev: 'dispatch', backend: this.endpoint.id, path: ex.path, env: ex.env?.REQUEST_METHOD ?? null, contentLength: ex.contentLength })
    const flow = { resume () {} }
    const ok = (body = 'ok') => { h.onHead(200, ['content-length', String(body.length), 'x-backend', this.endpoint.id], flow); h.onData(Buffer.from(body)); h.onEnd() }
    switch (p) {
      case '/head-twice':
        h.onHead(200, ['x-first', '1'], flow); h.onHead(201, ['x-second', '1'], flow); h.onData(Buffer.from('a')); h.onEnd(); return
      case '/end-first': h.onEnd(); return
      case '/data-first': h.onData(Buffer.from('early')); ok(); return
      case '/redirect': say({ ev: 'takes', path: ex.path, takes: h.takesLocalRedirects?.() ?? null }); h.onLocalRedirect?.(q.get('to')); return
      case '/stderr': h.onStderr?.(Buffer.from('adapter diagnostic 42\n')); ok(); return
      case '/status': h.onHead(Number(q.get('s')), ['content-length', '0'], flow); h.onEnd(); return
      case '/reason': h.onHead(200, ['content-length', '0'], flow, 'OK\u0001'); h.onEnd(); return
      case '/value': h.onHead(200, ['x-a', 'a\nb', 'content-length', '0'], flow); h.onEnd(); return
      case '/latin1': h.onHead(200, ['x-l', 'caf\u00e9', 'content-length', '0'], flow); h.onEnd(); return
      case '/hints': h.onInformational?.(103, ['link', '</a.css>; rel=preload', 'x-other', '1']); ok(); return
      case '/trailers': h.onHead(200, ['content-type', 'text/plain'], flow); h.onData(Buffer.from('t')); h.onEnd(['x-t', 'v']); return
      case '/error': h.onError(new ProxyError(q.get('code'), 'reported', { phase: 'head' })); return
      case '/cut': h.onHead(200, ['content-type', 'text/plain'], flow); h.onData(Buffer.from('part')); setImmediate(() => h.onError(new ProxyError('ERR_BACKEND_RESET', 'gone', { phase: 'body' }))); return
      case '/close-after': h.closeAfterResponse?.(); ok(); return
      case '/big': {
        const total = Number(q.get('n')); const chunk = Buffer.alloc(64 * 1024, 120); let sent = 0; let pauses = 0; let resumes = 0
        const pump = () => {
          while (sent < total) {
            sent += chunk.length
            if (!h.onData(chunk)) { pauses++; say({ ev: 'paused', pauses }); return }
          }
          say({ ev: 'big-done', pauses, resumes }); h.onEnd()
        }
        h.onHead(200, ['content-length', String(total)], { resume () { resumes++; setImmediate(pump) } })
        pump(); return
      }
      case '/hang':
        watchAbort(ex, () => say({ ev: 'abort-hook', isAborted: isAborted(ex), aborted: ex.aborted ?? null, signal: ex.signal.aborted }))
        h.onHead(200, ['content-type', 'text/plain'], flow); h.onData(Buffer.from('partial')); return
      case '/fail': {
        // The first backend of the route fails with ?code= in ?phase=; the others answer.
        if (this.endpoint.id.endsWith('1')) { h.onError(new ProxyError(q.get('code'), 'synthetic', { phase: q.get('phase') })); return }
        ok(this.endpoint.id); return
      }
      case '/replay': {
        // ?times= replayable failures for the request ?id= (counted per id), then an answer.
        this.replays ??= new Map()
        const n = (this.replays.get(q.get('id')) ?? 0) + 1
        this.replays.set(q.get('id'), n)
        if (n <= Number(q.get('times'))) { const e = new ProxyError('ERR_BACKEND_CLOSED', 'reused connection closed', { phase: 'head' }); e.replayable = true; h.onError(e); return }
        ok(String(n)); return
      }
      case '/body': {
        const parts = []
        say({ ev: 'body-dispatch', contentLength: ex.contentLength })
        ex.body?.on('data', (c) => parts.push(c)).on('end', () => ok(Buffer.concat(parts).toString()))
        if (ex.body == null) ok('')
        return
      }
      default: ok()
    }
  }
  close () { return Promise.resolve() }
  destroy () {}
}

const caps = { keepAlive: false, multiplex: true, upgrade: false, cgiEnv: false, needsContentLength: false, perRequestProcess: false }
const mine = { name: 'mine', capabilities: caps, parseOptions: () => ({}), createClient: (e) => new Client(e) }
const cgiish = { ...mine, name: 'cgiish', capabilities: { ...caps, cgiEnv: true } }
registerAdapter(mine)
say({ ev: 'guarded', same: getAdapter('mine') === mine, has: getAdapter('mine') !== undefined })

const proxy = await createProxy({
  logger,
  adapters: [cgiish],
  routes: [
    { match: { prefix: '/f1/' }, protocol: 'mine', backends: ['127.0.0.1:11', '127.0.0.1:12'], balance: 'round-robin', retries: 1, disableTime: '60s' },
    { match: { prefix: '/f2/' }, protocol: 'mine', backends: ['127.0.0.1:21', '127.0.0.1:22'], balance: 'round-robin', retries: 1, disableTime: '60s' },
    { match: { prefix: '/f3/' }, protocol: 'mine', backends: ['127.0.0.1:31', '127.0.0.1:32'], balance: 'round-robin', retries: 1, disableTime: '60s' },
    { match: { prefix: '/cgi/' }, protocol: 'cgiish', backends: ['127.0.0.1:41'], scriptFilename: '/srv/x.py' },
    { match: { prefix: '/lr/' }, protocol: 'mine', backends: ['127.0.0.1:51'], localRedirects: true },
    { match: { prefix: '/cgistream/' }, protocol: 'cgiish', backends: ['127.0.0.1:42'], scriptFilename: '/srv/x.py', requestBuffering: false },
    { match: { prefix: '/' }, protocol: 'mine', backends: ['127.0.0.1:9'], retries: 0 },
  ],
})
const server = http.createServer(proxy.handler)
server.listen(0, '127.0.0.1', () => say({ port: server.address().port }))
process.once('SIGTERM', async () => { server.close(); server.closeAllConnections(); await proxy.close(); process.exit(0) })
`

guardLeaks(t, { timeoutMs: 15_000 })
await ensureBuilt()
const dir = project(t)
writeFileSync(join(dir, 'main.mjs'), MAIN)
const app = run(t, dir, ['main.mjs'])

interface Line { [k: string]: unknown }
/** The complete JSON lines the program printed so far (a line still being written is left for later). */
function lines (): Line[] {
  const all = app.out().split('\n')
  all.pop()
  return all.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Line)
}
const events = (ev: string): Line[] => lines().filter((l) => l.ev === ev)
const logs = (url: string): Line[] => lines().filter((l) => l.log !== undefined && l.url === url)

if (!await waitFor(() => lines().some((l) => typeof l.port === 'number') || app.child.exitCode !== null, 30_000)) throw new Error(`the program never listened:\n${app.out()}`)
const port = lines().find((l) => typeof l.port === 'number')?.port as number
if (port === undefined) throw new Error(`the program exited:\n${app.out()}`)
const base = `http://127.0.0.1:${port}`

interface Got { status: number, headers: Record<string, string | string[] | undefined>, body: string, complete: boolean }
function get (path: string, headers: Record<string, string> = {}): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { agent: false, headers }, (res) => {
      let body = ''
      res.setEncoding('latin1')
      res.on('data', (c: string) => { body += c })
      res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, complete: res.complete }))
    })
    req.on('error', reject)
    req.end()
  })
}
const dispatches = (path: string): unknown[] => events('dispatch').filter((l) => l.path === path).map((l) => l.backend)
/**
 * The program's stdout reaches us through a pipe, which may lag the HTTP answer: wait (with a
 * deadline) until `n` dispatches of `path` are in, then give them all.
 */
async function dispatched (path: string, n: number): Promise<unknown[]> {
  await waitFor(() => dispatches(path).length >= n, 5000)
  return dispatches(path)
}
const event = async (ev: string, path: string): Promise<Line | undefined> => {
  await waitFor(() => events(ev).some((l) => l.path === path), 5000)
  return events(ev).find((l) => l.path === path)
}

t.test('registering: getAdapter returns the guarded form, not the object registerAdapter took', async (t) => {
  t.same(events('guarded'), [{ ev: 'guarded', same: false, has: true }])
})

t.test('onHead: latin1 values pass byte for byte; a status outside 100-599 is a 502 ERR_BAD_RESPONSE; a value or reason node refuses is a 502 ERR_BAD_RESPONSE_HEADER', async (t) => {
  const raw = await rawRequest(port, 'GET /latin1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(raw, /\r\nx-l: caf\xe9\r\n/, 'the value\'s char U+00E9 goes out as the byte 0xE9')
  for (const [path, code] of [['/status?s=99', 'ERR_BAD_RESPONSE'], ['/status?s=600', 'ERR_BAD_RESPONSE'], ['/reason', 'ERR_BAD_RESPONSE_HEADER'], ['/value', 'ERR_BAD_RESPONSE_HEADER']]) {
    const r = await get(path)
    t.equal(r.status, 502, `${path}: 502`)
    t.match(r.body, code, `${path}: ${code}`)
    t.ok(await waitFor(() => logs(path).some((l) => l.code === code), 5000), `${path}: logged with ${code}`)
  }
})

t.test('a second onHead before the end is ignored; onEnd before any onHead is a 502 ERR_BAD_RESPONSE', async (t) => {
  t.match(page, /\| calls `onHead` a second time before the end \| ignored/, 'the page says so')
  t.match(page, /\| calls `onEnd` before any `onHead` \| a 502 `ERR_BAD_RESPONSE`/, 'the page says so')
  const twice = await get('/head-twice')
  t.equal(twice.status, 200, 'the first head is the response')
  t.equal(twice.headers['x-first'], '1')
  t.equal(twice.headers['x-second'], undefined, 'nothing of the second head')
  t.equal(twice.body, 'a', 'the body after it is delivered')
  const early = await get('/end-first')
  t.equal(early.status, 502)
  t.match(early.body, 'ERR_BAD_RESPONSE')
  t.ok(await waitFor(() => logs('/end-first').some((l) => l.code === 'ERR_BAD_RESPONSE' && /ended before its head/.test(String(l.msg))), 5000), 'logged: ended before its head')
})

t.test('onInformational: a 103 is forwarded with its Link fields only, to HTTP/1.1 clients only', async (t) => {
  const v11 = await rawRequest(port, 'GET /hints HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  const hint = /^HTTP\/1\.1 103 [^\r]*\r\n([\s\S]*?)\r\n\r\n/.exec(v11)
  t.ok(hint, 'HTTP/1.1: a 103 first')
  t.match(hint?.[1] ?? '', /^link: <\/a\.css>; rel=preload$/i, 'with the Link field')
  t.notMatch(hint?.[1] ?? '', /x-other/i, 'and no other field')
  t.match(v11, /\r\n\r\nHTTP\/1\.1 200 OK\r\n/, 'then the response')
  const v10 = await rawRequest(port, 'GET /hints HTTP/1.0\r\nHost: a\r\n\r\n')
  t.match(v10, /^HTTP\/1\.1 200 OK\r\n/, 'HTTP/1.0: the response, no 103')
  t.notMatch(v10, /103/)
})

t.test('onEnd(trailers): forwarded when the client sent TE: trailers, not otherwise', async (t) => {
  const te = await rawRequest(port, 'GET /trailers HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n')
  t.match(te, /\r\n0\r\nx-t: v\r\n\r\n$/, 'TE: trailers: the trailer after the last chunk')
  const plain = await rawRequest(port, 'GET /trailers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(plain, /\r\n1\r\nt\r\n0\r\n\r\n$/, 'no TE: the body, no trailer')
})

t.test('onError before the head: the client gets statusFor(err); every error line carries the adapter', async (t) => {
  for (const code of ['ERR_BACKEND_CLOSED', 'ERR_BACKEND_OVERLOADED', 'ERR_HEADERS_TIMEOUT', 'ERR_PROTOCOL'] as const) {
    const path = `/error?code=${code}`
    const r = await get(path)
    t.equal(r.status, statusFor(new ProxyError(code)), `${code}: ${r.status}`)
    t.match(r.body, code)
    t.ok(await waitFor(() => logs(path).length > 0, 5000), `${code}: logged`)
    t.match(logs(path)[0], { code, route: '6', adapter: 'mine', url: path, id: Number }, `${code}: the line has code, route, id, url and adapter`)
  }
})

t.test('onError after the head: the client connection is cut, the body not completed', async (t) => {
  const raw = await rawRequest(port, 'GET /cut HTTP/1.1\r\nHost: a\r\n\r\n')
  t.match(raw, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n4\r\npart\r\n$/, 'the head and the part sent, then the close: no last chunk')
  const r = await get('/cut')
  t.notOk(r.complete, 'node:http sees an incomplete response')
})

t.test('closeAfterResponse before onHead: Connection: close, and the proxy closes the connection', async (t) => {
  // A keep-alive request: the close comes from the proxy, not from the client.
  const raw = await rawRequest(port, 'GET /close-after HTTP/1.1\r\nHost: a\r\n\r\n')
  t.match(raw, /\r\nConnection: close\r\n/i)
  t.match(raw, /\r\n\r\nok$/, 'the response whole, then the close')
})

t.test('onData returning false pauses the adapter until flow.resume(); every byte arrives', async (t) => {
  const total = 8 * 1024 * 1024
  const before = events('paused').length
  const r = await new Promise<{ bytes: number, complete: boolean }>((resolve, reject) => {
    const req = request(`${base}/big?n=${total}`, { agent: false }, (res) => {
      res.pause()
      let bytes = 0
      // Read only once the core has told the adapter to stop.
      void waitFor(() => events('paused').length > before, 10_000).then(() => {
        res.on('data', (c: Buffer) => { bytes += c.length })
        res.on('close', () => resolve({ bytes, complete: res.complete }))
        res.resume()
      })
    })
    req.on('error', reject)
    req.end()
  })
  t.equal(r.bytes, total, `${total} bytes`)
  t.ok(r.complete)
  t.ok(await waitFor(() => events('big-done').length > 0, 5000))
  const done = events('big-done').at(-1) as { pauses: number, resumes: number }
  t.ok(done.pauses >= 1, `onData said false ${done.pauses} times`)
  t.equal(done.resumes, done.pauses, 'one flow.resume() for each')
})

t.test('the client leaves: the abort hook runs with isAborted(exchange), exchange.aborted and exchange.signal.aborted all true', async (t) => {
  await new Promise<void>((resolve) => {
    const req = request(`${base}/hang`, { agent: false }, (res) => { res.once('data', () => { req.destroy(); resolve() }) })
    req.on('error', () => resolve())
    req.end()
  })
  t.ok(await waitFor(() => events('abort-hook').length > 0, 5000), 'the hook ran')
  t.same(events('abort-hook'), [{ ev: 'abort-hook', isAborted: true, aborted: true, signal: true }])
})

t.test('retries follow the error code; the phase decides whether the backend is disabled', async (t) => {
  // The page used to say that the phase decides the retry ("`connect` errors ... are retried").
  t.notMatch(page, /`connect` errors \(nothing reached the backend\) are retried/, 'the page does not tie the retry to the phase')
  t.match(page, /The code decides the retry/)
  t.match(page, /The phase decides what happens to the backend/)
  // ERR_CONNECT_REFUSED in phase connect: retried on the other backend, the first one skipped after.
  const url1 = '/f1/fail?code=ERR_CONNECT_REFUSED&phase=connect'
  const a = await get(url1)
  t.equal(a.status, 200)
  t.equal(a.body, '127.0.0.1:12', 'answered by the second backend')
  for (let i = 0; i < 3; i++) t.equal((await get(url1)).body, '127.0.0.1:12')
  t.same(await dispatched('/f1/fail', 5), ['127.0.0.1:11', '127.0.0.1:12', '127.0.0.1:12', '127.0.0.1:12', '127.0.0.1:12'], 'phase connect: the first backend disabled (disableTime 60s)')

  // The same retryable code in phase head: retried, but the backend stays in the rotation.
  const url2 = '/f2/fail?code=ERR_CONNECT_REFUSED&phase=head'
  t.equal((await get(url2)).body, '127.0.0.1:22', 'retried on the second backend')
  await get(url2)
  t.ok((await dispatched('/f2/fail', 4)).filter((b) => b === '127.0.0.1:21').length >= 2, 'phase head: the first backend is picked again')

  // A code that is not retryable, even in phase connect: the client gets it, no other backend tried.
  const url3 = '/f3/fail?code=ERR_BACKEND_RESET&phase=connect'
  const c = await get(url3)
  t.equal(c.status, statusFor(new ProxyError('ERR_BACKEND_RESET')))
  t.match(c.body, 'ERR_BACKEND_RESET')
  t.same(await dispatched('/f3/fail', 1), ['127.0.0.1:31'], 'phase connect alone does not make it retried')
})

t.test('replayable: the exchange is sent once more, to the same backend, and only once', async (t) => {
  t.match(page, /sends it once more to the same backend, not counted against `retries`; a second such failure goes to the client/)
  const once = await get('/replay?times=1&id=a')
  t.equal(once.status, 200)
  t.equal(once.body, '2', 'answered on the second dispatch')
  const twice = await get('/replay?times=2&id=b')
  t.equal(twice.status, 502, 'a second replayable failure goes to the client')
  t.match(twice.body, 'ERR_BACKEND_CLOSED')
  t.same(await dispatched('/replay', 4), Array(4).fill('127.0.0.1:9'), 'two dispatches per request, same backend')
})

t.test('cgiEnv: exchange.env instead of headers; the body read whole before dispatch unless requestBuffering is false', async (t) => {
  const body = (path: string): string => `POST ${path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nabcd\r\n`
  const buffered = new Raw(port, body('/cgi/body'))
  await buffered.send(Buffer.from('4\r\nefgh\r\n0\r\n\r\n'))
  t.ok(await waitFor(() => buffered.closed, 10_000), 'answered')
  t.match(buffered.raw, /\r\n\r\nabcdefgh$/)
  t.match(await event('dispatch', '/cgi/body'), { env: 'POST', contentLength: 8 }, 'at dispatch: env built, the chunked body\'s length known (spooled)')

  const streamed = new Raw(port, body('/cgistream/body'))
  t.ok(await waitFor(() => events('dispatch').some((l) => l.path === '/cgistream/body'), 10_000), 'requestBuffering false: dispatched before the body ended')
  t.match(await event('dispatch', '/cgistream/body'), { env: 'POST', contentLength: null })
  await streamed.send(Buffer.from('4\r\nefgh\r\n0\r\n\r\n'))
  t.ok(await waitFor(() => streamed.closed, 10_000), 'answered')
  t.match(streamed.raw, /\r\n\r\nabcdefgh$/)
  t.equal((await event('dispatch', '/f1/fail'))?.env, null, 'an adapter without cgiEnv gets no env')
})

t.test('onLocalRedirect: with localRedirects off the client gets a 302 to it; on, the core re-runs it as a GET inside the same route only', async (t) => {
  t.match(page, /re-runs `location` as a GET inside the same route \(a location another route would take is a 404 `ERR_NO_ROUTE`\); with the route's `localRedirects` off it answers a 302/)
  const off = await rawRequest(port, 'GET /redirect?to=/landing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(off, /^HTTP\/1\.1 302 Found\r\n/)
  t.match(off, /\r\nLocation: \/landing\r\n/)
  t.match(await event('takes', '/redirect'), { takes: false }, 'takesLocalRedirects() said false')
  const on = await get('/lr/redirect?to=/lr/landing')
  t.equal(on.status, 200)
  t.equal(on.headers['x-backend'], '127.0.0.1:51')
  t.match(await event('takes', '/lr/redirect'), { takes: true }, 'takesLocalRedirects() said true')
  t.equal((await dispatched('/lr/landing', 1)).length, 1, 'the location was dispatched as a new exchange')
  const away = await get('/lr/redirect?to=/landing')
  t.equal(away.status, 404, 'a location another route would take: 404')
  t.match(away.body, 'ERR_NO_ROUTE')
  await dispatched('/lr/redirect', 2)
  t.same(dispatches('/landing'), [], 'and the other route never sees it')
})

t.test('onStderr: the core logs the chunk, with the route and the exchange id', async (t) => {
  t.equal((await get('/stderr')).status, 200)
  t.ok(await waitFor(() => lines().some((l) => l.log === 'warn' && l.stream === 'stderr' && l.msg === 'adapter diagnostic 42'), 5000), 'a warn line with the text')
})

// Found walking the page: body bytes an adapter sent before its head were dropped without a trace
// (onData returned true in that phase and the response went out without them), where onEnd before
// the head is a 502. A lost byte: it fails the exchange the same way now.
t.test('onData before onHead fails the exchange with 502 ERR_BAD_RESPONSE instead of dropping the bytes', async (t) => {
  const r = await get('/data-first')
  t.equal(r.status, 502)
  t.match(r.body, 'ERR_BAD_RESPONSE')
})

t.test('SIGTERM: server.close() and proxy.close() end the program', async (t) => {
  app.child.kill('SIGTERM')
  t.same(await app.exited, { code: 0, signal: null })
})
