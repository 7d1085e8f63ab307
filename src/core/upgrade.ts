/**
 * Protocol upgrades (WebSocket and any `Upgrade:`): the backend answers 101 and from then on the
 * proxy is a byte tunnel; a backend that answers with a plain response instead gets that response
 * written to the client socket, framed by the close of the connection.
 *
 *   admit (slot, authorizer) ─> pick ─> Upgrade request ─┬─ 101 ─> tunnel ─> both sides closed ─┐
 *        ^ connect failure: an untried backend (retries)  └─ other status ─> response, close ──┤
 *   refusal, head timeout, client gone (FIN or close) before the 101 ─────────────────────────┴─> end
 *
 * Before any of that, an upgrade goes through the same gates as a request (nginx and lighttpd run
 * their access and auth phases before proxying anything): the route's admission — a tunnel holds
 * its slot for as long as it is open, as an exchange in flight — and the route's authorizer.
 *
 * Like a ProxyExchange (src/core/exchange.ts) it fails over on connect failures, bounds the wait
 * for one of an adapter's capped connections by the route's `queueTimeout` (waitingForConnection),
 * times out a backend that sends no head (`timeouts.headers`, from connectionReady when the adapter
 * calls it) or stalls inside a plain answer's body
 * (`timeouts.idle`), pauses the backend for a client that does not read a plain answer (and cuts
 * one that takes no byte of it for `timeouts.clientIdle`), and reports `request:start` /
 * `request:end`. Upgrades are rare, so the timeouts are a timer of the exchange's
 * own instead of the runtime's sweep.
 *
 * While the backend has not answered, the client socket is read (node leaves it unread after the
 * 'upgrade' event) so that its FIN or close is seen at once: what it sends meanwhile is kept, up to
 * MAX_EARLY_BYTES, and goes to the backend after the 101, behind node's `head`.
 *
 * The tunnel carries a half-close: a FIN from either side ends the other side's write direction and
 * nothing more, so the other direction still flows (for `timeouts.idle` without a byte at most). It
 * ends when both sockets closed cleanly, or at once when either fails or is destroyed; a socket error
 * (a reset) is passed on as a reset, and reported: the backend's by its code (ERR_BACKEND_RESET), the
 * client's as a client abort (ERR_CLIENT_ABORTED), as for a plain request. A tunnel that carries no
 * byte either way for `timeouts.tunnel` is closed (HAProxy's `timeout tunnel`): peers that vanished
 * without a FIN or a reset (a laptop closed, a NAT entry dropped) would otherwise hold the tunnel and
 * its slot forever.
 *
 * The 101 the client gets is a hop's (switchFields): the backend connection's own fields stay
 * behind, Upgrade goes on under a Connection of the proxy's own. `h2c` is never tunnelled: its
 * HTTP2-Settings is never forwarded, and a backend that switches to it anyway is refused.
 */
import { STATUS_CODES, ServerResponse, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex, Readable } from 'node:stream'
import { ProxyError, backendOverloaded, fromSocketError, toProxyError, type ErrorCode } from './errors.js'
import { DISCARD_MAX_MS } from './body-pump.js'
import { authorizeExchange } from './exchange.js'
import { connectionListed, filterResponseHeaders, forwardRequestHeaders, isHopByHop, reasonPhrase, sameName, validStatus } from './headers.js'
import { isFailedAttempt, type Backend } from './pool.js'
import { RequestFacts } from './request-facts.js'
import { endEvent } from './events.js'
import { spawnWaitDeadline, waitRoutable } from './spawn-wait.js'
import type { CompiledRoute } from './route.js'
import type { ProxyRuntime, Target } from './runtime.js'
import type { ClientInfo, Exchange, FlowControl, RawHeaders, ScriptInfo, UpgradeHandler } from './types.js'

const enum Phase { Admit, Connecting, Response, Tunnel, Done }

/** Client bytes kept while waiting for the backend's answer; past it the client socket is paused. */
const MAX_EARLY_BYTES = 64 * 1024
/** A plain answer's bytes queued for a slow client before the backend is paused (as ProxyExchange). */
const MAX_BUFFERED = 256 * 1024

