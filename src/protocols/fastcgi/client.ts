/**
 * `BackendClient` for one FastCGI endpoint: discovery, a connection pool with FCGI_KEEP_CONN reuse,
 * multiplexing when the backend offers it, and a FIFO queue for everything above the backend's
 * limits — a busy backend delays requests, it never fails them (the core's admission bounds the
 * queue and its timeouts abort `exchange.signal`).
 *
 * Limits, in order of precedence:
 *   connections  = options.maxConnections, else FCGI_MAX_CONNS, else unbounded
 *   per connection = 1, or (options.multiplex && FCGI_MPXS_CONNS=1 && keepConn) FCGI_MAX_REQS,
 *                    at most 65535 (the 16-bit request id; 0 is reserved)
 * php reports FCGI_MAX_CONNS = its children; opening more connections than that would park the
 * extra ones in the listen backlog behind kept-alive idle connections, never to be accepted.
 */
import type { Socket } from 'node:net'
import { isAborted } from '../../core/abort.js'
import { ProxyError, fromSocketError, isProxyError } from '../../core/errors.js'
import { LiveSet } from '../../live-set.js'
import type { BackendClient, ClientContext, Endpoint, Exchange, ResponseHandler } from '../../core/types.js'
import { MAX_REQUEST_ID } from './codec.js'
import { FcgiConnection, type ConnectionOwner } from './connection.js'
import { NO_ANSWER, queryValues, type BackendValues } from './discovery.js'
import type { FastcgiOptions } from './options.js'
import { FcgiRequest, type RequestOwner } from './request.js'

/** Per-connection request cap when multiplexing and the backend gave no FCGI_MAX_REQS. */
const DEFAULT_MPX_REQS = 16

export { MAX_REQUEST_ID }

/**
 * How many requests one connection carries at once: 1, or when multiplexing the backend's
 * FCGI_MAX_REQS (DEFAULT_MPX_REQS when it gave none) — never more than there are request ids.
 */
export function requestsPerConnection (multiplex: boolean, maxReqs: number | null): number {
  if (!multiplex) return 1
  // discovery.ts only passes whole numbers ≥ 1 (up to 9 digits); anything else gets the default.
  if (maxReqs === null || !Number.isInteger(maxReqs) || maxReqs < 1) return DEFAULT_MPX_REQS
  return Math.min(maxReqs, MAX_REQUEST_ID)
}

export class FastcgiClient implements BackendClient, RequestOwner, ConnectionOwner {
  readonly backend: string
  readonly maxHeadSize: number
  readonly stderrLimit: number
  readonly keepConn: boolean
  readonly abortTimeout: number
  readonly log: ClientContext['log']
  private readonly endpoint: Endpoint
  private readonly opts: FastcgiOptions
  private readonly ctx: ClientContext
  private readonly queue: FcgiRequest[] = []
  /** Not a Set: see src/live-set.ts. */
  private readonly conns = new LiveSet<FcgiConnection>()
  private connecting = 0
  /** Connections closed to make way for a fresh one, still open: not counted against the limit. */
  private retiring = 0
  private unsettled = 0
  private discovery: 'none' | 'running' | 'done'
  private values: BackendValues = NO_ANSWER
  private multiplex = false
  private closing = false
  private closeWaiters: Array<() => void> = []
  private discoverySocket: Socket | null = null
  /** The operator was told once that an unknown connection limit costs reuse. */
  private toldNoLimit = false
  /**
   * A connect found the backend's listen queue full (EAGAIN on a unix socket) while connections of
   * ours were open to it: open no other connection until one of them finishes a request or closes.
   */
  private backlogFull = false
  /** The operator was told once that the listen queue filled up. */
  private toldBacklog = false

  constructor (endpoint: Endpoint, opts: FastcgiOptions, ctx: ClientContext) {
    this.endpoint = endpoint
    this.opts = opts
    this.ctx = ctx
    this.backend = endpoint.id
    this.log = ctx.log
    this.maxHeadSize = ctx.limits.maxResponseHeadSize
    this.stderrLimit = opts.stderrLimit
    this.keepConn = opts.keepConn
    this.abortTimeout = opts.abortTimeout
    this.discovery = opts.discovery ? 'none' : 'done'
  }

