/**
 * The gateway: node:http listeners for `listen`, the status route, and the proxy behind them,
 * with SIGHUP-style reload and graceful close.
 *
 * Reload is make-before-break: the new file is loaded and fully validated, changed spawns are
 * started and waited for until ready (spawn-set.ts), the new routes are compiled, and only then is
 * the generation pointer swapped — one assignment, so a request sees either the old routes or the
 * new ones. The old generation drains in the background. A config that fails at any step is
 * logged and dropped; the old generation never stops serving.
 */
import { createServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from 'node:http'
import { chmodSync, unlinkSync } from 'node:fs'
import { lookup } from 'node:dns/promises'
import { createServer as createNetServer, isIP, SocketAddress, type AddressInfo, type Socket } from 'node:net'
import { dirname, resolve } from 'node:path'
import { sharedHostAdvice } from '../config/advice.js'
import { loadConfigOrThrow } from '../config/load.js'
import type { OperatorConfig } from '../config/schema.js'
import { parseDuration } from '../config/units.js'
import type { Logger } from '../core/types.js'
import { createProxy, type Proxy } from '../proxy.js'
import type { GcFunction } from '../core/scavenge.js'
import { SpawnSet } from './spawn-set.js'
import { createStatus, STATUS_DEFAULTS, type StatusHandler } from '../status/index.js'
import { normalizePath } from '../core/cgi/url-path.js'
import { parseTarget } from '../core/runtime.js'
import { AccessLogFile, openAccessLogTarget, type OpenedAccessLog } from '../status/access-log.js'
import type { SpawnView } from '../status/model.js'

interface Generation {
  readonly config: OperatorConfig
  readonly proxy: Proxy
  readonly spawns: SpawnSet
  readonly status: StatusHandler | null
  /** `accessLog` opened for this generation (AccessLogFile.use switches to it); null without the key. */
  readonly accessLog: OpenedAccessLog | null
}

type Listener = (...args: unknown[]) => void
interface Emitter { on (e: string, fn: Listener): unknown, off (e: string, fn: Listener): unknown }

/** The status module reads one manager; the gateway has one per spawn component. */
function spawnView (set: SpawnSet): SpawnView {
  return {
    status: () => set.status(),
    on: (event, fn) => { for (const c of set.components) (c.manager as unknown as Emitter).on(event, fn as Listener) },
    off: (event, fn) => { for (const c of set.components) (c.manager as unknown as Emitter).off(event, fn as Listener) },
  }
}

/**
 * Is `req` for the status live view at `statusPath`/live? Compared as createStatus compares
 * (normalised, no trailing `/`); a path that cannot be normalised is not it.
 */
function isStatusLive (req: IncomingMessage, statusPath: string): boolean {
  const t = parseTarget(req.method ?? 'GET', req.url ?? '/', req.headers.host)
  if (t === null) return false
  try {
    return trimSlash(normalizePath(t.path)) === `${trimSlash(normalizePath(statusPath))}/live`
  } catch {
    return false
  }
}

function trimSlash (p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p
}

/** The file's `listen` addresses, each once, in order. */
function listenSpecs (c: OperatorConfig): string[] {
  return [...new Set([c.listen ?? '127.0.0.1:8080'].flat())]
}

/** `listen` failures an operator fixes in the config or the system, in words. */
const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'address already in use (another process listens there; stop it or change `listen`)',
  // libuv reports a unix socket's missing directory as EACCES too.
  EACCES: 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; a unix socket needs an existing, writable directory)',
  EADDRNOTAVAIL: 'address not available (no local interface has this address)',
}

/**
 * A bind failure as an operator reads it: the errno code (the log line's stable `code`), the
 * address and what to do; null for any other error. Used by serve at start and by a reload.
 */