export class UpgradeExchange extends RequestFacts implements Exchange, UpgradeHandler {
  readonly headers: RawHeaders
  readonly env: Record<string, string> | null = null
  readonly script: ScriptInfo | null = null
  readonly body: Readable | null = null
  readonly contentLength: number | null = null
  readonly role = 'responder' as const
  readonly signal: AbortSignal
  private readonly ac = new AbortController()
  private phase = Phase.Admit
  private holdsSlot = false
  private done: (() => void) | null = null
  private authRes: ServerResponse | null = null
  /** The backend leased for the current attempt; `tried` the ones that failed to connect. */
  private backend: Backend | null = null
  private tried: Set<Backend> | null = null
  private attempts = 0
  /** A keep-alive race was replayed once (onError): a second one is a real failure. */
  private replayed = false
  private lastError: ProxyError | null = null
  private backendSocket: Duplex | null = null
  /**
   * `timeouts.headers` until the answer's head; then `timeouts.idle` inside a plain answer; in a
   * tunnel `timeouts.tunnel`, or `timeouts.idle` once one side sent its FIN (halfClosed).
   */
  private timer: NodeJS.Timeout | null = null
  /**
   * The adapter holds the Upgrade request behind its connection cap (waitingForConnection): the
   * timer is the route's queueTimeout until connectionReady, then `timeouts.headers`.
   */
  private awaitingConnection = false
  private halfClosed = false
  /** Client bytes read before the 101, for the backend; null once they can go nowhere. */
  private early: Buffer[] | null = []
  private earlyBytes = 0
  private flow: FlowControl | null = null
  private waitingDrain = false
  /** The bytes the client had taken when the clientIdle timer last looked (waitingDrain). */
  private taken = 0
  private clientClosed = false
  private backendClosed = false
  /** What ended a tunnel badly (a backend socket error, a client's reset), for `request:end`. */
  private tunnelError: ErrorCode | null = null
  private readonly startedAt: number
  private headAt = 0
  private status = 0
  private bytesOut = 0
  private backendId = ''

  constructor (
    private readonly rt: ProxyRuntime,
    private readonly route: CompiledRoute,
    readonly req: IncomingMessage,
    private readonly socket: Duplex,
    private readonly head: Buffer,
    target: Target,
    client: ClientInfo,
    peer: string,
  ) {
    super(rt.nextId(), target, req, client, route.name, route.adapterOptions)
    this.signal = this.ac.signal
    this.startedAt = rt.now()
    this.headers = withoutHttp2Settings(forwardRequestHeaders(req, client, peer, {
      host: route.s.hostHeader, xForwarded: route.s.xForwarded, forwarded: route.s.forwarded, via: route.s.via, peerTrusted: route.s.peerTrusted(peer),
    }, true))
  }

  /** Where the authorizer writes a denial: set by admit() before the authorizer is asked. */
  get res (): ServerResponse {
    if (this.authRes === null) throw new ProxyError('ERR_INTERNAL', 'upgrade: no response before the authorizer step')
    return this.authRes
  }

  start (done: () => void): void {
    this.done = done
    const route = this.route
    route.stats.requests++
    if (this.rt.events.wantsRequests) {
      this.rt.events.requestStart({ id: this.id, route: route.name, method: this.method, url: this.url, client: this.client.address })
    }
    const s = this.socket
    s.on('error', this.onClientError)
    s.on('close', this.onClientClose)
    s.on('end', this.onClientEnd)
    s.on('data', this.onEarlyData)
    if (s.destroyed) { this.clientGone(); return }
    // node:http hands over the socket at the end of the head, so a body would reach the backend
    // after its 101 as the new protocol's first bytes, or never, if it answers the plain request
    // (measured: `curl --http2 -d hello`, an h2c upgrade, got a 200 from a backend that had read
    // an empty POST). nginx sends such a body with the request; proxycore refuses it, before any
    // backend sees it (RFC 6455 handshakes have none). Only where node:http lacks
    // shouldUpgradeCallback (Node 20) or the embedder did not wire `proxy.shouldUpgrade`: with it,
    // such a request never gets here, and is proxied as a plain request with its body.
    if (hasBody(this.req)) { this.refuse(new ProxyError('ERR_BAD_REQUEST', 'an Upgrade request with a body', { phase: 'admit' })); return }
    route.admission.enter(this)
  }

