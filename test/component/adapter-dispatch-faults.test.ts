/**
 * A third-party adapter's bugs, served through createProxy + node:http with the adapter registered as
 * docs/adapters.md tells a framework author to: a `dispatch` or `upgrade` that throws, or returns a
 * rejected promise (at once, after it waited in the admission queue, on a failover), must become a
 * 500 ERR_INTERNAL with a log line naming the adapter — never an uncaught exception, an unhandled
 * rejection (this file fails on any, as `--unhandled-rejections=strict` would), a request left to
 * its head timeout, a leaked admission slot or socket. Reports after the end, an exchange that never
 * ends and a client that leaves are checked the same way.
 */
import t from 'tap'
import { request } from 'node:http'
import { connect, type Socket } from 'node:net'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { deadPort } from '../helpers/ports.js'
import { ZERO, counters, settled } from '../helpers/counters.js'
import { get, proxyServer, rawBackend, rawRequest } from '../helpers/servers.js'
import { ProxyError, registerAdapter, watchAbort, type BackendClient, type ClientContext, type Endpoint, type Exchange, type ProtocolAdapter, type ResponseHandler, type UpgradeHandler } from '../../src/index.js'

guardLeaks(t)

// --unhandled-rejections=strict, for this file: any rejection nobody handled fails the test it happens in.
const unhandled: unknown[] = []
const onUnhandled = (err: unknown): void => { unhandled.push(err) }
process.on('unhandledRejection', onUnhandled)
t.teardown(() => { process.off('unhandledRejection', onUnhandled) })

interface Tap { same (a: unknown, b: unknown, msg: string): unknown, ok (v: unknown, msg: string): unknown }

/** A test's own view of unhandled rejections: the returned check, called last, says none fired since. */
function strictRejections (t: Tap): () => Promise<void> {
  const before = unhandled.length
  return async () => {
    // An unhandled rejection is reported after the microtask queue drains: give it a turn.
    await new Promise((resolve) => setImmediate(resolve))
    t.same(unhandled.slice(before).map(String), [], 'no unhandled rejection')
  }
}

interface Line { level: string, obj: Record<string, unknown>, msg: string }
function recordingLogger (): { lines: Line[], logger: { debug (): void, info (): void, warn (o: object, m?: string): void, error (o: object, m?: string): void } } {
  const lines: Line[] = []
  const push = (level: string) => (obj: object, msg?: string) => { lines.push({ level, obj: obj as Record<string, unknown>, msg: msg ?? '' }) }
  return { lines, logger: { debug () {}, info () {}, warn: push('warn'), error: push('error') } }
}


/**
 * The adapter under test. Its well-behaved path connects with `ctx.connect`, and answers with what
 * the backend sends (the body, up to its close). The path picks the bug.
 */
const state = { held: [] as Array<() => void>, aborts: 0, sockets: [] as Socket[] }

function answer (ex: Exchange, h: ResponseHandler, s: Socket): void {
  let head = false
  watchAbort(ex, () => s.destroy())
  s.on('data', (chunk: Buffer) => {
    if (!head) { head = true; h.onHead(200, ['content-type', 'text/plain'], { resume: () => s.resume() }) }
    if (!h.onData(chunk)) s.pause()
  })
  s.on('end', () => { s.destroy(); if (!head) h.onHead(200, ['content-length', '0'], { resume () {} }); h.onEnd() })
  s.on('error', (err) => h.onError(new ProxyError('ERR_BACKEND_RESET', err.message, { phase: 'body' })))
}

class FaultyClient implements BackendClient {
  inflight = 0
  constructor (private readonly endpoint: Endpoint, private readonly ctx: ClientContext) {}

