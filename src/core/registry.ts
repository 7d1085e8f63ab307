/**
 * Protocol adapters by name. The core never imports a protocol: built-in adapters register
 * themselves from the package entry point, custom ones through `registerAdapter()` or
 * `createProxy({ adapters })`.
 *
 * An adapter is code the core does not control, so the core only ever sees it through a guard
 * (`getAdapter` returns the guarded form): a `dispatch` or `upgrade` that throws or returns a
 * rejected promise fails its exchange with ERR_INTERNAL (a 500, or a cut connection after the
 * head) and a log line naming the adapter, never an uncaught exception, an unhandled rejection or a
 * request left to its head timeout; a `parseOptions` that throws something other than a
 * ConfigError becomes a config issue at its `at`; a `createClient` that throws, or returns no
 * client or a promise (whose rejection is logged, never left unhandled), gives a client that fails
 * every exchange the same way, and at load `createProxy` rejects with a ConfigError naming the
 * route (src/proxy.ts); `close()` / `destroy()` that throw are logged, not passed on.
 */
import { ConfigError, ProxyError, type ConfigIssue } from './errors.js'
import type { BackendClient, ClientContext, Endpoint, Exchange, Logger, ProtocolAdapter, ResponseHandler, UpgradeHandler } from './types.js'

const registry = new Map<string, ProtocolAdapter>()

const NAME = /^[a-z][a-z0-9+.-]*$/

/**
 * One name, one adapter: a different adapter under a registered name (a built-in's included) would
 * silently take over every route of that protocol in the process, so it throws. The same object
 * again is a no-op.
 */
export function registerAdapter (adapter: ProtocolAdapter): void {
  // From JavaScript anything may come: refused here, not at the first route that uses it.
  const missing = notAnAdapter(adapter)
  if (missing !== null) throw new TypeError(`registerAdapter: not a protocol adapter (an object with name, capabilities, parseOptions and createClient): ${missing}`)
  if (typeof adapter.name !== 'string' || !NAME.test(adapter.name)) throw new TypeError(`adapter name ${JSON.stringify(adapter.name) ?? String(adapter.name)} must match ${NAME}`)
  const had = registry.get(adapter.name)
  if (had !== undefined && had !== adapter) throw new TypeError(taken(adapter.name))
  registry.set(adapter.name, adapter)
}

/**
 * The problems of `createProxy({ adapters })`, as config issues at `/adapters/<i>`: not an adapter,
 * a name no route could name, a name registered to another adapter (a built-in's included: a
 * per-proxy override would also replace it for the authorizer and the config checks), or two
 * different adapters under one name. The registered object itself, or one object twice, is fine.
 */
export function checkExtraAdapters (extra: readonly ProtocolAdapter[] | undefined): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  if (extra === undefined) return issues
  if (!Array.isArray(extra)) return [{ path: '/adapters', message: 'must be an array of protocol adapters' }]
  const seen = new Map<string, { adapter: ProtocolAdapter, at: number }>()
  extra.forEach((a: unknown, i) => {
    const at = `/adapters/${i}`
    const missing = notAnAdapter(a)
    if (missing !== null) {
      issues.push({ path: at, message: `not a protocol adapter (an object with name, capabilities, parseOptions and createClient): ${missing}` })
      return
    }
    const adapter = a as ProtocolAdapter
    const name: unknown = adapter.name
    if (typeof name !== 'string' || !NAME.test(name)) {
      issues.push({ path: `${at}/name`, message: `adapter name ${JSON.stringify(name) ?? String(name)} must match ${NAME}`, found: name })
      return
    }
    const had = registry.get(name)
    if (had !== undefined && had !== adapter) { issues.push({ path: at, message: taken(name), found: name }); return }
    const before = seen.get(name)
    if (before !== undefined && before.adapter !== adapter) {
      issues.push({ path: at, message: `adapter name ${JSON.stringify(name)} is also the name of a different adapter at /adapters/${before.at}: one name, one adapter`, found: name })
      return
    }
    if (before === undefined) seen.set(name, { adapter, at: i })
  })
  return issues
}