  // Entrant (admission.ts)
  get ended (): boolean { return this.phase === Phase.Done }
  refused (err: ProxyError): void { this.refuse(err) }

  admitted (): void {
    this.holdsSlot = true
    const a = this.route.authorizer
    if (a === null) { this.connect(); return }
    // A denial goes through node:http on the raw socket, framed as any response is, with
    // `connection: close`; the socket ends with it.
    const res = new ServerResponse(this.req)
    res.shouldKeepAlive = false
    try {
      res.assignSocket(this.socket as Socket)
    } catch (err) {
      this.refuse(toProxyError(err))
      return
    }
    res.once('finish', () => this.socket.end())
    this.authRes = res
    authorizeExchange(this, a).then((denied) => {
      if (this.phase === Phase.Done) return
      // The authorizer's own answer went to the client; the socket closes once it is written.
      if (denied !== null) { this.status = denied; this.settle(null); return }
      res.detachSocket(this.socket as Socket)
      this.authRes = null
      this.connect()
    }, (err: unknown) => this.refuse(toProxyError(err)))
  }

  /** Lease a backend (one not tried yet) and send it the Upgrade request. */
  private connect (): void {
    if (this.phase === Phase.Done) return
    const pool = this.route.pool
    if (pool.backends.length === 0 && this.lastError === null) {
      // A spawn that starts on demand (or is recycling): wait for it, as a request does.
      this.waitForBackends().then(() => {
        if (pool.backends.length > 0) this.connect()
        else this.refuse(new ProxyError('ERR_NO_BACKEND', `pool ${pool.name}`, { phase: 'connect' }))
      }, (err: unknown) => this.refuse(toProxyError(err)))
      return
    }
    const b = pool.pick({ url: this.url, client: this.client.address }, this.tried)
    if (b === null) {
      pool.noneUsable()
      // Every backend was tried: the last real failure says more than "none left".
      this.refuse(this.lastError ?? new ProxyError('ERR_NO_BACKEND', `pool ${pool.name}`, { phase: 'connect' }))
      return
    }
    const client = b.client
    if (client.upgrade === undefined) { this.refuse(new ProxyError('ERR_UPGRADE_FAILED', `${b.endpoint.id}: its client cannot carry an upgrade`, { phase: 'connect' })); return }
    this.backend = b
    this.backendId = b.endpoint.id
    this.attempts++
    pool.started(b)
    this.phase = Phase.Connecting
    this.awaitingConnection = false
    this.startTimer(this.route.timeouts.headers)
    client.upgrade(this, this)
  }

  /**
   * The adapter queues the upgrade behind its connection cap (Exchange.waitingForConnection, the
   * http adapter's `connections`): as for a request, the wait is bounded by the route's
   * queueTimeout (0: as long as the client waits), not by `timeouts.headers`.
   */
  waitingForConnection (): void {
    if (this.phase !== Phase.Connecting) return
    this.awaitingConnection = true
    this.startTimer(this.route.admission.queueTimeout)
  }

  /** The upgrade has its connection and its head is being written: `timeouts.headers` from now. */
  connectionReady (): void {
    if (!this.awaitingConnection) return
    this.awaitingConnection = false
    if (this.phase === Phase.Connecting) this.startTimer(this.route.timeouts.headers)
  }

  /** As ProxyExchange.waitForBackends: bounded by the route's headers timeout (at least 1 s; 0: none). */
  private async waitForBackends (): Promise<void> {
    const pool = this.route.pool
    const deadline = spawnWaitDeadline(this.startedAt, this.route.timeouts.headers)
    await waitRoutable(pool, this.signal, deadline, this.rt.now.bind(this.rt), () => this.phase === Phase.Done)
  }

  // --- UpgradeHandler -------------------------------------------------------------------

