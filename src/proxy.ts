/**
 * The embedding contract:
 *
 *   const proxy = await createProxy(config)          // same shape as the operator file
 *   http.createServer({ shouldUpgradeCallback: proxy.shouldUpgrade }, proxy.handler)
 *     .on('upgrade', proxy.upgrade).listen(8080)
 *   await proxy.close()                               // drains, stops every spawned process
 *
 * `handler` also works as Express/Connect middleware `(req, res, next)`: an unmatched request falls
 * through to `next()`.
 */
import { randomBytes } from 'node:crypto'
import type { EventEmitter } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { checkConfig, nulIssues } from './config/check.js'
import { isEmbedConfig } from './config/validators.generated.js'
import type { SpawnConfig, TenantConfig } from './config/spawn-schema.js'
import { managerOptions, toSpawnSpec } from './config/spawns.js'
import { compileProxy, type CompileInput } from './core/compile.js'
import { ConfigError, ProxyError, type ConfigIssue } from './core/errors.js'
import { insecureParserFlag } from './core/headers.js'
import { ProxyEvents } from './core/events.js'
import type { CompiledRoute } from './core/route.js'
import { BrokenClient, checkExtraAdapters } from './core/registry.js'
import type { ProxyRuntime } from './core/runtime.js'
import type { GcFunction } from './core/scavenge.js'
import type { BackendSource, Logger, ProcessStarter, ProtocolAdapter } from './core/types.js'
import { defaultLogger } from './logger.js'
import { SpawnManager } from './spawn/index.js'
import { logOutput } from './spawn/output.js'
import { VERSION } from './version.js'

export interface CreateProxyOptions extends CompileInput {
  /**
   * Extra protocol adapters for this proxy only (see `registerAdapter` for global ones). A name
   * registered to a different adapter (a built-in's too), or two different adapters under one
   * name, make createProxy reject with a ConfigError at `/adapters/<i>`.
   */
  adapters?: ProtocolAdapter[]
  /** Backend sources by name, for routes with `spawn: name` (embedders bringing their own). */
  sources?: Record<string, BackendSource>
  /** Per-request process starters by name, for `cgi` routes with `spawn: name`. */
  processStarters?: Record<string, ProcessStarter>
  logger?: Logger
  /** Backend programs to start and supervise (`spawns.<name>` of the operator file). */
  spawns?: Record<string, SpawnConfig>
  /** Named identity + limits blocks for spawns. */
  tenants?: Record<string, TenantConfig>
  /** Pid-file directory (orphan cleanup after a crash). */
  runDir?: string
  /** Directory for the spawns' `<name>.log` output files. */
  logDir?: string
  /**
   * V8's `gc` function, used to collect a large body's spent chunks every 8 MiB instead of every
   * 32 MB (docs/getting-started.md, "Memory and speed"). Default: the one `node --expose-gc` puts
   * on globalThis, if any. `false`: leave collection to V8.
   */
  gc?: GcFunction | false
}