  dispatch (ex: Exchange, h: ResponseHandler, p = ex.path): void | Promise<void> {
    if (p === '/throw') throw new Error('dispatch blew up')
    if (p === '/reject') return this.rejectAfterConnect(ex)
    if (p === '/hold') { state.held.push(() => { void this.dispatch(ex, h, '/ok') }); return }
    if (p === '/never') { watchAbort(ex, () => { state.aborts++ }); return }
    if (p === '/twice') {
      h.onHead(200, ['content-length', '2'], { resume () {} })
      h.onData(Buffer.from('ok'))
      h.onEnd()
      // Everything after the end: a second end, an error, more body, another head.
      h.onEnd()
      h.onError(new ProxyError('ERR_BACKEND_CLOSED'))
      h.onData(Buffer.from('late'))
      h.onHead(500, [], { resume () {} })
      return
    }
    if (p === '/late') {
      // Answers long after the core timed the exchange out.
      setTimeout(() => {
        h.onHead(200, ['content-length', '4'], { resume () {} })
        h.onData(Buffer.from('late'))
        h.onEnd()
        h.onEnd()
        state.held.push(() => {})
      }, 1500)
      return
    }
    // Reports in shapes the types forbid, made asynchronously (a throw there would be uncaught).
    if (p === '/plain-error') { setImmediate(() => h.onError(new Error('plain error') as ProxyError)); return }
    if (p === '/string-error') { setImmediate(() => h.onError('a string' as unknown as ProxyError)); return }
    if (p === '/null-headers') { setImmediate(() => { h.onHead(200, null as unknown as string[], { resume () {} }); h.onEnd() }); return }
    if (p === '/abort-throws') { watchAbort(ex, () => { state.aborts++; throw new Error('abort hook blew up') }); return }
    if (p === '/resume-throws') {
      // 4 MiB to a client that does not read yet: the core pauses the adapter; resume() throws.
      h.onHead(200, ['content-type', 'application/octet-stream'], { resume () { state.aborts++; throw new Error('resume blew up') } })
      const chunk = Buffer.alloc(64 * 1024, 97)
      for (let i = 0; i < 64; i++) if (!h.onData(chunk)) break
      return
    }
    if (p === '/stream') {
      // Sends part of a body, then waits: the client leaves meanwhile.
      watchAbort(ex, () => { state.aborts++ })
      ex.signal.addEventListener('abort', () => { state.aborts += 100 })
      h.onHead(200, ['content-type', 'text/plain'], { resume () {} })
      h.onData(Buffer.from('partial'))
      return
    }
    this.ctx.connect(this.endpoint).then((s) => { state.sockets.push(s); answer(ex, h, s) }, (err: ProxyError) => h.onError(err))
  }

  /** An `async` dispatch: connects, watches aborts as the guide says, then throws. */
  private async rejectAfterConnect (ex: Exchange): Promise<void> {
    const s = await this.ctx.connect(this.endpoint)
    state.sockets.push(s)
    watchAbort(ex, () => s.destroy())
    throw new Error('async dispatch blew up')
  }

  upgrade (ex: Exchange, _h: UpgradeHandler): void | Promise<void> {
    if (ex.path === '/throw') throw new Error('upgrade blew up')
    return Promise.reject(new Error('async upgrade blew up'))
  }

  close (): Promise<void> { return Promise.resolve() }
  destroy (): void {}
}

const faulty: ProtocolAdapter = {
  name: 'faulty',
  capabilities: { keepAlive: false, multiplex: true, upgrade: true, cgiEnv: false, needsContentLength: false, perRequestProcess: false },
  parseOptions: () => ({}),
  createClient: (endpoint, _opts, ctx) => new FaultyClient(endpoint, ctx),
}
// Registered globally, as docs/adapters.md shows (`registerAdapter(myAdapter)`).
registerAdapter(faulty)

/** A TCP backend that says `ok` and closes. */
async function okBackend (t: Parameters<typeof rawBackend>[0]) {
  return rawBackend(t, (s) => { s.end('ok') })
}

function theAdapterLogLine (t: Tap, lines: Line[], what: RegExp): void {
  const bug = lines.find((l) => l.level === 'error' && l.obj.adapter === 'faulty' && what.test(l.msg))
  t.ok(bug, `an error line names the adapter and says ${what}`)
  const ex = lines.find((l) => l.obj.code === 'ERR_INTERNAL' && l.obj.adapter === 'faulty' && 'url' in l.obj)
  t.ok(ex, 'the exchange\'s error line has code ERR_INTERNAL and names the adapter')
}