  onUpgrade (_status: number, headers: RawHeaders, backend: Duplex, head: Buffer): void {
    if (this.phase !== Phase.Connecting) { backend.destroy(); return }
    if (switchesToH2c(headers)) {
      // An HTTP/2 connection in the tunnel would carry requests for any of the backend's paths
      // past the route's match, stripPrefix and authorizer ("h2c smuggling"): never opened. The
      // backend answered, so it is no failed attempt (refuse counts one only before an answer):
      // clients asking for h2c must not get a working backend disabled.
      if (this.backend !== null) this.route.pool.answered(this.backend)
      this.phase = Phase.Response
      backend.destroy()
      this.refuse(new ProxyError('ERR_UPGRADE_FAILED', 'the backend switched to h2c: an HTTP/2 connection is never tunnelled', { phase: 'head', backend: this.backendId }))
      return
    }
    this.stopTimer()
    if (this.backend !== null) this.route.pool.answered(this.backend)
    this.phase = Phase.Tunnel
    this.status = 101
    this.headAt = this.rt.now()
    this.backendSocket = backend
    const s = this.socket
    s.off('data', this.onEarlyData)
    s.off('end', this.onClientEnd)
    const early = this.early ?? []
    this.early = null
    const out = filterResponseHeaders(switchFields(headers), 101, this.rewrite(), this.httpVersion)
    let text = `HTTP/1.1 101 ${STATUS_CODES[101]}\r\n`
    for (let i = 0; i < out.length; i += 2) text += `${out[i]}: ${out[i + 1]}\r\n`
    s.write(`${text}\r\n`, 'latin1')
    if (head.length > 0) { this.bytesOut += head.length; s.write(head) }
    // What the client sent so far, in order: node's `head`, then what was read while waiting.
    if (this.head.length > 0 || early.length > 0) backend.write(early.length === 0 ? this.head : Buffer.concat([this.head, ...early]))
    // Half-close: a FIN ends the peer's write side (pipe's end()), never the other direction.
    // Backend sockets are made with allowHalfOpen false (node would end our side at its FIN).
    ;(backend as { allowHalfOpen: boolean }).allowHalfOpen = true
    ;(s as { allowHalfOpen: boolean }).allowHalfOpen = true
    backend.on('error', this.onBackendError)
    backend.on('close', this.onBackendClose)
    backend.on('data', this.countOut)
    backend.on('end', this.onHalfClose)
    s.on('end', this.onHalfClose)
    s.on('data', this.onTunnelIn)
    s.pipe(backend)
    backend.pipe(s)
    this.startTimer(this.route.timeouts.tunnel)
  }

  /**
   * What the backend says about its own paths mapped back (stripPrefix: Location, Set-Cookie; the
   * route's Via), in a 101 and a plain answer as in any response.
   */
  private rewrite (): ReturnType<CompiledRoute['responseRewrite']> {
    return this.route.responseRewrite(this)
  }

  onHead (status: number, headers: RawHeaders, flow: FlowControl, statusText?: string): void {
    if (this.phase !== Phase.Connecting) return
    // The status line is written by hand here: a reason phrase with a control character is refused
    // as node:http would refuse it, never written raw to the client.
    const reason = reasonPhrase(statusText ?? '')
    if (!validStatus(status) || reason === null) { this.refuse(new ProxyError('ERR_BAD_RESPONSE', reason === null ? 'control character in the reason phrase' : `status ${status}`, { phase: 'head', backend: this.backendId })); return }
    if (this.backend !== null) this.route.pool.answered(this.backend)
    this.stopTimer()
    this.phase = Phase.Response
    this.status = status
    this.headAt = this.rt.now()
    this.flow = flow
    // No tunnel: what the client sent for one goes nowhere. It is still read, to see it leave.
    this.discardEarly()
    const out = filterResponseHeaders(headers, status, this.rewrite(), this.httpVersion)
    let chunked = false
    for (let i = 0; i < headers.length; i += 2) if (headers[i].toLowerCase() === 'transfer-encoding') chunked = true
    let text = `HTTP/1.1 ${status} ${reason !== '' ? reason : STATUS_CODES[status] ?? ''}\r\n`
    for (let i = 0; i < out.length; i += 2) {
      // A Content-Length stays (the client can tell a cut body); a chunked body arrives decoded.
      if (chunked && out[i].toLowerCase() === 'content-length') continue
      text += `${out[i]}: ${out[i + 1]}\r\n`
    }
    // The body ends with the connection, whatever its length.
    this.socket.write(`${text}connection: close\r\n\r\n`, 'latin1')
    this.startTimer(this.route.timeouts.idle)
  }