  get inflight (): number {
    return this.unsettled
  }

  /** What discovery found (for status pages and tests). */
  get backendValues (): Readonly<BackendValues> {
    return this.values
  }

  /** Open transport connections (for status pages and tests). */
  get connections (): number {
    return this.conns.size
  }

  /**
   * `ctx`: the context of the pool this exchange comes from (a shared client serves several, each
   * with its route's connect timeout); a connection opened for this request connects with it.
   */
  dispatch (exchange: Exchange, handler: ResponseHandler, ctx: ClientContext = this.ctx): void {
    if (this.closing) {
      handler.onError(new ProxyError('ERR_SHUTTING_DOWN', undefined, { phase: 'connect', backend: this.backend }))
      return
    }
    let req: FcgiRequest
    try {
      req = new FcgiRequest(exchange, handler, this, ctx)
    } catch (err) {
      handler.onError(isProxyError(err) ? err : new ProxyError('ERR_INTERNAL', String(err), { cause: err }))
      return
    }
    this.unsettled++
    if (isAborted(exchange)) return req.fail(req.abortReason())
    this.queue.push(req)
    this.pump()
    // Still queued behind the connection cap (pump takes from the front, so it is the last one;
    // not O(n) includes): nothing was sent. The core bounds that wait by the route's queueTimeout
    // (503 ERR_QUEUE_TIMEOUT, no failed attempt), not by timeouts.headers, until connectionReady.
    // A wait for discovery is a connect's, not the cap's: discover() tells those still queued after.
    if (this.discovery === 'done' && this.queue[this.queue.length - 1] === req) exchange.waitingForConnection?.()
  }

  close (): Promise<void> {
    this.closing = true
    return new Promise((resolve) => {
      this.closeWaiters.push(resolve)
      this.maybeClosed()
    })
  }

  destroy (reason?: Error): void {
    this.closing = true
    const err = isProxyError(reason) ? reason : new ProxyError('ERR_SHUTTING_DOWN', reason?.message, { cause: reason, backend: this.backend })
    for (const req of this.queue.splice(0)) req.fail(err)
    this.discoverySocket?.destroy()
    for (const conn of this.conns.values()) {
      for (const req of conn.requests.values()) req.fail(err)
      conn.destroy(err)
    }
    this.maybeClosed()
  }

  // --- scheduling ------------------------------------------------------------------------------

  private get maxConns (): number {
    return this.opts.maxConnections ?? this.values.maxConns ?? Infinity
  }

  private get perConnection (): number {
    return requestsPerConnection(this.multiplex, this.values.maxReqs)
  }

  private pump (): void {
    if (this.discovery !== 'done') {
      if (this.discovery === 'none' && this.queue.length > 0) this.discover()
      return
    }
    while (this.queue.length > 0) {
      const req = this.queue[0]!
      const conn = this.pick(req.replayable)
      if (conn !== null) {
        this.queue.shift()
        req.exchange.connectionReady?.()
        conn.start(req)
        continue
      }
      // Multiplexing: the connection being opened takes up to perConnection requests once it is
      // up (open() pumps then), a request that may not reuse one included (it has served
      // nothing). Opening one per waiting request instead put every request of a burst on a
      // connection of its own when the backend gives no FCGI_MAX_CONNS (Go's net/http/fcgi
      // answers FCGI_MPXS_CONNS=1 and nothing else). Waiting retires no idle connection either.
      if (this.multiplex && this.connecting > 0) return
      // A request that could not be sent again waits for a fresh connection: a reused one may be
      // closing under it (php-fpm's pm.max_requests ends a worker right after its last answer). An
      // idle reused connection makes way, and its worker takes the new one. With the backend's
      // limit unknown, it makes way even when there is room: a worker holds each idle connection,
      // so a new connection could otherwise be parked in the listen backlog behind them.
      if (!req.replayable && (this.maxConns === Infinity || !this.hasRoom())) this.retireIdle()
      if (!this.hasRoom()) return
      this.queue.shift()
      req.exchange.connectionReady?.()
      this.open(req)
    }
  }

