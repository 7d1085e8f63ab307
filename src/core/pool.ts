/**
 * Pools: the `route -> pool -> backend` half of lighttpd's `ext -> host -> procs` model.
 *
 * A BackendPool follows a BackendSource (a fixed list, or a spawn's live processes), keeps one
 * Backend per endpoint with the adapter's client for it, asks the balancer for one, and applies
 * passive health: a failed connect disables a backend for `disableTime` (never the only one), and so
 * do `maxFails` failed attempts after the connect (reset, closed or timed out before the response
 * head, or an invalid head) within `disableTime` (never the last usable one); the whole pool going
 * down or coming back is logged once per transition, never once per request.
 */
import { parseEndpoint } from './endpoint.js'
import { createBalancer, type BalanceKey, type BalanceMode, type Balancer } from './balancers.js'
import type { ProxyEvents } from './events.js'
import type { BackendClient, BackendSource, ClientContext, Endpoint, Logger, ProtocolAdapter, SourceEndpoint } from './types.js'

/** How long a backend whose listen queue was full is skipped (lighttpd: 1 s for EAGAIN). */
const OVERLOAD_DISABLE_MS = 1000

/**
 * Failed attempts after the connect that disable a backend, within one disableTime. nginx's
 * max_fails defaults to 1, but nginx counts a connect failure and a failed exchange alike; here a
 * connect failure disables at once (attemptFailed is the rest), and one failed exchange proves
 * little: a request that crashes its worker (the "query of death") fails on each of the 1 + retries
 * backends it is sent to, and with 1 it would disable them all. 3 needs three failures on the same
 * backend with no success in between (a success resets the count) within disableTime: a backend
 * that resets or hangs on every request is out after its third, at worst 3 failed requests.
 */
export const DEFAULT_MAX_FAILS = 3

/**
 * The failures after the connect that count against a backend (BackendPool.attemptFailed), before
 * its response head: nginx's error (reset, closed), timeout (the head's) and invalid_header (a
 * malformed response, a protocol violation), for an upgrade the same codes, and ERR_UPGRADE_FAILED
 * (a 101 without an Upgrade field). Not those a single
 * script's output can cause while its backend is sound (a forbidden header, an oversized head, a
 * CGI exit), nor the client's.
 */
const ATTEMPT_FAILURES: ReadonlySet<string> = new Set(['ERR_BACKEND_RESET', 'ERR_BACKEND_CLOSED', 'ERR_HEADERS_TIMEOUT', 'ERR_BAD_RESPONSE', 'ERR_PROTOCOL', 'ERR_UPGRADE_FAILED'])

/** Whether `err`, which ended an attempt before its response head, counts against the backend. */
export function isFailedAttempt (err: { code: string, phase: string }): boolean {
  return err.phase !== 'connect' && ATTEMPT_FAILURES.has(err.code)
}

/**
 * Backend states:
 * - up:       routable.
 * - disabled: a connect failed, or `maxFails` attempts failed after it; not routable until
 *             `disabledUntil`, then tried again.
 * - draining: gone from the source (recycled, removed on reload); finishes in-flight, then closes.
 */
export type BackendState = 'up' | 'disabled' | 'draining'

export class Backend {
  inflight = 0
  requests = 0
  /** Failed connects (the status page's and the metrics' `failures`). */
  failures = 0
  /** Failed attempts after the connect since the last success, in the window from `failWindowStart`. */
  attemptFails = 0
  failWindowStart = 0
  state: BackendState = 'up'
  disabledUntil = 0
  lastError = ''
  constructor (readonly sourceId: string, readonly endpoint: Endpoint, readonly client: BackendClient) {}
}

export interface PoolOptions {
  name: string
  source: BackendSource
  adapter: ProtocolAdapter
  adapterOptions: unknown
  ctx: ClientContext
  balance: BalanceMode
  /** ms a backend stays disabled after a failed connect. */
  disableTime: number
  /**
   * Failed attempts after the connect (attemptFailed) within `disableTime` that disable a backend;
   * default DEFAULT_MAX_FAILS; 0 = such failures never disable.
   */
  maxFails?: number
  events: ProxyEvents
  log: Logger
  now?: () => number
}

export class BackendPool {
  readonly name: string
  readonly source: BackendSource
  /** Routable backends in source order (stable order keeps hash/sticky keys in place). */
  backends: Backend[] = []
  readonly draining = new Set<Backend>()
  private readonly byId = new Map<string, Backend>()
  private readonly balancer: Balancer<Backend>
  private readonly unsubscribe: () => void
  private readonly now: () => number
  private down = false
  private closed = false