/** What makes `a` no adapter, said for the developer ("no capabilities object"), or null. */
function notAnAdapter (a: unknown): string | null {
  if (a === null || typeof a !== 'object') return `got ${a === null ? 'null' : typeof a}`
  const x = a as Partial<Record<keyof ProtocolAdapter, unknown>>
  const wrong: string[] = []
  if (x.capabilities === null || typeof x.capabilities !== 'object') wrong.push('no capabilities object')
  if (typeof x.parseOptions !== 'function') wrong.push('no parseOptions function')
  if (typeof x.createClient !== 'function') wrong.push('no createClient function')
  return wrong.length === 0 ? null : wrong.join(', ')
}

function taken (name: string): string {
  return `adapter name ${JSON.stringify(name)} is already registered to a different adapter${BUILT_IN.has(name) ? ' (a built-in one)' : ''}: one name, one adapter; pick another name`
}

/** The names src/index.ts registers, for the error message only. */
const BUILT_IN = new Set(['http', 'fastcgi', 'scgi', 'cgi', 'static'])

/** The adapter registered (or passed in `extra`) under `name`, in its guarded form. */
export function getAdapter (name: string, extra?: readonly ProtocolAdapter[]): ProtocolAdapter | undefined {
  if (extra !== undefined) for (const a of extra) if (a.name === name) return guarded(a)
  const a = registry.get(name)
  return a === undefined ? undefined : guarded(a)
}

export function adapterNames (extra?: readonly ProtocolAdapter[]): string[] {
  return [...new Set([...(extra ?? []).map((a) => a.name), ...registry.keys()])].sort()
}

// --- the guard -----------------------------------------------------------------------------------

const guards = new WeakMap<ProtocolAdapter, ProtocolAdapter>()
const isGuard = new WeakSet<ProtocolAdapter>()

/** One guard per adapter object, so `getAdapter(name)` is stable. */
function guarded (adapter: ProtocolAdapter): ProtocolAdapter {
  if (isGuard.has(adapter)) return adapter
  let g = guards.get(adapter)
  if (g === undefined) {
    g = new GuardedAdapter(adapter)
    guards.set(adapter, g)
    isGuard.add(g)
  }
  return g
}

class GuardedAdapter implements ProtocolAdapter {
  readonly name: string
  /** The adapter's own object: the core reads it on every request. */
  readonly capabilities: ProtocolAdapter['capabilities']

  constructor (private readonly inner: ProtocolAdapter) {
    this.name = inner.name
    this.capabilities = inner.capabilities
  }

  parseOptions (raw: unknown, at: string): unknown {
    try {
      return this.inner.parseOptions(raw, at)
    } catch (err) {
      if (err instanceof ConfigError) throw err
      throw new ConfigError([{ path: at, message: `the ${this.inner.name} adapter's parseOptions threw: ${describe(err)}` }])
    }
  }

  createClient (endpoint: Endpoint, opts: unknown, ctx: ClientContext): BackendClient {
    let client: BackendClient | undefined
    try {
      client = this.inner.createClient(endpoint, opts, ctx)
    } catch (err) {
      return new BrokenClient(this.inner.name, endpoint, ctx.log, `createClient threw: ${describe(err)}`, err)
    }
    if (isThenable(client)) {
      // An `async createClient`: the core makes its clients synchronously (a pool adds one per
      // endpoint as it appears), so the promise is refused; its rejection must not go unhandled,
      // and a client it resolves to is destroyed, not leaked.
      const adapter = this.inner.name
      Promise.resolve(client).then((c: unknown) => {
        try { (c as BackendClient | null)?.destroy?.() } catch { /* a client nobody uses */ }
      }, (err: unknown) => {
        ctx.log.error({ adapter, backend: endpoint.id, code: 'ERR_INTERNAL', err }, `the ${adapter} adapter's createClient rejected: ${describe(err)}`)
      })
      return new BrokenClient(adapter, endpoint, ctx.log, 'createClient returned a promise, not a BackendClient (an async createClient cannot be used: make the client synchronously, connect in dispatch)')
    }
    if (client === null || typeof client !== 'object' || typeof client.dispatch !== 'function') {
      return new BrokenClient(this.inner.name, endpoint, ctx.log, `createClient returned ${client === null ? 'null' : typeof client === 'object' ? 'an object without dispatch()' : typeof client}, not a BackendClient`)
    }
    return new GuardedClient(client, this.inner.name, endpoint, ctx.log)
  }
}

