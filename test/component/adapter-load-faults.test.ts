/**
 * A third-party adapter's bugs outside an exchange: in `parseOptions` and `createClient` at load
 * (createProxy rejects with a ConfigError naming the route, never another error), in
 * `createClient` and `close()` when an embedder's BackendSource adds or drops an endpoint at run
 * time (no uncaught exception: a request to that endpoint gets a 500 ERR_INTERNAL and a log line
 * naming the adapter), and a `close()` that never settles (proxy.close still resolves after its
 * grace, the client destroyed).
 */
import t from 'tap'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'
import { ConfigError, createProxy, silentLogger, type BackendClient, type BackendSource, type ProtocolAdapter, type SourceEndpoint } from '../../src/index.js'

guardLeaks(t)

interface Line { level: string, obj: Record<string, unknown>, msg: string }
function recordingLogger (): { lines: Line[], logger: { debug (): void, info (): void, warn (o: object, m?: string): void, error (o: object, m?: string): void } } {
  const lines: Line[] = []
  const push = (level: string) => (obj: object, msg?: string) => { lines.push({ level, obj: obj as Record<string, unknown>, msg: msg ?? '' }) }
  return { lines, logger: { debug () {}, info () {}, warn: push('warn'), error: push('error') } }
}

/** An adapter that answers `ok` itself, with the given faults. */
function adapter (name: string, faults: { parseOptions?: () => unknown, createClient?: (id: string) => BackendClient | undefined, close?: () => Promise<void>, destroyed?: string[] } = {}): ProtocolAdapter {
  return {
    name,
    capabilities: { keepAlive: false, multiplex: true, upgrade: false, cgiEnv: false, needsContentLength: false, perRequestProcess: false },
    parseOptions: faults.parseOptions ?? (() => ({})),
    createClient (endpoint): BackendClient {
      if (faults.createClient !== undefined) {
        const c = faults.createClient(endpoint.id)
        if (c !== undefined) return c
      }
      return {
        inflight: 0,
        dispatch (_ex, h) {
          h.onHead(200, ['content-length', '2'], { resume () {} })
          h.onData(Buffer.from('ok'))
          h.onEnd()
        },
        close: faults.close ?? (async () => {}),
        destroy () { faults.destroyed?.push(endpoint.id) },
      }
    },
  }
}

/** An embedder's source whose endpoints the test adds and drops, telling the pool from a timer (as a spawn does). */
function movingSource (name: string): BackendSource & { set (eps: SourceEndpoint[]): Promise<void> } {
  let list: SourceEndpoint[] = [{ id: 'a', address: '127.0.0.1:9' }]
  const subs = new Set<() => void>()
  return {
    name,
    list: () => list,
    subscribe (fn) { subs.add(fn); return () => { subs.delete(fn) } },
    ensure: async () => {},
    set (eps) {
      list = eps
      return new Promise((resolve) => setTimeout(() => { for (const fn of subs) fn(); resolve() }, 1))
    },
  }
}

async function rejection (p: Promise<unknown>): Promise<unknown> {
  try { const proxy = await p; await (proxy as { close (ms: number): Promise<void> }).close(100); return null } catch (err) { return err }
}

