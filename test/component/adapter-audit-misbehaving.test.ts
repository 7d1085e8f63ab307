/**
 * Audit of the public adapter API against a framework author's mistakes (docs/adapters.md, "What
 * the core does with an adapter's bugs"): each misbehaving adapter, served through createProxy and
 * node:http, must give the client a clean answer with a stable code, leave no slot taken (the
 * route's counters back to 0), raise no uncaught exception or unhandled rejection, and the proxy
 * must keep serving. The cases not covered by adapter-dispatch-faults / adapter-load-faults /
 * adapter-bad-head.
 */
import t from 'tap'
import { connect } from 'node:net'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { settled } from '../helpers/counters.js'
import { scriptedAdapter } from '../helpers/adapters.js'
import { get, proxyServer, rawRequest } from '../helpers/servers.js'
import { ConfigError, createProxy, silentLogger, watchAbort, type BackendClient, type ProtocolAdapter, type ResponseHandler } from '../../src/index.js'

guardLeaks(t)

const unhandled: unknown[] = []
const onUnhandled = (err: unknown): void => { unhandled.push(err) }
process.on('unhandledRejection', onUnhandled)
t.teardown(() => { process.off('unhandledRejection', onUnhandled) })

async function noUnhandled (t: { same (a: unknown, b: unknown, m: string): unknown }, before: number): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve))
  await new Promise((resolve) => setImmediate(resolve))
  t.same(unhandled.slice(before).map(String), [], 'no unhandled rejection')
}

const NOFLOW = { resume () {} }

/** The path picks the misbehaviour; every report is made asynchronously, as from a socket event. */
const bad = scriptedAdapter('audit-bad', (ex, h, done) => {
  setImmediate(() => {
    done()
    switch (ex.path) {
      case '/head-twice':
        h.onHead(200, ['content-length', '2'], NOFLOW)
        h.onHead(500, ['content-length', '5'], NOFLOW)
        h.onData(Buffer.from('ok'))
        h.onEnd()
        return
      case '/data-first':
        h.onData(Buffer.from('early'))
        h.onHead(200, ['content-length', '2'], NOFLOW)
        h.onData(Buffer.from('ok'))
        h.onEnd()
        return
      case '/status-99': h.onHead(99, [], NOFLOW); h.onEnd(); return
      case '/status-600': h.onHead(600, [], NOFLOW); h.onEnd(); return
      case '/status-nan': h.onHead(NaN, [], NOFLOW); h.onEnd(); return
      case '/value-crlf': h.onHead(200, ['x-a', 'a\r\nx-injected: 1', 'content-length', '2'], NOFLOW); h.onData(Buffer.from('ok')); h.onEnd(); return
      case '/value-lf': h.onHead(200, ['x-a', 'a\nx-injected: 1', 'content-length', '2'], NOFLOW); h.onData(Buffer.from('ok')); h.onEnd(); return
      case '/value-nul': h.onHead(200, ['x-a', 'a\u0000b', 'content-length', '2'], NOFLOW); h.onData(Buffer.from('ok')); h.onEnd(); return
      case '/name-space': h.onHead(200, ['x a', 'b', 'content-length', '2'], NOFLOW); h.onData(Buffer.from('ok')); h.onEnd(); return
      case '/string-data':
        h.onHead(200, ['content-type', 'text/plain'], NOFLOW)
        h.onData('héllo' as unknown as Buffer)
        h.onEnd()
        return
      case '/end-twice-error':
        h.onHead(200, ['content-length', '2'], NOFLOW)
        h.onData(Buffer.from('ok'))
        h.onEnd()
        h.onEnd()
        h.onError(new Error('after the end') as never)
        return
      default:
        h.onHead(200, ['content-length', '2'], NOFLOW)
        h.onData(Buffer.from('ok'))
        h.onEnd()
    }
  })
})