/** A client whose adapter bugs fail the exchange at hand instead of the process. */
class GuardedClient implements BackendClient {
  /** Present only when the adapter's client has one: the upgrade path asks `client.upgrade === undefined`. */
  readonly upgrade?: (exchange: Exchange, handler: UpgradeHandler) => void

  constructor (
    private readonly inner: BackendClient,
    private readonly adapter: string,
    private readonly endpoint: Endpoint,
    private readonly log: Logger,
  ) {
    if (typeof inner.upgrade === 'function') {
      this.upgrade = (exchange, handler) => {
        let r: unknown
        try { r = inner.upgrade?.(exchange, handler) } catch (err) { this.failed('upgrade', handler, err); return }
        if (isThenable(r)) Promise.resolve(r).catch((err: unknown) => this.failed('upgrade', handler, err))
      }
    }
  }

  dispatch (exchange: Exchange, handler: ResponseHandler): void {
    let r: unknown
    try { r = this.inner.dispatch(exchange, handler) } catch (err) { this.failed('dispatch', handler, err); return }
    // `dispatch` returns nothing; an `async dispatch` returns a promise whose rejection nobody else sees.
    if (isThenable(r)) Promise.resolve(r).catch((err: unknown) => this.failed('dispatch', handler, err))
  }

  get inflight (): number {
    try {
      const n = this.inner.inflight
      return typeof n === 'number' && n >= 0 ? n : 0
    } catch { return 0 }
  }

  close (): Promise<void> {
    let r: unknown
    try { r = this.inner.close() } catch (err) { this.logBug('close', err); return Promise.resolve() }
    return isThenable(r) ? Promise.resolve(r).then(() => {}, (err: unknown) => { this.logBug('close', err) }) : Promise.resolve()
  }

  destroy (reason?: Error): void {
    try { this.inner.destroy(reason) } catch (err) { this.logBug('destroy', err) }
  }

  /**
   * The adapter threw (or rejected) instead of reporting: the exchange fails with what it threw when
   * that is a ProxyError, else with ERR_INTERNAL. What the core already finished ignores the report.
   */
  private failed (method: string, handler: ResponseHandler | UpgradeHandler, err: unknown): void {
    let e: ProxyError
    if (err instanceof ProxyError) e = err
    else {
      this.logBug(method, err)
      e = new ProxyError('ERR_INTERNAL', `the ${this.adapter} adapter's ${method}() threw: ${describe(err)}`, { cause: err, phase: 'head', backend: this.endpoint.id })
    }
    try { handler.onError(e) } catch (err2) { this.logBug(`${method}'s error report`, err2) }
  }

  private logBug (method: string, err: unknown): void {
    this.log.error({ adapter: this.adapter, backend: this.endpoint.id, code: 'ERR_INTERNAL', err }, `the ${this.adapter} adapter's ${method}() threw: ${describe(err)}`)
  }
}

/** Stands for a client the adapter could not make: every exchange on it fails with ERR_INTERNAL. */
export class BrokenClient implements BackendClient {
  readonly inflight = 0

  constructor (
    readonly adapter: string,
    readonly endpoint: Endpoint,
    log: Logger,
    /** What went wrong, for the config error and the log. */
    readonly problem: string,
    cause?: unknown,
  ) {
    log.error({ adapter, backend: endpoint.id, code: 'ERR_INTERNAL', err: cause }, `the ${adapter} adapter's ${problem} (backend ${endpoint.id})`)
  }

  dispatch (_exchange: Exchange, handler: ResponseHandler): void { this.fail(handler) }
  upgrade (_exchange: Exchange, handler: UpgradeHandler): void { this.fail(handler) }
  close (): Promise<void> { return Promise.resolve() }
  destroy (): void {}

  private fail (handler: ResponseHandler | UpgradeHandler): void {
    handler.onError(new ProxyError('ERR_INTERNAL', `the ${this.adapter} adapter has no client for ${this.endpoint.id}: its ${this.problem}`, { phase: 'head', backend: this.endpoint.id }))
  }
}

function isThenable (x: unknown): x is PromiseLike<unknown> {
  return x !== null && x !== undefined && typeof (x as { then?: unknown }).then === 'function'
}

/** What an adapter threw, as text, whatever it threw (a string, null, an object without toString). */
function describe (err: unknown): string {
  if (err instanceof Error) return err.message
  if (typeof err === 'string') return err
  try { return String(err) } catch { return typeof err }
}