  onData (chunk: Buffer): boolean {
    if (this.phase !== Phase.Response) return true
    this.bytesOut += chunk.length
    this.timer?.refresh()
    const s = this.socket
    if (s.write(chunk) || s.writableLength < MAX_BUFFERED) return true
    // Pause the backend until the client drains; a client that does not read is not a stalled
    // backend, so the idle timer waits too: `timeouts.clientIdle` without a byte taken by the
    // client cuts it instead (ERR_CLIENT_TIMEOUT, as ProxyExchange.checkDownload).
    if (!this.waitingDrain) {
      this.waitingDrain = true
      s.once('drain', this.onDrain)
      this.taken = taken(s)
      this.startTimer(this.route.timeouts.clientIdle)
    }
    return false
  }

  private readonly onDrain = (): void => {
    this.waitingDrain = false
    if (this.phase !== Phase.Response) return
    this.startTimer(this.route.timeouts.idle)
    this.flow?.resume()
  }

  onEnd (): void {
    if (this.phase === Phase.Response) {
      this.settle(null)
      this.socket.end()
      return
    }
    if (this.phase === Phase.Connecting) this.refuse(new ProxyError('ERR_BAD_RESPONSE', 'response ended before its head', { phase: 'head', backend: this.backendId }))
  }

  onError (err: ProxyError): void {
    // A custom adapter may report a plain Error (or a string): the core reads code and status.
    if (!(err instanceof ProxyError)) err = toProxyError(err, 'head')
    if (this.phase === Phase.Response) { this.cut(err); return }
    if (this.phase !== Phase.Connecting) return
    const b = this.backend
    if (err.backend === undefined && b !== null) err.backend = b.endpoint.id
    // A kept-alive connection the backend closed as the Upgrade arrived, nothing of the answer read
    // (the adapter marks the error `replayable`): sent once more, on a fresh connection, as
    // ProxyExchange.replay. Not a failover (`retries` untouched), and not a failed attempt: the
    // adapter saw the connection was a reused one, which a healthy backend may close at any time.
    if (b !== null && err.replayable && err.phase !== 'connect' && !this.replayed && !this.signal.aborted) {
      this.replayed = true
      this.releaseBackend()
      this.attempts--
      this.stopTimer()
      this.phase = Phase.Admit
      this.connect()
      return
    }
    // Failover as ProxyExchange.onError, restricted to connect failures: nothing reached the backend.
    if (b !== null && err.retryable && err.phase === 'connect') {
      this.route.pool.connectFailed(b, err.code, backendOverloaded(err))
      this.releaseBackend()
      if (this.attempts <= this.route.retries && !this.signal.aborted) {
        this.lastError = err
        this.tried ??= new Set()
        this.tried.add(b)
        this.stopTimer()
        this.phase = Phase.Admit
        this.connect()
        return
      }
    }
    this.refuse(err)
  }

  // --- the client side ------------------------------------------------------------------

  private readonly onEarlyData = (chunk: Buffer): void => {
    const early = this.early
    if (early === null) return
    early.push(chunk)
    this.earlyBytes += chunk.length
    if (this.earlyBytes >= MAX_EARLY_BYTES) this.socket.pause()
  }

  private discardEarly (): void {
    this.early = null
    this.earlyBytes = 0
    if (!this.socket.destroyed) this.socket.resume()
  }

  /** A FIN before the tunnel: the client went away (as node:http takes it for any request). */
  private readonly onClientEnd = (): void => { this.clientGone() }

  /**
   * A client socket error in the tunnel (its reset, or a write to a client that is gone): a client
   * abort, reported as a plain request's client that leaves mid-response is (ERR_CLIENT_ABORTED,
   * 499, no route error), and passed on to the backend as a reset.
   */
  private readonly onClientError = (): void => {
    if (this.phase !== Phase.Tunnel) { this.clientGone(); return }
    this.tunnelError ??= 'ERR_CLIENT_ABORTED'
    this.closeTunnel(true)
  }

  private readonly onClientClose = (): void => {
    if (this.phase !== Phase.Tunnel) { this.clientGone(); return }
    this.clientClosed = true
    if (!closedCleanly(this.socket)) this.closeTunnel()
    else if (this.backendClosed) this.settle(this.tunnelError)
  }