export function listenFailure (err: unknown, listen: string[]): { code: string, address: string, message: string } | null {
  const e = err as NodeJS.ErrnoException & { address?: string, port?: number, hostname?: string }
  // A `listen` host name the resolver does not know fails in getaddrinfo, before any listen.
  const unresolved = e.syscall === 'getaddrinfo'
    ? listen.find((l) => l.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1') === e.hostname)
    : undefined
  const why = unresolved !== undefined
    ? 'host name not found (`listen` takes an IP address, or a name /etc/hosts or DNS resolves)'
    : e.syscall === 'listen' && e.code !== undefined ? LISTEN_ERRORS[e.code] : undefined
  if (why === undefined || e.code === undefined) return null
  // A unix socket's error has port -1.
  const address = unresolved ?? (typeof e.port === 'number' && e.port >= 0 ? `${(e.address ?? '').includes(':') ? `[${e.address ?? ''}]` : e.address ?? ''}:${e.port}` : `unix:${e.address ?? ''}`)
  return { code: e.code, address, message: `cannot listen on ${address}: ${why}` }
}

/** Where Node binds a port given alone (`:8000`): `::` (dual-stack) when an IPv6 socket can be opened, else `0.0.0.0`. */
let wildcardHost: Promise<string> | null = null
function wildcard (): Promise<string> {
  wildcardHost ??= new Promise<string>((resolve) => {
    // As net.Server.listen decides it: it tries `::` first and falls back to `0.0.0.0` on any error.
    const probe = createNetServer()
    probe.once('error', () => resolve('0.0.0.0'))
    probe.listen(0, '::', () => probe.close(() => resolve('::')))
  })
  return wildcardHost
}

/** An IP address in one spelling (`0:0::1` is `::1`). */
function canonicalIp (address: string): string {
  const family = isIP(address)
  if (family === 0) return address
  const printed = new SocketAddress({ address, family: family === 6 ? 'ipv6' : 'ipv4' }).address
  // An IPv4-mapped address (`::ffff:127.0.0.1`, however spelled) is that IPv4 socket on Linux: a
  // reload between the two spellings keeps it (check's addressKey says the same, config/spawns.ts).
  return printed.startsWith('::ffff:') && isIP(printed.slice(7)) === 4 ? printed.slice(7) : printed
}

/** The key of a TCP socket: its bound IP and the port as the file spells it (0 stays 0: the port the OS gave is kept). */
const tcpKey = (ip: string, port: number): string => `tcp:${canonicalIp(ip)}:${port}`

/**
 * The socket a `listen` spec would bind, as a key comparable with `Bound.key`, resolved the way
 * bind() resolves it: a unix path made absolute against the cwd (libuv binds a relative path
 * there); a host name looked up as net.Server.listen looks it up (dns.lookup with the process's
 * defaults, which gives one address: the first the resolver returns when there are several, and
 * the one address the bind takes); no host as Node binds a port alone (wildcard()). null when the
 * name does not resolve (its bind fails and says so).
 */
async function socketKey (spec: string): Promise<string | null> {
  if (spec.startsWith('unix:')) return `unix:${resolve(spec.slice(5))}`
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(spec)
  if (m === null) return null
  const host = m[1]
  const port = Number(m[2])
  if (host === '') return tcpKey(await wildcard(), port)
  if (isIP(host) !== 0) return tcpKey(host, port)
  try {
    return tcpKey((await lookup(host)).address, port)
  } catch {
    return null
  }
}

/** One bound `listen` address. */
interface Bound {
  /** As the file spells it. */
  spec: string
  /**
   * The socket it is (socketKey): a reload keeps it while the file has an address that resolves to
   * it, however spelled (`localhost:8000` for `127.0.0.1:8000`, a relative unix path for its absolute one).
   */
  readonly key: string
  readonly server: Server
  /** `http://host:port` or `unix:/path`. */
  readonly shown: string
  /** Every accepted connection still open, WebSocket tunnels included (destroyed when a drain times out). */
  readonly sockets: Set<Socket>
}

export interface GatewayOptions {
  configFile: string
  log: Logger
  env?: NodeJS.ProcessEnv
  /** Handed to every generation's `createProxy` (src/core/scavenge.ts). */
  gc?: GcFunction | false
}

export class Gateway {
  private gen: Generation | null = null
  /** Bound listeners by their `listen` spec. */
  private readonly listeners = new Map<string, Bound>()
  private reloads = 0
  /** The reload building now, and the one asked for meanwhile (runs after it). */
  private reloading: Promise<boolean> | null = null
  private queued: Promise<boolean> | null = null
  private readonly draining = new Set<Promise<void>>()
  /** Generations whose proxy is draining (closed by a reload's swap or a stop), until drained. */
  private readonly proxyDrains = new Map<Generation, Promise<void>>()
  /** The first spawn set; every later one shares its record of live managers (groups()). */
  private readonly lineage: SpawnSet
  private closing: Promise<void> | null = null
  /** Aborted by close(): a reload stops waiting for its new spawns to be ready. */
  private readonly closed = new AbortController()
  /** Bound addresses, as `http://host:port` or `unix:/path`. */
  get addresses (): string[] { return [...this.listeners.values()].map((b) => b.shown) }

  /** The access log every generation writes to (reopened on SIGUSR1 and reloads). */
  private readonly access: AccessLogFile

  constructor (private readonly opts: GatewayOptions) {
    this.lineage = SpawnSet.empty(opts.log)
    this.access = new AccessLogFile({ onError: (err, path) => { opts.log.error({ err, code: 'ERR_ACCESS_LOG', path }, 'access log: write failed; its lines are dropped until SIGUSR1 or a reload reopens it') } })
  }

  get current (): Generation | null { return this.gen }

  private async build (prev: SpawnSet, given?: OperatorConfig, ready?: AbortSignal): Promise<{ gen: Generation, retired: Awaited<ReturnType<SpawnSet['next']>>['retired'] }> {
    const config = given ?? (await loadConfigOrThrow(this.opts.configFile, this.opts.env !== undefined ? { env: this.opts.env } : {})).config
    // Opened before any spawn starts: a log that cannot be opened fails the start (as nginx) or the reload.
    const al = config.accessLog
    const accessLog = al === undefined ? null : await openAccessLogTarget({ ...al, path: al.path === 'stdout' ? al.path : resolve(dirname(this.opts.configFile), al.path) })
    const { set, retired } = await prev.next(config, ready).catch((err: unknown) => { accessLog?.discard(); throw err })
    let proxy: Proxy
    try {
      const { spawns: _s, tenants: _t, runDir: _r, logDir: _l, accessLog: _a, ...rest } = config
      proxy = await createProxy({ ...rest, sources: set.sources(), processStarters: set.starters(), logger: this.opts.log, ...(this.opts.gc !== undefined ? { gc: this.opts.gc } : {}) })
    } catch (err) {
      // Undo only what this attempt started; components kept from `prev` keep serving.
      await set.retire(set.components.filter((c) => !prev.components.includes(c)))
      accessLog?.discard()
      throw err
    }
    const st = config.status
    // Read at every snapshot: a reload's changes to `listen` show once it swaps.
    const listeners = this.listeners
    const status = st === undefined
      ? null
      : createStatus({ routes: proxy.routes, events: proxy.events, get inflight () { return proxy.inflight }, spawns: spawnView(set), get listening () { return [...listeners.values()].map((b) => b.shown) } }, {
        ...(st.path !== undefined ? { path: st.path } : {}),
        ...(st.metricsPath !== undefined ? { metricsPath: st.metricsPath } : {}),
        ...(st.allow !== undefined ? { allow: st.allow } : {}),
        ...(st.hosts !== undefined ? { hosts: st.hosts } : {}),
        // Behind a trusted front proxy the client it forwards for must be allowed too.
        ...(config.trustedProxies !== undefined ? { trustedProxies: config.trustedProxies } : {}),
        ...(config.forwardedHeader !== undefined ? { forwardedHeader: config.forwardedHeader } : {}),
        // A reload: counters carry on from the status this one replaces, never down to zero.
        ...(this.gen?.status != null ? { previous: this.gen.status } : {}),
      })
    // Valid, but open to other tenants' code on a shared host: said at each start and reload.
    for (const a of sharedHostAdvice(config)) this.opts.log.warn({ path: a.path }, a.message)
    return { gen: { config, proxy, spawns: set, status, accessLog }, retired }
  }

  /** Load, start spawns, listen. Throws ConfigError (exit 2) or a runtime error (exit 1). */
  async start (): Promise<void> {
    const { gen } = await this.build(this.lineage)
    this.gen = gen
    void this.access.use(gen.accessLog, gen.proxy.events)
    try {
      for (const l of listenSpecs(gen.config)) this.adopt(await this.bind(l))
    } catch (err) {
      await this.close()
      throw err
    }
  }

  private handle (req: IncomingMessage, res: ServerResponse): void {
    const g = this.gen
    if (g === null) { res.writeHead(503).end(); return }
    if (g.status?.handler(req, res) === true) return
    // No `next`: an unmatched request gets the proxy's own 404 (ERR_NO_ROUTE), in the access log.
    g.proxy.handler(req, res)
  }

  /**
   * True for what the 'upgrade' listener takes: the status live view's WebSocket, and an upgrade
   * the proxy would tunnel (`proxy.shouldUpgrade`); anything else reaches `handle` as a plain request.
   */
  private shouldUpgrade (req: IncomingMessage): boolean {
    const g = this.gen
    if (g === null) return true
    if (g.status !== null && g.config.status !== undefined && isStatusLive(req, g.config.status.path ?? STATUS_DEFAULTS.path)) return true
    return g.proxy.shouldUpgrade(req)
  }

  /**
   * Bind `spec`; not serving anyone's listeners list until adopt(). `held`: the listeners the
   * config keeps beside it (default: those adopted so far).
   */
  private async bind (spec: string, held: Iterable<Bound> = this.listeners.values()): Promise<Bound> {
    const unix = spec.startsWith('unix:') ? spec.slice(5) : null
    // The same unix socket named twice (`./s.sock` and its absolute path): the stale-file unlink
    // below would take the file from under the listener that has it. Refused as the kernel
    // refuses a TCP address bound twice.
    if (unix !== null && [...held].some((b) => b.key === `unix:${resolve(unix)}`)) {
      throw Object.assign(new Error(`listen EADDRINUSE: address already in use ${unix}`), { code: 'EADDRINUSE', syscall: 'listen', address: unix, port: -1 })
    }
    // shouldUpgradeCallback (Node >= 22.21 / 24.9; Node 20 ignores it, and @types/node 20 lacks
    // it): an Upgrade no route can carry is served as a plain request, as nginx does.
    const options = { requestTimeout: 0, shouldUpgradeCallback: (req: IncomingMessage) => this.shouldUpgrade(req) } as ServerOptions
    const server = createServer(options, (req, res) => this.handle(req, res))
    server.on('upgrade', (req, socket, head) => {
      const g = this.gen
      if (g === null) { socket.destroy(); return }
      if (g.status?.upgrade(req, socket, head) === true) return
      g.proxy.upgrade(req, socket, head)
    })
    server.on('checkContinue', (req, res) => {
      const g = this.gen
      if (g !== null) g.proxy.checkContinue(req, res)
      else res.writeHead(503).end()
    })
    server.on('clientError', (err, socket) => {
      const g = this.gen
      if (g !== null) g.proxy.clientError(err, socket)
      else socket.destroy()
    })
    // Without a listener node:http closes a CONNECT's socket unanswered.
    server.on('connect', (req, socket) => {
      const g = this.gen
      if (g !== null) g.proxy.connect(req, socket)
      else socket.destroy()
    })
    const sockets = new Set<Socket>()
    server.on('connection', (socket: Socket) => {
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      if (unix !== null) {
        // A stale socket file from a crashed run would make listen fail with EADDRINUSE.
        try { unlinkSync(unix) } catch {}
        server.listen(unix, () => { server.off('error', reject); resolve() })
      } else {
        const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(spec)
        if (m === null) { reject(new Error(`listen ${spec}: expected host:port or unix:/path`)); return }
        server.listen(Number(m[2]), m[1] === '' ? undefined : m[1], () => { server.off('error', reject); resolve() })
      }
    })
    const a = server.address()
    const shown = typeof a === 'string' ? `unix:${a}` : `http://${(a as AddressInfo).family === 'IPv6' ? `[${(a as AddressInfo).address}]` : (a as AddressInfo).address}:${(a as AddressInfo).port}`
    const key = typeof a === 'string' ? `unix:${resolve(a)}` : tcpKey((a as AddressInfo).address, Number(/:(\d+)$/.exec(spec)?.[1] ?? (a as AddressInfo).port))
    const bound: Bound = { spec, key, server, shown, sockets }
    if (unix !== null) {
      try { chmodSync(unix, 0o660) } catch (err) { await this.unbind([bound]); throw err }
    }
    return bound
  }

  /**
   * The listeners a reload's `specs` keep, by spec: one spelled the same, else one whose socket the
   * spec resolves to (socketKey), as nginx compares socket addresses. Each listener is kept once.
   */
  private async matchListeners (specs: string[]): Promise<Map<string, Bound>> {
    const kept = new Map<string, Bound>()
    const free = new Set(this.listeners.values())
    for (const spec of specs) {
      const b = this.listeners.get(spec)
      if (b !== undefined) { kept.set(spec, b); free.delete(b) }
    }
    for (const spec of specs) {
      if (kept.has(spec) || free.size === 0) continue
      const key = await socketKey(spec)
      const b = [...free].find((x) => x.key === key)
      if (b !== undefined) { kept.set(spec, b); free.delete(b) }
    }
    return kept
  }

  private adopt (b: Bound): void {
    this.listeners.set(b.spec, b)
    this.opts.log.info({ address: b.shown }, 'listening')
  }

  /** Close listeners nobody adopted (a reload that failed): they have served nobody's file yet. */
  private async unbind (list: Bound[]): Promise<void> {
    await Promise.all(list.map((b) => new Promise<void>((resolve) => {
      b.server.close(() => resolve())
      b.server.closeAllConnections()
      for (const s of b.sockets) s.destroy()
    })))
  }

  /**
   * A listener the reloaded file no longer has: it stops accepting now; its open connections
   * finish as on a graceful stop — idle keep-alive ones are closed as they become idle — and
   * whatever is still open after `graceMs` (a long request, a WebSocket tunnel) is cut. Closing
   * the server removes a unix socket's file.
   */
  private stopListening (b: Bound, graceMs: number): void {
    const done: Promise<void> = (async () => {
      const closed = new Promise<void>((resolve) => b.server.close(() => resolve()))
      b.server.closeIdleConnections()
      // A keep-alive connection becomes idle when its request ends: closed then.
      const sweep = setInterval(() => b.server.closeIdleConnections(), 50)
      let timer: NodeJS.Timeout | undefined
      const late = await Promise.race([closed.then(() => false), new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), graceMs) })])
      clearTimeout(timer)
      clearInterval(sweep)
      if (late) {
        b.server.closeAllConnections()
        for (const s of b.sockets) s.destroy()
        await closed
      }
      this.opts.log.info({ address: b.shown, ...(late ? { cut: true } : {}) }, 'stopped listening')
    })().catch((err: unknown) => { this.opts.log.error({ err, address: b.shown }, 'reload: closing a removed listener failed') })
      .finally(() => { this.draining.delete(done) })
    this.draining.add(done)
  }

  /**
   * Re-read the config; true when the new one is serving (the old generation may still be
   * draining). Reloads never build at once: one asked for while another builds runs once more
   * after it, so the file is read again after the last HUP (nginx re-reads on every one). The
   * drain of the old generation is not part of it: a HUP during a drain starts a new reload.
   */
  reload (): Promise<boolean> {
    if (this.reloading === null) return this.runReload()
    this.queued ??= this.reloading.then(() => { this.queued = null; return this.runReload() })
    return this.queued
  }

  private runReload (): Promise<boolean> {
    const p: Promise<boolean> = this.doReload().finally(() => { if (this.reloading === p) this.reloading = null })
    this.reloading = p
    return p
  }

  private async doReload (): Promise<boolean> {
    const old = this.gen
    if (old === null || this.closing !== null) return false
    let config: OperatorConfig
    try {
      config = (await loadConfigOrThrow(this.opts.configFile, this.opts.env !== undefined ? { env: this.opts.env } : {})).config
    } catch (err) {
      const issues = (err as { issues?: unknown[] }).issues
      this.opts.log.error({ err: issues === undefined ? err : undefined, issues }, 'reload rejected; the previous config keeps serving')
      return false
    }
    // New addresses are bound before anything else starts, as nginx does: one that cannot be bound
    // rejects the reload, and what this reload had bound is closed again.
    const specs = listenSpecs(config)
    const kept = await this.matchListeners(specs)
    const added: Bound[] = []
    try {
      for (const spec of specs) if (!kept.has(spec)) added.push(await this.bind(spec, [...kept.values(), ...added]))
    } catch (err) {
      await this.unbind(added)
      const f = listenFailure(err, specs)
      if (f !== null) this.opts.log.error({ code: f.code, address: f.address, reason: f.message }, 'reload rejected; the previous config keeps serving')
      else this.opts.log.error({ err }, 'reload rejected; the previous config keeps serving')
      return false
    }
    let next: Awaited<ReturnType<Gateway['build']>>
    try {
      next = await this.build(old.spawns, config, this.closed.signal)
    } catch (err) {
      await this.unbind(added)
      const issues = (err as { issues?: unknown[] }).issues
      if (old.spawns.stopped.length > 0) return await this.restore(old, err, issues)
      this.opts.log.error({ err: issues === undefined ? err : undefined, issues }, 'reload rejected; the previous config keeps serving')
      return false
    }
    this.gen = next.gen
    // Unchanged addresses keep their sockets; removed ones stop accepting now and drain as on a stop.
    const grace = parseDuration(old.config.drainTimeout ?? '30s') ?? 30_000
    const keeping = new Set(kept.values())
    for (const b of this.listeners.values()) if (!keeping.has(b)) this.stopListening(b, grace)
    // From now on listed in the new file's order, under its spelling.
    this.listeners.clear()
    for (const spec of specs) {
      const b = kept.get(spec)
      if (b === undefined) continue
      b.spec = spec
      this.listeners.set(spec, b)
    }
    for (const b of added) this.adopt(b)
    void this.access.use(next.gen.accessLog, next.gen.proxy.events)
    this.reloads++
    this.opts.log.info({ reloads: this.reloads, routes: next.gen.proxy.routes.length, spawns: next.gen.spawns.status().length, addresses: this.addresses }, 'reloaded')
    this.retire(old, next.retired)
    return true
  }

  /**
   * A reload failed after it had stopped old spawns (a fixed address reused, then the new spawn
   * would not start): the previous config is built again around its surviving components, so it
   * really keeps serving — those spawns had a gap, nothing else.
   */
  private async restore (old: Generation, err: unknown, issues: unknown[] | undefined): Promise<boolean> {
    const names = old.spawns.stopped.flatMap((c) => c.names)
    this.opts.log.error({ err: issues === undefined ? err : undefined, issues, spawns: names }, 'reload rejected; restarting the previous config\'s spawns it had stopped')
    try {
      const again = await this.build(old.spawns, old.config, this.closed.signal)
      this.gen = again.gen
      void this.access.use(again.gen.accessLog, again.gen.proxy.events)
      this.retire(old, again.retired)
      this.opts.log.warn({ spawns: names }, 'reload rejected; the previous config keeps serving')
    } catch (err2) {
      // Requests the old routes held for those spawns (spawn-set.ts, SpawnRoute) wait no longer.
      old.spawns.release()
      this.opts.log.error({ err: err2, spawns: names }, 'reload rejected, and the previous config\'s spawns could not be restarted')
    }
    return false
  }

  /**
   * The old routes finish what they are serving, then the spawns nobody uses any more stop. "Nobody"
   * includes older generations still draining: a spawn kept by an earlier reload still runs their
   * requests, which get their own drainTimeout, not the spawn's stopTimeout.
   */
  private retire (old: Generation, retired: Awaited<ReturnType<Gateway['build']>>['retired']): void {
    const done: Promise<void> = (async () => {
      await this.drainProxy(old)
      await this.olderDrains((g) => g !== old && g.spawns.components.some((c) => retired.includes(c)))
      await old.spawns.retire(retired)
    })().catch((err: unknown) => { this.opts.log.error({ err }, 'reload: stopping the old generation failed') })
      .finally(() => { this.draining.delete(done) })
    this.draining.add(done)
  }

  /**
   * Close `g`'s status and proxy: its requests finish (up to its drainTimeout). Once per
   * generation; tracked in `proxyDrains` until done.
   */
  private drainProxy (g: Generation): Promise<void> {
    let p = this.proxyDrains.get(g)
    if (p === undefined) {
      const grace = parseDuration(g.config.drainTimeout ?? '30s') ?? 30_000
      p = (async () => {
        await g.status?.close()
        await g.proxy.close(grace)
      })()
      this.proxyDrains.set(g, p)
      void p.catch(() => {}).finally(() => { this.proxyDrains.delete(g) })
    }
    return p
  }

  /** Resolves once the old generations `which` picks have drained their requests (errors are logged by their retire). */
  private async olderDrains (which: (g: Generation) => boolean): Promise<void> {
    await Promise.all([...this.proxyDrains].filter(([g]) => which(g)).map(([, p]) => p.catch(() => {})))
  }

  /** Stop listening, drain in-flight requests, stop every spawned process. Idempotent. */
  close (): Promise<void> {
    this.closed.abort()
    this.closing ??= this.doClose()
    return this.closing
  }

  private async doClose (): Promise<void> {
    await this.reloading
    await this.queued
    const g = this.gen
    const servers = [...this.listeners.values()].map((b) => b.server)
    const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
    for (const s of servers) s.closeIdleConnections()
    if (g !== null) {
      await this.drainProxy(g)
      // Old generations still draining run their requests on this one's kept spawns and over
      // these listeners' connections: they finish first, each up to its own drainTimeout.
      await this.olderDrains((o) => o !== g)
      for (const s of servers) s.closeAllConnections()
      await g.spawns.close()
    }
    // Old generations still draining after reloads stop on their own clock (their drainTimeout).
    await Promise.all([...this.draining])
    await closed
    // Last: the drained requests' lines are written before the file closes.
    await this.access.close()
  }

  /**
   * SIGUSR1 (logrotate's postrotate): open the access log's path again. Lines of requests that
   * end before the switch go to the old (renamed) file, the others to the new one. When the file
   * cannot be opened the old one stays in use and the error is logged.
   */
  async reopenLogs (): Promise<void> {
    try {
      const path = await this.access.reopen()
      if (path !== null) this.opts.log.info({ path }, 'access log reopened')
    } catch (err) {
      const issues = (err as { issues?: Array<{ message: string }> }).issues
      this.opts.log.error({ code: 'ERR_ACCESS_LOG', err: issues === undefined ? err : undefined }, issues?.[0]?.message ?? 'access log: reopen failed; the old file stays in use')
    }
  }

  /**
   * Process groups of every spawned process — socket spawns' processes, CGI children and the fork
   * server; of the current generation, a reload being built and retired generations still
   * draining: the last resort of a second signal, so none outlives proxycore. Asked of the
   * lineage's first set, which shares the others' `live` managers and exists from start() on, so
   * spawns still starting up count too.
   */
  groups (): number[] {
    return this.lineage.groups()
  }
}