t.test('handler calls out of order or out of range: a clean answer with a stable code, no slot kept', async (t) => {
  const before = unhandled.length
  const { url, port, proxy } = await proxyServer(t, { adapters: [bad], routes: [{ protocol: 'audit-bad', backends: ['127.0.0.1:9'] }] })
  const twice = await get(`${url}/head-twice`)
  t.equal(twice.status, 200, 'a second onHead is ignored: the first head is the response')
  t.equal(twice.body.toString(), 'ok')
  const early = await get(`${url}/data-first`)
  t.equal(early.status, 502, 'onData before onHead: 502')
  t.match(early.body.toString(), /ERR_BAD_RESPONSE/)
  for (const p of ['/status-99', '/status-600', '/status-nan']) {
    const r = await get(`${url}${p}`)
    t.equal(r.status, 502, `${p}: 502`)
    t.match(r.body.toString(), /ERR_BAD_RESPONSE/, `${p}: the code`)
  }
  for (const p of ['/value-crlf', '/value-lf', '/value-nul', '/name-space']) {
    const r = await rawRequest(port, `GET ${p} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    t.match(r, /^HTTP\/1\.1 502 /, `${p}: 502`)
    t.match(r, /ERR_BAD_RESPONSE_HEADER/, `${p}: the code`)
    t.notMatch(r, /x-injected|\u0000/i, `${p}: nothing injected`)
  }
  const s = await get(`${url}/string-data`)
  t.equal(s.status, 200, 'onData with a string: served')
  t.equal(s.body.toString(), 'héllo', 'as UTF-8')
  const e = await get(`${url}/end-twice-error`)
  t.equal(e.status, 200)
  t.equal(e.body.toString(), 'ok', 'a second onEnd and an onError after the end are ignored')
  t.ok(await settled(proxy), 'every slot given back')
  t.equal((await get(`${url}/ok`)).body.toString(), 'ok', 'still serving')
  await noUnhandled(t, before)
})

t.test('handler calls after the client left: ignored, no crash, no slot kept', async (t) => {
  const before = unhandled.length
  const held: ResponseHandler[] = []
  let aborted = false
  const late = scriptedAdapter('audit-late', (ex, h, done) => {
    watchAbort(ex, () => { aborted = true; done() })
    held.push(h)
    h.onHead(200, ['content-type', 'text/plain'], NOFLOW)
    h.onData(Buffer.from('part'))
  })
  const { port, proxy } = await proxyServer(t, { adapters: [late], routes: [{ protocol: 'audit-late', backends: ['127.0.0.1:9'] }] })
  const c = connect({ host: '127.0.0.1', port })
  let got = ''
  c.on('data', (d: Buffer) => { got += d.toString('latin1') })
  c.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n')
  t.ok(await waitFor(() => got.includes('part'), 5000), 'the first part arrived')
  c.destroy()
  t.ok(await waitFor(() => aborted, 5000), 'the abort hook fired')
  const h = held[0]
  h.onData(Buffer.from('more'))
  h.onHead(200, [], NOFLOW)
  h.onEnd()
  h.onError(new Error('late') as never)
  t.ok(await settled(proxy), 'slot given back')
  await noUnhandled(t, before)
})

function clientless (name: string, createClient: ProtocolAdapter['createClient']): ProtocolAdapter {
  return {
    name,
    capabilities: { keepAlive: false, multiplex: false, upgrade: false, cgiEnv: false, needsContentLength: false, perRequestProcess: false },
    parseOptions: () => ({}),
    createClient,
  }
}

t.test('an async createClient that rejects: a ConfigError from createProxy, no unhandled rejection', async (t) => {
  const before = unhandled.length
  const a = clientless('audit-async-client', (async () => { throw new Error('no client today') }) as unknown as ProtocolAdapter['createClient'])
  const lines: string[] = []
  const logger = { ...silentLogger, error (_o: object, m?: string) { lines.push(m ?? '') } }
  const err = await createProxy({ logger, adapters: [a], routes: [{ protocol: 'audit-async-client', backends: ['127.0.0.1:9'] }] }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof ConfigError, 'a ConfigError')
  t.match((err as ConfigError).issues, [{ path: '/routes/0', message: /audit-async-client adapter's createClient returned a promise/ }])
  t.ok(await waitFor(() => lines.some((l) => /createClient rejected: no client today/.test(l)), 5000), 'the rejection is logged with its reason')
  await noUnhandled(t, before)
})

t.test('an async createClient that resolves: refused at load too (a client is made synchronously)', async (t) => {
  const before = unhandled.length
  let destroyed = 0
  const client: BackendClient = { dispatch () {}, inflight: 0, close: async () => {}, destroy () { destroyed++ } }
  const a = clientless('audit-async-ok', (async () => client) as unknown as ProtocolAdapter['createClient'])
  const err = await createProxy({ logger: silentLogger, adapters: [a], routes: [{ protocol: 'audit-async-ok', backends: ['127.0.0.1:9'] }] }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof ConfigError, 'a ConfigError')
  t.match((err as ConfigError).issues, [{ path: '/routes/0', message: /createClient returned a promise/ }])
  t.ok(await waitFor(() => destroyed === 1, 5000), 'the client it resolved to is destroyed, not leaked')
  await noUnhandled(t, before)
})