for (const [what, thrown] of [['null', null], ['a string', 'options are bad'], ['an Error', new Error('options are bad')]] as const) {
  t.test(`parseOptions throws ${what}: createProxy rejects with a ConfigError at the route's options path`, async (t) => {
    const be = await backend(t, (_req, res) => res.end('x'))
    const err = await rejection(createProxy({
      logger: silentLogger,
      adapters: [adapter('opts-bad', { parseOptions: () => { throw thrown } })],
      routes: [{ protocol: 'http', backends: [be.address] }, { protocol: 'opts-bad', backends: ['127.0.0.1:9'] }],
    }))
    t.ok(err instanceof ConfigError, `a ConfigError, got ${String(err)}`)
    const issues = (err as ConfigError).issues ?? []
    t.equal(issues[0]?.path, '/routes/1/options')
    t.match(issues[0]?.message, /opts-bad adapter's parseOptions threw/, 'the issue names the adapter')
    t.match(issues[0]?.message, what === 'null' ? /null/ : /options are bad/, 'and what it threw')
  })
}

t.test('createClient throws at load: createProxy rejects with a ConfigError naming the route and the backend, nothing left open', async (t) => {
  const be = await backend(t, (_req, res) => res.end('x'))
  const { lines, logger } = recordingLogger()
  const err = await rejection(createProxy({
    logger,
    adapters: [adapter('factory-bad', { createClient: () => { throw new Error('no client for you') } })],
    routes: [{ protocol: 'http', backends: [be.address] }, { protocol: 'factory-bad', backends: ['127.0.0.1:9'] }],
  }))
  t.ok(err instanceof ConfigError, `a ConfigError, got ${String(err)}`)
  const issues = (err as ConfigError).issues ?? []
  t.equal(issues.length, 1)
  t.equal(issues[0]?.path, '/routes/1')
  t.match(issues[0]?.message, /factory-bad adapter's createClient threw: no client for you \(backend 127\.0\.0\.1:9\)/)
  t.ok(lines.some((l) => l.level === 'error' && l.obj.adapter === 'factory-bad'), 'logged with the adapter')
})

t.test('createClient returns nothing at load: a ConfigError too, not a crash on the first request', async (t) => {
  const err = await rejection(createProxy({
    logger: silentLogger,
    adapters: [{ ...adapter('factory-empty'), createClient: () => undefined as unknown as BackendClient }],
    routes: [{ protocol: 'factory-empty', backends: ['127.0.0.1:9'] }],
  }))
  t.ok(err instanceof ConfigError, `a ConfigError, got ${String(err)}`)
  t.equal((err as ConfigError).issues?.[0]?.path, '/routes/0')
  t.match((err as ConfigError).issues?.[0]?.message, /createClient returned undefined/)
})

t.test('createClient throws for an endpoint a source adds at run time: no crash, its requests get 500 ERR_INTERNAL, logged with the adapter', async (t) => {
  const src = movingSource('moving')
  const { lines, logger } = recordingLogger()
  const bad = adapter('factory-late', { createClient: (id) => { if (id === '127.0.0.1:10') throw new Error('cannot make b'); return undefined } })
  const { url } = await proxyServer(t, { logger, adapters: [bad], sources: { moving: src }, routes: [{ protocol: 'factory-late', spawn: 'moving' }] })
  t.equal((await get(`${url}/`)).status, 200, 'endpoint a serves')
  await src.set([{ id: 'b', address: '127.0.0.1:10' }])
  const r = await get(`${url}/`)
  t.equal(r.status, 500)
  t.match(r.body.toString(), /ERR_INTERNAL/)
  t.ok(lines.some((l) => l.level === 'error' && l.obj.adapter === 'factory-late' && /createClient threw: cannot make b/.test(l.msg)), 'logged with the adapter')
})

t.test('close() throws when a source drops an endpoint: logged, not thrown into the source', async (t) => {
  const src = movingSource('dropping')
  const { lines, logger } = recordingLogger()
  const bad = adapter('close-throws', { close: () => { throw new Error('close blew up') } })
  const { url } = await proxyServer(t, { logger, adapters: [bad], sources: { dropping: src }, routes: [{ protocol: 'close-throws', spawn: 'dropping' }] })
  t.equal((await get(`${url}/`)).status, 200)
  await src.set([{ id: 'b', address: '127.0.0.1:10' }])
  t.ok(await waitFor(() => lines.some((l) => l.obj.adapter === 'close-throws' && /close\(\) threw: close blew up/.test(l.msg)), 5000), 'logged with the adapter')
  t.equal((await get(`${url}/`)).status, 200, 'still serving')
})

t.test('a client whose close() never settles: proxy.close(grace) still resolves, and the client is destroyed', async (t) => {
  const destroyed: string[] = []
  const proxy = await createProxy({
    logger: silentLogger,
    adapters: [adapter('close-hangs', { close: () => new Promise(() => {}), destroyed })],
    routes: [{ protocol: 'close-hangs', backends: ['127.0.0.1:9'] }],
  })
  const started = Date.now()
  let deadline: NodeJS.Timeout | undefined
  const outcome = await Promise.race([
    proxy.close(200).then(() => 'closed'),
    new Promise<string>((resolve) => { deadline = setTimeout(() => resolve('still closing after 20 s'), 20_000) }),
  ])
  clearTimeout(deadline)
  t.equal(outcome, 'closed')
  t.ok(Date.now() - started < 15_000, 'within the grace and the close floor, with ample room')
  t.same(destroyed, ['127.0.0.1:9'], 'the client was destroyed')
})