  private hasRoom (): boolean {
    if (this.backlogFull) return false
    return this.conns.size - this.retiring + this.connecting < this.maxConns
  }

  /**
   * An idle kept-alive connection (most recently used first), else room on a multiplexed one. A
   * request that is not `replayable` only takes a connection that has served nothing yet.
   */
  private pick (mayReuse: boolean): FcgiConnection | null {
    let best: FcgiConnection | null = null
    for (const conn of this.conns.view()) {
      if (!conn.reusable || conn.closed || (!mayReuse && conn.served > 0)) continue
      if (conn.idle) best = conn
      else if (best === null && conn.requests.size < this.perConnection && conn.hasFreeId()) best = conn
    }
    return best
  }

  /** Close one idle connection that has served requests, to make way for a fresh one. */
  private retireIdle (): void {
    for (const conn of this.conns.view()) {
      if (!conn.idle || !conn.reusable || conn.closed || conn.served === 0) continue
      conn.retired = true
      this.retiring++
      conn.destroy(null)
      return
    }
  }

  private open (req: FcgiRequest): void {
    this.connecting++
    req.ctx.connect(this.endpoint).then((socket) => {
      this.connecting--
      if (this.closing && req.isSettled) {
        socket.destroy()
        return this.maybeClosed()
      }
      const conn = new FcgiConnection(socket, this, this.endpoint.kind === 'tcp')
      this.conns.add(conn)
      if (req.isSettled) this.release(conn)
      else conn.start(req)
      // A multiplexing connection may take more of the queue.
      this.pump()
    }, (err: unknown) => {
      this.connecting--
      if (this.waitForRoom(err, req)) return
      req.fail(connectError(err, this.backend))
      this.pump()
    })
  }

  /**
   * EAGAIN on a unix socket: the backend is up, its listen queue is full (php-fpm's listen.backlog,
   * all workers busy). When connections of ours are open to it, one of them will free a worker:
   * the request waits at the head of the queue, like any request above the limits, instead of
   * failing (nginx answers 502 "Resource temporarily unavailable", and a connect failure would
   * make the core disable the backend). With none of ours open, nothing would wake it: it fails
   * with the connect error (ERR_CONNECT_FAILED).
   */
  private waitForRoom (err: unknown, req: FcgiRequest): boolean {
    const cause = isProxyError(err) ? err.cause : err
    if ((cause as NodeJS.ErrnoException | undefined)?.code !== 'EAGAIN') return false
    // Only an open connection is sure to wake the queue (requestDone or connectionClosed); one
    // still connecting may fail the same way.
    if (this.conns.size === 0 || this.closing) return false
    this.backlogFull = true
    if (!this.toldBacklog) {
      this.toldBacklog = true
      this.log.warn({ backend: this.backend, connections: this.conns.size + this.connecting },
        'FastCGI backend listen queue is full (EAGAIN); requests wait for a connection to free up. Set options.maxConnections to its worker count (php-fpm: pm.max_children), or raise its listen backlog')
    }
    if (req.isSettled) return true
    this.queue.unshift(req)
    return true
  }

  private discover (): void {
    this.discovery = 'running'
    // With the connect timeout of the request that is waiting for it.
    const ctx = this.queue[0]?.ctx ?? this.ctx
    ctx.connect(this.endpoint).then((socket) => {
      if (this.closing && this.queue.length === 0) {
        socket.destroy()
        return NO_ANSWER
      }
      this.discoverySocket = socket
      return queryValues(socket, this.opts.discoveryTimeout)
    }).then((values) => {
      this.discoverySocket = null
      if (this.closing && this.queue.length === 0) return this.maybeClosed()
      this.values = values
      this.multiplex = this.opts.multiplex && this.keepConn && values.mpxsConns
      this.discovery = 'done'
      this.log.debug({ backend: this.backend, ...values }, 'FastCGI backend values')
      this.pump()
      // What pump left waits behind the connection cap from now on (see dispatch).
      for (const req of this.queue) req.exchange.waitingForConnection?.()
    }, (err: unknown) => {
      // The backend is unreachable: every queued request learns it now; the next one tries again.
      this.discovery = 'none'
      for (const req of this.queue.splice(0)) req.fail(connectError(err, this.backend))
    })
  }