  constructor (private readonly opts: PoolOptions) {
    this.name = opts.name
    this.source = opts.source
    this.balancer = createBalancer<Backend>(opts.balance)
    this.now = opts.now ?? Date.now
    this.sync()
    this.unsubscribe = opts.source.subscribe(() => this.sync())
  }

  /** Follow the source: new endpoints get a client, vanished ones drain. */
  private sync (): void {
    if (this.closed) return
    const list: readonly SourceEndpoint[] = this.source.list()
    const seen = new Set<string>()
    const next: Backend[] = []
    for (const ep of list) {
      seen.add(ep.id)
      let b = this.byId.get(ep.id)
      if (!b) {
        const endpoint = ep.address.startsWith('process:')
          ? { kind: 'process' as const, id: ep.address.slice(8) }
          : parseEndpoint(ep.address)
        b = new Backend(ep.id, endpoint, this.opts.adapter.createClient(endpoint, this.opts.adapterOptions, this.opts.ctx))
        this.byId.set(ep.id, b)
      }
      next.push(b)
    }
    for (const [id, b] of this.byId) {
      if (seen.has(id)) continue
      this.byId.delete(id)
      b.state = 'draining'
      this.draining.add(b)
      this.reapIfIdle(b)
    }
    this.backends = next
  }

  private readonly usable = (b: Backend): boolean => {
    if (b.state === 'up') return true
    if (b.state === 'disabled' && this.now() >= b.disabledUntil) {
      b.state = 'up'
      this.opts.events.backendState('backend:enabled', { pool: this.name, backend: b.endpoint.id, state: 'up' })
      return true
    }
    return false
  }

  /** Pick a backend, skipping those already tried for this exchange. */
  pick (key: BalanceKey, tried: Set<Backend> | null): Backend | null {
    const usable = tried === null ? this.usable : (b: Backend) => !tried.has(b) && this.usable(b)
    const b = this.balancer(this.backends, usable, key)
    if (b !== null && this.down) this.transition(false)
    return b
  }

  /** Whether a pick for an exchange that tried `tried` would find a backend. */
  hasUntried (tried: ReadonlySet<Backend>): boolean {
    return this.backends.some((b) => !tried.has(b) && this.usable(b))
  }

  /** ms until the first disabled backend comes back (for Retry-After), at least 1 s. */
  retryAfterSeconds (): number {
    let soonest = Infinity
    for (const b of this.backends) if (b.state === 'disabled') soonest = Math.min(soonest, b.disabledUntil - this.now())
    return Number.isFinite(soonest) ? Math.max(1, Math.ceil(soonest / 1000)) : Math.max(1, Math.ceil(this.opts.disableTime / 1000))
  }

  started (b: Backend): void {
    b.inflight++
    b.requests++
    this.source.requestStarted?.(b.sourceId)
  }

  finished (b: Backend): void {
    b.inflight--
    this.source.requestDone?.(b.sourceId)
    if (b.state === 'draining') this.reapIfIdle(b)
  }

  /**
   * Passive health: a connect to `b` failed, it is skipped for `disableTime`; or at most
   * OVERLOAD_DISABLE_MS when it is only busy: it refused for a full listen queue (`overloaded`), or
   * it answered FastCGI's FCGI_OVERLOADED (`reason` ERR_BACKEND_OVERLOADED). Either way it is up,
   * and a worker frees up soon: a whole disableTime would leave a one-backend pool answering 503.
   */
  connectFailed (b: Backend, reason: string, overloaded = false): void {
    b.failures++
    b.lastError = reason
    if (b.state === 'draining') return
    // A backend alone in its pool is never skipped (nginx: a single server is never considered
    // unavailable): there is nothing else to send to, and a 200 ms restart of the backend would
    // turn into disableTime of 503s. Each request tries it; the failures are counted.
    if (this.backends.length === 1 && this.backends[0] === b) return
    const busy = overloaded || reason === 'ERR_BACKEND_OVERLOADED'
    b.disabledUntil = this.now() + (busy ? Math.min(OVERLOAD_DISABLE_MS, this.opts.disableTime) : this.opts.disableTime)
    if (b.state !== 'disabled') {
      b.state = 'disabled'
      this.opts.events.backendState('backend:disabled', { pool: this.name, backend: b.endpoint.id, state: 'disabled', reason })
    }
    if (!this.down && this.allSkipped()) this.transition(true, reason)
  }