  private clientGone (): void {
    if (this.phase === Phase.Done) return
    if (this.phase === Phase.Tunnel) { this.closeTunnel(); return }
    this.settle('ERR_CLIENT_ABORTED')
    this.abortBackend()
    this.socket.destroy()
  }

  // --- the tunnel -----------------------------------------------------------------------

  private readonly countOut = (chunk: Buffer): void => {
    this.bytesOut += chunk.length
    this.timer?.refresh()
  }

  private readonly onTunnelIn = (): void => { this.timer?.refresh() }

  /**
   * One side sent its FIN: the other direction goes on, but a pause of `timeouts.idle` in it now
   * closes the tunnel (or of `timeouts.tunnel`, if shorter). A side whose peer left and that never
   * ends its own (a backend that ignores the FIN) would otherwise hold the tunnel for that long.
   */
  private readonly onHalfClose = (): void => {
    if (this.phase !== Phase.Tunnel || this.halfClosed) return
    this.halfClosed = true
    const { idle, tunnel } = this.route.timeouts
    this.startTimer(idle > 0 && (tunnel <= 0 || idle < tunnel) ? idle : tunnel)
  }

  private readonly onBackendError = (err: NodeJS.ErrnoException): void => {
    if (this.phase !== Phase.Tunnel) return
    const e = fromSocketError(err, 'body', this.backendId)
    this.tunnelError = e.code
    this.log(e)
    // The reset goes on to the client, as it came: a FIN would tell it the stream ended well.
    this.closeTunnel(true)
  }

  private readonly onBackendClose = (): void => {
    if (this.phase !== Phase.Tunnel) return
    this.backendClosed = true
    const b = this.backendSocket
    if (b === null || !closedCleanly(b)) this.closeTunnel()
    else if (this.clientClosed) this.settle(this.tunnelError)
  }

  /** Either side failed or was cut: both go now; after a socket error, with a reset. */
  private closeTunnel (failed = false): void {
    this.settle(this.tunnelError)
    if (failed) {
      const b = this.backendSocket
      if (b !== null) reset(b)
      reset(this.socket)
    }
    this.abortBackend()
    this.socket.destroy()
  }

  // --- endings --------------------------------------------------------------------------

  /**
   * The proxy is closing (ProxyRuntime.close): a tunnel or a plain answer under way is cut; an
   * upgrade still waiting for its slot, its authorizer or its backend is refused with 503.
   */
  destroy (): void {
    if (this.phase === Phase.Tunnel) this.closeTunnel()
    else if (this.phase === Phase.Response) this.cut(new ProxyError('ERR_SHUTTING_DOWN', undefined, { phase: 'body' }))
    else this.refuse(new ProxyError('ERR_SHUTTING_DOWN', undefined, { phase: 'admit' }))
  }

  private readonly onTimer = (): void => {
    this.timer = null
    if (this.phase === Phase.Connecting && this.awaitingConnection) {
      // Never sent: no failed attempt of the backend (phase connect), and no failover either.
      this.refuse(new ProxyError('ERR_QUEUE_TIMEOUT', `no connection to the backend came free in ${this.route.admission.queueTimeout} ms (its adapter's connection cap)`, { phase: 'connect', backend: this.backendId }))
    } else if (this.phase === Phase.Connecting) {
      this.refuse(new ProxyError('ERR_HEADERS_TIMEOUT', `no answer to the upgrade in ${this.route.timeouts.headers} ms`, { phase: 'head', backend: this.backendId }))
    } else if (this.phase === Phase.Response && this.waitingDrain) {
      const now = taken(this.socket)
      const limit = this.route.timeouts.clientIdle
      if (now > this.taken) { this.taken = now; this.startTimer(limit); return }
      this.cut(new ProxyError('ERR_CLIENT_TIMEOUT', `the client read no response byte for ${limit} ms`, { phase: 'body' }))
    } else if (this.phase === Phase.Response) {
      this.cut(new ProxyError('ERR_BODY_TIMEOUT', `no byte for ${this.route.timeouts.idle} ms`, { phase: 'body', backend: this.backendId }))
    } else if (this.phase === Phase.Tunnel) {
      const what = this.halfClosed ? 'half-closed tunnel' : 'tunnel'
      this.rt.log.debug({ route: this.routeName, id: this.id, backend: this.backendId }, `upgrade: ${what} carried no byte for its timeout, closed`)
      this.closeTunnel()
    }
  }