export interface Proxy {
  /** `(req, res)` for node:http, or `(req, res, next)` as middleware. */
  readonly handler: (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => void
  /**
   * node:http 'checkContinue' listener (optional): 413 without 100 for over-limit uploads, and 100
   * only once the body is read. node:http gives an `Expect: 100-continue` request to this listener
   * instead of 'request' (curl sends it for a body over 1 MiB): one no route takes goes to `next`,
   * or without it to the server's 'request' listeners (the app's own routes), as node:http sends
   * it there when no 'checkContinue' listener is registered.
   */
  readonly checkContinue: (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => void
  /** node:http 'upgrade' listener (WebSocket and any Upgrade). */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void
  /**
   * node:http `shouldUpgradeCallback` (`createServer({ shouldUpgradeCallback: proxy.shouldUpgrade })`,
   * Node >= 22.21 and >= 24.9; Node 20 ignores the option). True only when the request goes to a
   * route that can carry an upgrade (`http`) and has no body: node:http then emits 'upgrade'.
   * False — a FastCGI, SCGI, CGI or static route, no route, or a body (`curl --http2 -d`) — makes
   * node:http emit a plain 'request', which `handler` serves without the Upgrade (RFC 9110 §7.8),
   * as nginx does; without it such upgrades are refused (`400 ERR_BAD_REQUEST`).
   */
  readonly shouldUpgrade: (req: IncomingMessage) => boolean
  /**
   * node:http 'clientError' listener (optional): node's own answer (400, 408, 431) to a request its
   * parser refused, plus a `request:end` event, so the access log shows it.
   */
  readonly clientError: (err: Error, socket: Duplex) => void
  /**
   * node:http 'connect' listener (optional): a CONNECT (a tunnel to another host, what a forward
   * proxy opens) gets `501 ERR_CONNECT_METHOD` and a `request:end` event; without a listener
   * node:http closes its socket unanswered.
   */
  readonly connect: (req: IncomingMessage, socket: Duplex) => void
  /** Typed events; the same events go to diagnostics_channel `proxycore:*`. */
  readonly events: ProxyEvents
  /** Compiled routes with their pools and counters (read-only view for status pages). */
  readonly routes: readonly CompiledRoute[]
  /** Exchanges in flight. */
  readonly inflight: number
  /** The spawn manager started from `config.spawns` (status pages), or null. */
  readonly spawns: SpawnManager | null
  /**
   * Stop admitting, finish in-flight exchanges (up to `graceMs`), release every connection, then
   * stop every spawned process.
   */
  close (graceMs?: number): Promise<void>
}

export async function createProxy (config: CreateProxyOptions): Promise<Proxy> {
  if (insecureParserFlag()) throw new ProxyError('ERR_INSECURE_PARSER', 'node runs with --insecure-http-parser; proxycore will not start behind a lenient request parser')
  // From JavaScript anything may come: said as the mistake it is, not as a TypeError from inside.
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new ConfigError([{ path: '', message: 'createProxy takes the config object: the keys of proxycore.yaml, plus logger, adapters, sources, processStarters and gc', found: config, expected: 'an object' }])
  }
  // Adapter names first: a clash would make every later check read the wrong adapter.
  const early = [...checkExtraAdapters(config.adapters), ...loggerIssues(config.logger), ...sourceIssues(config.sources)]
  if (early.length > 0) throw new ConfigError(early)
  const events = new ProxyEvents()
  const log = config.logger ?? await defaultLogger()
  const sources = new Map(Object.entries(config.sources ?? {}))
  const processStarters = new Map(Object.entries(config.processStarters ?? {}))
  const withSpawns = config.spawns !== undefined && Object.keys(config.spawns).length > 0
  const { adapters, sources: s, processStarters: p, logger, gc, ...fileShape } = config
  // The full check, as `proxycore check` makes it (every problem at once, in the operator file's
  // words): before the first child starts, as a bad config must not leave processes; and for a
  // config of the wrong shape, which compileProxy alone would report by its first problem only, or
  // not at all: an unknown top-level key (`rotues`), which compileProxy's own schema lets through
  // as the caller's keys ride along there. A well-shaped config without spawns is checked by
  // compileProxy itself (a dry compile would call each adapter's createClient twice). A NUL byte in
  // any value is refused by the check alone.
  if (withSpawns || !isEmbedConfig(fileShape) || nulIssues(fileShape).length > 0) {
    const issues = await checkConfig(fileShape, {
      shape: 'embed',
      ...(adapters !== undefined ? { adapters } : {}),
      ...(s !== undefined ? { sources: s } : {}),
      ...(p !== undefined ? { processStarters: p } : {}),
    })
    if (issues.length > 0) throw new ConfigError(issues)
  }
  let manager: SpawnManager | null = null
  if (withSpawns) {
    manager = await startSpawns(config, log)
    for (const [name, spec] of Object.entries(config.spawns ?? {})) {
      if (spec.socketType === 'pipe') processStarters.set(name, manager.pipeStarter(name))
      else sources.set(name, manager.source(name))
    }
  }
  let runtime: ProxyRuntime
  try {
    runtime = await compileProxy(withPseudonym(config, `proxycore-${randomBytes(6).toString('hex')}`), {
      ...(config.adapters !== undefined ? { adapters: config.adapters } : {}),
      sources,
      processStarters,
      log,
      events,
      serverSoftware: `proxycore/${VERSION}`,
      ...(config.gc !== undefined ? { gc: config.gc } : {}),
    })
  } catch (err) {
    await manager?.close()
    throw err
  }
  const broken = brokenClients(runtime.routes)
  if (broken.length > 0) {
    // An adapter that cannot make a client at load is a config error, not a proxy that 500s.
    await runtime.close(0)
    await manager?.close()
    throw new ConfigError(broken)
  }
  return {
    handler: (req, res, next) => runtime.handle(req, res, next),
    upgrade: (req, socket, head) => runtime.upgrade(req, socket, head),
    shouldUpgrade: (req) => runtime.shouldUpgrade(req),
    checkContinue: (req, res, next) => runtime.checkContinue(req, res, next ?? toRequestListeners(req, res)),
    clientError: (err, socket) => runtime.clientError(err, socket),
    connect: (req, socket) => runtime.connect(req, socket),
    events,
    routes: runtime.routes,
    spawns: manager,
    get inflight () { return runtime.inflight },
    close: async (graceMs) => {
      try { await runtime.close(graceMs) } finally { await manager?.close() }
    },
  }
}

/**
 * `config` with `via: pseudonym` on every `http` route that has no `via` of its own: each proxy
 * instance (createProxy call, a reload's new generation too) names itself in the Via it forwards
 * and refuses a request whose Via names it already, 508 ERR_LOOP_DETECTED (src/core/headers.ts):
 * a route whose backend is the proxy's own address is cut at its second round, not after
 * timeouts.headers with a connection per round. Random, so two instances in a chain never share
 * it; an operator's own `via` is used as is, and must then differ between chained instances.
 */
function withPseudonym<C extends CompileInput> (config: C, pseudonym: string): C {
  if (!Array.isArray(config.routes)) return config
  const routes = config.routes.map((r: unknown) => {
    if (typeof r !== 'object' || r === null) return r
    const rc = r as { protocol?: unknown, via?: unknown }
    return rc.protocol === 'http' && (rc.via === undefined || rc.via === '') ? { ...rc, via: pseudonym } : r
  })
  return { ...config, routes }
}

const LOGGER_METHODS = ['debug', 'info', 'warn', 'error'] as const

/**
 * An embedder's logger without one of the four methods: refused here, where the core would throw
 * from inside a request at the first line of that level (a chunked upload over maxBodySize is
 * logged at warn), an uncaught exception that ended the process. null or undefined: the default.
 */
function loggerIssues (logger: unknown): ConfigIssue[] {
  if (logger === undefined || logger === null) return []
  const missing = LOGGER_METHODS.filter((m) => typeof (logger as Partial<Record<string, unknown>>)[m] !== 'function')
  if (missing.length === 0) return []
  return [{ path: '/logger', message: `must have the methods ${LOGGER_METHODS.join(', ')} (a pino logger, console or silentLogger): no ${missing.join(', ')}`, expected: 'Logger' }]
}

/**
 * An embedder's `sources` entry that is no BackendSource: refused here, where the first request
 * routed to it failed inside the pool ("this.source.list is not a function").
 */
function sourceIssues (sources: unknown): ConfigIssue[] {
  if (sources === undefined || sources === null) return []
  if (typeof sources !== 'object' || Array.isArray(sources)) return [{ path: '/sources', message: 'must be an object of backend sources by spawn name', expected: 'Record<string, BackendSource>' }]
  const issues: ConfigIssue[] = []
  for (const [name, s] of Object.entries(sources)) {
    const x = s as Partial<Record<'list' | 'subscribe' | 'ensure', unknown>> | null
    const missing = (['list', 'subscribe', 'ensure'] as const).filter((m) => x === null || typeof x !== 'object' || typeof x[m] !== 'function')
    if (missing.length > 0) issues.push({ path: `/sources/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`, message: `not a backend source (list, subscribe and ensure functions): no ${missing.join(', ')}`, expected: 'BackendSource' })
  }
  return issues
}

/**
 * `checkContinue` without `next`: an `Expect: 100-continue` request no route takes goes on to the
 * server's 'request' listeners, where node:http would have sent it without a 'checkContinue'
 * listener: an app's `proxy.handler(req, res, next)` there calls its own `next`, and the 100 goes
 * out when that reads the body. Without the fall-through the app's own routes answered such an
 * upload 404 ERR_NO_ROUTE. A server with no 'request' listener: undefined, the proxy's 404.
 */
function toRequestListeners (req: IncomingMessage, res: ServerResponse): (() => void) | undefined {
  // net.Server sets socket.server (src/core/headers.ts reads it too).
  const server = (req.socket as { server?: EventEmitter } | null)?.server
  if (server === undefined || server.listenerCount('request') === 0) return undefined
  return () => { server.emit('request', req, res) }
}

/** The clients an adapter's createClient could not make at load (src/core/registry.ts), as config issues. */
function brokenClients (routes: readonly CompiledRoute[]): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  for (const r of routes) {
    const pools: Array<[string, CompiledRoute['pool']]> = [[`/routes/${r.s.index}`, r.pool]]
    if (r.authorizer !== null) pools.push([`/routes/${r.s.index}/authorizer`, r.authorizer.pool])
    for (const [path, pool] of pools) {
      for (const b of pool.backends) {
        const c = b.client
        if (c instanceof BrokenClient) issues.push({ path, message: `the ${c.adapter} adapter's ${c.problem} (backend ${c.endpoint.id})` })
      }
    }
  }
  return issues
}