t.test('dispatch throws synchronously: 500 ERR_INTERNAL, logged with the adapter, slot freed, next request served', async (t) => {
  const noUnhandled = strictRejections(t)
  const be = await okBackend(t)
  const { lines, logger } = recordingLogger()
  const { url, proxy } = await proxyServer(t, { logger, routes: [{ protocol: 'faulty', backends: [be.address], maxConcurrent: 1 }] })
  const r = await get(`${url}/throw`)
  t.equal(r.status, 500)
  t.match(r.body.toString(), /ERR_INTERNAL/)
  theAdapterLogLine(t, lines, /dispatch\(\) threw: dispatch blew up/)
  t.ok(await settled(proxy), 'counters back to 0')
  const next = await get(`${url}/ok`)
  t.equal(next.status, 200)
  t.equal(next.body.toString(), 'ok', 'the next request is served')
  t.ok(await settled(proxy))
  t.same(counters(proxy), ZERO)
  await noUnhandled()
})

t.test('dispatch returns a rejected promise after connecting: 500 at once, no unhandled rejection, its socket closed by its abort hook', async (t) => {
  const noUnhandled = strictRejections(t)
  const be = await okBackend(t)
  const { lines, logger } = recordingLogger()
  // A head timeout longer than the answer takes: a 504 would mean the rejection went unseen.
  const { url, proxy } = await proxyServer(t, { logger, routes: [{ protocol: 'faulty', backends: [be.address], maxConcurrent: 1, timeouts: { headers: '10s' } }] })
  state.sockets = []
  const r = await get(`${url}/reject`)
  t.equal(r.status, 500)
  t.match(r.body.toString(), /ERR_INTERNAL/)
  theAdapterLogLine(t, lines, /dispatch\(\) threw: async dispatch blew up/)
  t.equal(state.sockets.length, 1)
  t.ok(await waitFor(() => state.sockets.every((s) => s.destroyed), 5000), 'the adapter\'s backend socket was destroyed (abort hook)')
  t.ok(await settled(proxy), 'counters back to 0')
  t.equal((await get(`${url}/ok`)).status, 200, 'the next request is served')
  await noUnhandled()
})

t.test('dispatch throws after the request waited in the admission queue: 500, no unhandled rejection, the queue keeps moving', async (t) => {
  const noUnhandled = strictRejections(t)
  const be = await okBackend(t)
  const { lines, logger } = recordingLogger()
  const { url, proxy } = await proxyServer(t, { logger, routes: [{ protocol: 'faulty', backends: [be.address], maxConcurrent: 1, queue: 10, queueTimeout: '60s', timeouts: { headers: '10s' } }] })
  state.held = []
  const first = get(`${url}/hold`)
  t.ok(await waitFor(() => state.held.length === 1, 5000), 'first request in flight')
  const queued = [get(`${url}/throw`), get(`${url}/reject`), get(`${url}/ok`)]
  t.ok(await waitFor(() => counters(proxy).queued === 3, 5000), 'three queued behind it')
  state.held.shift()?.()
  t.equal((await first).status, 200)
  const [a, b, c] = await Promise.all(queued)
  t.equal(a.status, 500, 'sync throw after queueing: 500')
  t.equal(b.status, 500, 'rejection after queueing: 500')
  t.equal(c.status, 200, 'the request behind them is served')
  theAdapterLogLine(t, lines, /dispatch\(\) threw: dispatch blew up/)
  t.ok(await settled(proxy), 'counters back to 0')
  t.same(counters(proxy), ZERO)
  await noUnhandled()
})