  private startTimer (ms: number): void {
    this.stopTimer()
    if (ms <= 0) return
    this.timer = setTimeout(this.onTimer, ms)
    this.timer.unref()
  }

  private stopTimer (): void {
    if (this.timer === null) return
    clearTimeout(this.timer)
    this.timer = null
  }

  /** Nothing was sent to the client yet: a status line of its own, and the socket ends. */
  private refuse (err: ProxyError): void {
    if (this.phase === Phase.Done) return
    // Passive health after the connect (BackendPool.attemptFailed): a reset, a close, a headers
    // timeout or an invalid head before the backend's answer; not a client that went.
    const b = this.backend
    if (b !== null && this.phase === Phase.Connecting && !this.signal.aborted && isFailedAttempt(err)) this.route.pool.attemptFailed(b, err.code)
    this.status = err.status
    this.settle(err.code)
    this.abortBackend()
    const s = this.socket
    if (this.authRes !== null) { this.authRes.detachSocket(s as Socket); this.authRes = null }
    if (s.writable) {
      const status = err.status
      const retry = status === 503 ? `retry-after: ${this.route.pool.retryAfterSeconds()}\r\n` : ''
      // The body names the code, as any refused request's does (ProxyRuntime.sendError).
      const body = `${status} ${STATUS_CODES[status] ?? 'Error'}\n${err.code}\n`
      s.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n${retry}content-length: ${body.length}\r\n\r\n${body}`)
    }
    this.log(err)
  }

  /** A plain answer's head went out: a failure cuts the client connection, never pads it (RELIABILITY rule 5). */
  private cut (err: ProxyError): void {
    if (this.phase === Phase.Done) return
    this.settle(err.code)
    this.abortBackend()
    // A reset, where the socket is TCP: the body ends with the connection, so a FIN would pass for its end.
    reset(this.socket)
    this.log(err)
  }

  /**
   * After a refusal or a plain answer the socket waits for the client's FIN (allowHalfOpen). A
   * client that never sends it, or stops taking the answer's last bytes, would hold the socket
   * forever: it is closed once `timeouts.clientIdle` (at most DISCARD_MAX_MS, the bound of a
   * request's lingering close) passes without a byte taken by the client, or (the answer and the
   * proxy's FIN all out) at least that long after, so a client still sending gets no reset early.
   */
  private boundLinger (): void {
    const s = this.socket
    if (s.destroyed) return
    const limit = this.route.timeouts.clientIdle > 0 ? Math.min(this.route.timeouts.clientIdle, DISCARD_MAX_MS) : DISCARD_MAX_MS
    let last = -1
    let finished = false
    const watch = setInterval(() => {
      const now = taken(s)
      if (s.writableFinished) { if (finished) s.destroy(); finished = true; return }
      if (now > last) { last = now; return }
      s.destroy()
    }, limit)
    watch.unref()
    s.once('close', () => clearInterval(watch))
  }

  private abortBackend (): void {
    if (!this.ac.signal.aborted) this.ac.abort()
    this.backendSocket?.destroy()
  }

  private releaseBackend (): void {
    const b = this.backend
    if (b === null) return
    this.backend = null
    this.route.pool.finished(b)
  }

  private log (err: ProxyError): void {
    if (err.code === 'ERR_CLIENT_ABORTED') return
    const level = err.status >= 500 ? 'error' : 'warn'
    this.rt.log[level]({ code: err.code, route: this.routeName, id: this.id, backend: err.backend, url: this.url }, `upgrade: ${err.message}`)
  }

  /** The one ending: slot and backend released, stats and `request:end`, exactly once. */
  private settle (error: ErrorCode | null): void {
    if (this.phase === Phase.Done) return
    const tunnel = this.phase === Phase.Tunnel
    this.phase = Phase.Done
    this.stopTimer()
    if (this.waitingDrain) { this.waitingDrain = false; this.socket.off('drain', this.onDrain) }
    // Still read the client (what it sends goes nowhere): its FIN then closes the socket, or
    // boundLinger does, for a client that holds on to it.
    if (!tunnel) { this.discardEarly(); this.boundLinger() }
    this.releaseBackend()
    if (this.holdsSlot) { this.holdsSlot = false; this.route.admission.release() }
    const now = this.rt.now()
    const stats = this.route.stats
    if (error !== null && error !== 'ERR_CLIENT_ABORTED') stats.errors++
    // A tunnel's latency is its setup, to the 101: how long it then stays open is the client's.
    stats.observe((tunnel ? this.headAt : now) - this.startedAt)
    if (this.rt.events.wantsRequests) {
      this.rt.events.requestEnd(endEvent({
        id: this.id, route: this.route.name, method: this.method, url: this.url, client: this.client.address,
        status: this.status, backend: this.backendId, startedAt: this.startedAt, headAt: this.headAt, bytesOut: this.bytesOut,
        httpVersion: this.req.httpVersion, referer: this.req.headers.referer, userAgent: this.req.headers['user-agent'],
      }, error, now))
    }
    this.done?.()
  }
}

/**
 * A 101's fields for the client. The proxy is a hop (RFC 9110 §7.6.1): what is the backend
 * connection's own (the fields its Connection lists, Keep-Alive, Proxy-Connection, TE, Trailer,
 * Transfer-Encoding) stays behind, as on any response; Upgrade goes on, named by a Connection of the
 * proxy's own (RFC 6455 §4.1 clients fail a handshake without it; nginx also writes its own).
 */
function switchFields (raw: RawHeaders): RawHeaders {
  let listed: Set<string> | null = null
  for (let i = 0; i < raw.length; i += 2) {
    if (!sameName(raw[i], 'connection')) continue
    const l = connectionListed(raw[i + 1])
    if (l !== null) { listed ??= new Set(); for (const n of l) listed.add(n) }
  }
  const out: string[] = ['Connection', 'Upgrade']
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]
    if (!sameName(name, 'upgrade') && (isHopByHop(name) || (listed !== null && listed.has(name.toLowerCase())))) continue
    out.push(name, raw[i + 1])
  }
  return out
}

/**
 * HTTP2-Settings is connection-specific (RFC 7540 §3.2.1), whether the client's Connection names
 * it or not: never forwarded, so an HTTP/2 server asked for h2c does not switch (§3.2).
 */
function withoutHttp2Settings (raw: RawHeaders): RawHeaders {
  let found = false
  for (let i = 0; i < raw.length && !found; i += 2) found = sameName(raw[i], 'http2-settings')
  if (!found) return raw
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) if (!sameName(raw[i], 'http2-settings')) out.push(raw[i], raw[i + 1])
  return out
}

/** A 101 whose Upgrade names h2c (HTTP/2 over cleartext, `h2c` or `h2c/<version>`). */
function switchesToH2c (raw: RawHeaders): boolean {
  for (let i = 0; i < raw.length; i += 2) {
    if (!sameName(raw[i], 'upgrade')) continue
    for (const p of raw[i + 1].split(',')) if (p.trim().split('/')[0].toLowerCase() === 'h2c') return true
  }
  return false
}

/** A request body follows the head: a Content-Length above 0, or any Transfer-Encoding (RFC 9112 §6.3). */
/** A body declared (Content-Length above 0, or Transfer-Encoding): node:http would hand it over as tunnel bytes. */
export function hasBody (req: IncomingMessage): boolean {
  const h = req.headers
  return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && Number(h['content-length']) !== 0)
}

/** Close with a TCP reset (RST) where the socket is TCP; destroy it otherwise (TLS, unix socket). */
function reset (s: Duplex): void {
  if (s.destroyed) return
  const tcp = s as Duplex & { resetAndDestroy?: () => void }
  try {
    if (typeof tcp.resetAndDestroy === 'function') { tcp.resetAndDestroy(); return }
  } catch {
    // ERR_INVALID_HANDLE_TYPE: not a TCP handle.
  }
  s.destroy()
}

/** The bytes a socket handed to the kernel: the ones its peer took, or that fit in its buffers. */
function taken (s: Duplex): number {
  return ((s as Duplex & { bytesWritten?: number }).bytesWritten ?? 0) - s.writableLength
}

/** Both directions ended: the read side saw a FIN and the write side finished its end(). */
function closedCleanly (s: Duplex): boolean {
  return s.readableEnded && s.writableFinished
}