  /** A connection has no active request: keep it idle, or close it. */
  private release (conn: FcgiConnection): void {
    if (!conn.idle || conn.closed) return
    if (!conn.reusable || !this.keepConn || this.closing) {
      conn.destroy(null)
      return
    }
    if (this.mayBeParked(conn)) {
      this.tellNoLimit()
      conn.destroy(null)
      return
    }
    if (this.queue.length === 0 && conn.idleTimer === null) {
      conn.idleTimer = setTimeout(() => conn.destroy(null), this.opts.idleTimeout)
      conn.idleTimer.unref()
    }
  }

  /**
   * Without a known FCGI_MAX_CONNS (php-fpm answers GET_VALUES without usable limits), a backend
   * with N workers that each hold one kept-alive connection leaves connection N+1 in its listen
   * backlog until a worker is freed — which only happens when we close a connection. So while any
   * other connection still waits for its first response byte, an idle one is closed, not kept.
   * An operator-set `maxConnections` is trusted to match the backend's workers instead.
   */
  private mayBeParked (idle: FcgiConnection): boolean {
    if (this.values.maxConns !== null || this.opts.maxConnections !== null) return false
    // A connection still being opened may land behind this one in the backlog.
    if (this.connecting > 0) return true
    for (const conn of this.conns.view()) {
      if (conn === idle || conn.closed) continue
      for (const req of conn.requests.values()) if (!req.gotResponse) return true
    }
    return false
  }

  /**
   * Closing idle connections instead of keeping them is safe but dear: under load it comes to a
   * connection per request (php-fpm with 4 workers, 32 clients: 0.64× the requests of
   * `maxConnections: 4`, at nearly twice the CPU per request). Said once per backend, the first time.
   */
  private tellNoLimit (): void {
    if (this.toldNoLimit) return
    this.toldNoLimit = true
    this.log.warn({ backend: this.backend },
      'FastCGI backend does not say how many connections it accepts (no FCGI_MAX_CONNS): idle connections are closed while requests wait; set options.maxConnections to its worker count (php-fpm: pm.max_children) to keep them alive')
  }

  private maybeClosed (): void {
    if (!this.closing || this.unsettled > 0 || this.connecting > 0) return
    for (const conn of this.conns.values()) if (conn.idle) conn.destroy(null)
    if (this.conns.size > 0) return
    for (const resolve of this.closeWaiters.splice(0)) resolve()
  }

  // --- RequestOwner ------------------------------------------------------------------------------

  settled (req: FcgiRequest, keepOnWire: boolean): void {
    this.unsettled--
    if (!keepOnWire) req.carrier?.drop(req)
    this.maybeClosed()
  }

  aborted (req: FcgiRequest): void {
    const i = this.queue.indexOf(req)
    if (i !== -1) this.queue.splice(i, 1)
    req.fail(req.abortReason())
  }

  // --- ConnectionOwner ---------------------------------------------------------------------------

  requestDone (conn: FcgiConnection, req: FcgiRequest, retry: boolean): void {
    this.backlogFull = false
    if (retry) this.requeue(req)
    this.release(conn)
    this.pump()
    this.maybeClosed()
  }

  requeue (req: FcgiRequest): void {
    req.resetForRetry()
    this.queue.unshift(req)
  }

  connectionClosed (conn: FcgiConnection): void {
    this.backlogFull = false
    if (conn.retired) this.retiring--
    this.conns.delete(conn)
    this.pump()
    this.maybeClosed()
  }

  noMultiplexing (): void {
    if (this.multiplex) this.log.warn({ backend: this.backend }, 'FastCGI backend cannot multiplex (CANT_MPX_CONN); multiplexing off')
    this.multiplex = false
  }
}

function connectError (err: unknown, backend: string): ProxyError {
  if (isProxyError(err)) {
    err.backend ??= backend
    return err
  }
  return fromSocketError(err as NodeJS.ErrnoException, 'connect', backend)
}