t.test('dispatch throws on the failover dispatch (called from the adapter\'s own error report)', async (t) => {
  const noUnhandled = strictRejections(t)
  // The first backend refuses connections: the core retries on the second, whose dispatch throws
  // from inside the first one's onError. Two routes' worth of adapter: /throw only on the second.
  const address = `127.0.0.1:${await deadPort()}`
  const tried: string[] = []
  const failover: ProtocolAdapter = {
    ...faulty,
    name: 'faulty-failover',
    createClient: (endpoint, _opts, ctx) => {
      const inner = new FaultyClient(endpoint, ctx)
      return {
        get inflight () { return 0 },
        dispatch (ex, h) {
          tried.push(endpoint.id)
          if (endpoint.id === address) { ctx.connect(endpoint).then((s) => s.destroy(), (err: ProxyError) => h.onError(err)); return }
          return inner.dispatch(ex, h, '/throw')
        },
        close: async () => {},
        destroy () {},
      }
    },
  }
  const { lines, logger } = recordingLogger()
  const { url, proxy } = await proxyServer(t, { logger, adapters: [failover], routes: [{ protocol: 'faulty-failover', backends: [address, '127.0.0.1:9'], balance: 'round-robin', retries: 1, timeouts: { headers: '10s' } }] })
  const r = await get(`${url}/x`)
  t.equal(r.status, 500)
  t.match(r.body.toString(), /ERR_INTERNAL/)
  t.same(tried, [address, '127.0.0.1:9'], 'the throw came from the failover dispatch')
  t.ok(lines.some((l) => l.obj.adapter === 'faulty-failover' && /dispatch\(\) threw/.test(l.msg)), 'logged with the adapter')
  t.ok(await settled(proxy), 'counters back to 0')
  await noUnhandled()
})