  /**
   * Passive health after the connect (nginx's "unsuccessful attempt": error, timeout, invalid
   * header): the connection to `b` was reset or closed, or its response head timed out or was
   * invalid, before any response head reached the client. Not a client's abort, not any status the
   * backend answers (a 5xx included): those are answers. `maxFails` of them within `disableTime`
   * (a fixed window from the first; a success in between starts over) disable `b` for
   * `disableTime`. Never the last usable backend of its pool: a pool whose every backend fails
   * this way gains nothing from 503s in place of 502s, and a stream of crashing requests must not
   * take a whole pool down.
   */
  attemptFailed (b: Backend, code: string): void {
    b.lastError = code
    const max = this.opts.maxFails ?? DEFAULT_MAX_FAILS
    if (b.state !== 'up' || max <= 0) return
    const now = this.now()
    if (b.attemptFails === 0 || now - b.failWindowStart >= this.opts.disableTime) {
      b.attemptFails = 0
      b.failWindowStart = now
    }
    b.attemptFails++
    if (b.attemptFails < max) return
    if (!this.backends.some((x) => x !== b && this.usable(x))) return
    const n = b.attemptFails
    b.attemptFails = 0
    b.disabledUntil = now + this.opts.disableTime
    b.state = 'disabled'
    this.opts.events.backendState('backend:disabled', { pool: this.name, backend: b.endpoint.id, state: 'disabled', reason: `${code} (${n} failed attempts within ${this.opts.disableTime} ms)` })
  }

  /** `b` sent a response head: the count of failed attempts starts over. */
  answered (b: Backend): void {
    b.attemptFails = 0
  }

  /**
   * Called when no backend is left for an exchange: the pool is down only if none is usable for
   * anybody, not when this exchange tried every one (a busy backend is not asked twice by one).
   */
  noneUsable (): void {
    if (!this.down && this.backends.length > 0 && this.allSkipped()) this.transition(true, 'no usable backend')
  }

  /**
   * Every backend is disabled and still within its disableTime. One whose time is over stays marked
   * disabled until a pick next looks at it (usable()), and it is routable all the same.
   */
  private allSkipped (): boolean {
    const now = this.now()
    return this.backends.every((x) => x.state === 'disabled' && now < x.disabledUntil)
  }

  private transition (down: boolean, reason?: string): void {
    this.down = down
    const e = { pool: this.name, backend: '*', state: down ? 'down' as const : 'up' as const, ...(reason ? { reason } : {}) }
    // One log line per transition (lighttpd: "all handlers for ... are down"), never per request.
    if (down) this.opts.log.error({ pool: this.name, reason, code: 'ERR_NO_BACKEND' }, `all backends of pool ${this.name} are down`)
    else this.opts.log.info({ pool: this.name }, `pool ${this.name} is back up`)
    this.opts.events.backendState(down ? 'pool:down' : 'pool:up', e)
  }

  private reapIfIdle (b: Backend): void {
    if (b.inflight > 0) return
    this.draining.delete(b)
    b.client.close().catch((err: unknown) => this.opts.log.warn({ pool: this.name, backend: b.endpoint.id, err }, 'closing a drained backend failed'))
  }

  get inflight (): number {
    let n = 0
    for (const b of this.backends) n += b.inflight
    for (const b of this.draining) n += b.inflight
    return n
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.unsubscribe()
    const all = [...this.byId.values(), ...this.draining]
    this.byId.clear()
    this.draining.clear()
    this.backends = []
    await Promise.allSettled(all.map((b) => b.client.close()))
  }

  destroy (reason?: Error): void {
    this.closed = true
    this.unsubscribe()
    for (const b of [...this.byId.values(), ...this.draining]) b.client.destroy(reason)
    this.byId.clear()
    this.draining.clear()
    this.backends = []
  }
}

/** A fixed list of backends: the `backends:` key of a route. */
export class StaticSource implements BackendSource {
  private readonly endpoints: SourceEndpoint[]
  constructor (readonly name: string, addresses: readonly string[]) {
    this.endpoints = addresses.map((a) => {
      const address = a.startsWith('process:') ? a : parseEndpoint(a).id
      return { id: address, address }
    })
  }

  list (): readonly SourceEndpoint[] { return this.endpoints }
  subscribe (): () => void { return () => {} }
  async ensure (): Promise<void> {}
}