/** One manager for every spawn; a spec the manager rejects becomes a config issue at its path. */
async function startSpawns (config: CreateProxyOptions, log: Logger): Promise<SpawnManager> {
  const manager = new SpawnManager(managerOptions(config))
  manager.on('failed', (e) => log.error({ spawn: e.spawn, reason: e.reason }, 'spawn failed'))
  manager.on('restart', (e) => log.warn({ spawn: e.spawn, delay: e.delay, restarts: e.restarts }, 'spawn restarting'))
  manager.on('exit', (e) => { if (!e.expected) log.warn({ spawn: e.spawn, pid: e.pid, code: e.code, signal: e.signal }, 'spawned process exited') })
  manager.on('address-changed', (e) => log.warn({ spawn: e.spawn, id: e.id, wanted: e.wanted, address: e.address, reason: e.reason }, 'spawn address changed'))
  // Without a logDir, children's output goes to the log (one line per chunk, never mixed into ours).
  if (config.logDir === undefined) logOutput(manager, log)
  try {
    for (const [name, spec] of Object.entries(config.spawns ?? {})) {
      try { manager.add(name, toSpawnSpec(spec)) } catch (err) {
        throw new ConfigError([{ path: `/spawns/${name}`, message: (err as Error).message }])
      }
    }
    await manager.start()
  } catch (err) {
    await manager.close()
    if (err instanceof ConfigError) throw err
    const code = (err as { code?: string }).code
    throw new ConfigError([{ path: '/spawns', message: `${code !== undefined ? `${code}: ` : ''}${(err as Error).message}` }])
  }
  return manager
}