for (const path of ['/throw', '/reject']) {
  t.test(`upgrade ${path === '/throw' ? 'throws synchronously' : 'returns a rejected promise'}: 500 on the socket, slot freed, no crash`, async (t) => {
    const noUnhandled = strictRejections(t)
    const be = await okBackend(t)
    const { lines, logger } = recordingLogger()
    const { port, url, proxy } = await proxyServer(t, { logger, routes: [{ protocol: 'faulty', backends: [be.address], maxConcurrent: 1, timeouts: { headers: '10s' } }] })
    const r = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`)
    t.match(r, /^HTTP\/1\.1 500 /, 'a 500, not a head timeout')
    t.ok(lines.some((l) => l.obj.adapter === 'faulty' && /upgrade\(\) threw/.test(l.msg)), 'logged with the adapter')
    t.ok(await settled(proxy), 'the slot came back')
    t.equal((await get(`${url}/ok`)).status, 200, 'the next request is served')
    await noUnhandled()
  })
}

t.test('reports after the end are ignored: a second onEnd, onError, onData and onHead', async (t) => {
  const noUnhandled = strictRejections(t)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'faulty', backends: ['127.0.0.1:9'], maxConcurrent: 1 }] })
  // One keep-alive connection: a stray byte after the first response would corrupt the second.
  const s = connect({ host: '127.0.0.1', port: Number(new URL(url).port) })
  let out = ''
  s.on('data', (d: Buffer) => { out += d.toString('latin1') })
  s.write('GET /twice HTTP/1.1\r\nHost: a\r\n\r\n')
  t.ok(await waitFor(() => /\r\n\r\nok/.test(out), 5000), 'first response')
  s.write('GET /twice HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  await new Promise((resolve) => s.on('close', resolve))
  t.equal(out.match(/HTTP\/1\.1 200 OK/g)?.length, 2, 'two clean 200s on the connection')
  t.notMatch(out, /late|HTTP\/1\.1 500/, 'nothing after an end reached the client')
  t.ok(await settled(proxy))
  await noUnhandled()
})

t.test('an adapter that never finishes: the head timeout ends the request, fires its abort hook once and frees the slot; its late answer is ignored', async (t) => {
  const noUnhandled = strictRejections(t)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'faulty', backends: ['127.0.0.1:9'], maxConcurrent: 1, timeouts: { headers: '300ms' } }] })
  state.aborts = 0
  const r = await get(`${url}/never`)
  t.equal(r.status, 504)
  t.match(r.body.toString(), /ERR_HEADERS_TIMEOUT/)
  t.equal(state.aborts, 1, 'the abort hook fired once')
  t.ok(await settled(proxy), 'slot freed')
  state.held = []
  const late = await get(`${url}/late`)
  t.equal(late.status, 504)
  t.ok(await waitFor(() => state.held.length === 1, 10_000), 'the adapter answered after the timeout')
  t.equal((await get(`${url}/ok`)).status, 502, 'the next request gets its own answer (no backend at :9: a connect error)')
  t.ok(await settled(proxy))
  await noUnhandled()
})

t.test('the client leaves mid-response: the adapter\'s abort hook and its signal fire once each, the slot is freed', async (t) => {
  const noUnhandled = strictRejections(t)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'faulty', backends: ['127.0.0.1:9'], maxConcurrent: 1 }] })
  state.aborts = 0
  await new Promise<void>((resolve) => {
    const req = request(`${url}/stream`, { agent: false }, (res) => { res.once('data', () => { req.destroy(); resolve() }) })
    req.on('error', () => resolve())
    req.end()
  })
  t.ok(await settled(proxy), 'slot freed')
  t.equal(state.aborts, 101, 'watchAbort\'s hook once (1) and the signal once (100)')
  await noUnhandled()
})

t.test('reports in shapes the types forbid: a plain Error, a string, null headers: 500/502 with a code, no crash', async (t) => {
  const noUnhandled = strictRejections(t)
  const { lines, logger } = recordingLogger()
  const { url, proxy } = await proxyServer(t, { logger, routes: [{ protocol: 'faulty', backends: ['127.0.0.1:9'], maxConcurrent: 1 }] })
  for (const [path, status, code] of [['/plain-error', 500, 'ERR_INTERNAL'], ['/string-error', 500, 'ERR_INTERNAL'], ['/null-headers', 502, 'ERR_BAD_RESPONSE_HEADER']] as const) {
    const r = await get(`${url}${path}`)
    t.equal(r.status, status, `${path}: ${status}`)
    t.match(r.body.toString(), code, `${path}: ${code} in the page`)
    t.ok(lines.some((l) => l.obj.code === code && l.obj.url === path), `${path}: logged with its code`)
    t.ok(await settled(proxy), `${path}: slot freed`)
  }
  t.ok(lines.some((l) => l.obj.url === '/plain-error' && /plain error/.test(l.msg)), 'the plain error\'s message is kept')
  await noUnhandled()
})

t.test('an abort hook that throws: the head timeout still answers 504, the throw is logged with the adapter, no crash', async (t) => {
  const noUnhandled = strictRejections(t)
  const { lines, logger } = recordingLogger()
  const { url, proxy } = await proxyServer(t, { logger, routes: [{ protocol: 'faulty', backends: ['127.0.0.1:9'], maxConcurrent: 1, timeouts: { headers: '300ms' } }] })
  state.aborts = 0
  const r = await get(`${url}/abort-throws`)
  t.equal(r.status, 504)
  t.equal(state.aborts, 1, 'the hook ran once')
  t.ok(lines.some((l) => l.level === 'error' && l.obj.adapter === 'faulty' && /abort handler threw/.test(l.msg)), 'logged, naming the adapter')
  t.ok(await settled(proxy), 'slot freed')
  await noUnhandled()
})

t.test('a flow.resume() that throws when the client drains: the response is cut, the throw logged, no crash', async (t) => {
  const noUnhandled = strictRejections(t)
  const { lines, logger } = recordingLogger()
  const { url, proxy } = await proxyServer(t, { logger, routes: [{ protocol: 'faulty', backends: ['127.0.0.1:9'], maxConcurrent: 1 }] })
  state.aborts = 0
  const got = await new Promise<{ bytes: number, complete: boolean }>((resolve, reject) => {
    const req = request(`${url}/resume-throws`, (res) => {
      let bytes = 0
      // Read only once the core has paused the adapter: the drain that follows calls resume().
      res.pause()
      void waitFor(() => lines.length > 0 || counters(proxy).inflight === 1, 5000).then(() => {
        res.on('data', (c: Buffer) => { bytes += c.length })
        res.on('close', () => resolve({ bytes, complete: res.complete }))
        res.resume()
      })
    })
    req.on('error', reject)
    req.end()
  })
  t.equal(state.aborts, 1, 'resume() was called once')
  t.notOk(got.complete, `the response was cut (${got.bytes} bytes)`)
  t.ok(lines.some((l) => l.obj.code === 'ERR_INTERNAL' && /flow\.resume\(\) threw: resume blew up/.test(l.msg)), 'logged with the code')
  t.ok(await settled(proxy), 'slot freed')
  await noUnhandled()
})
