/**
 * One request through the pipeline:
 *
 *   route -> admit -> prepare (spool, script, env) -> lease -> dispatch -> stream -> release
 *
 * A ProxyExchange is at once the `Exchange` the adapter reads and the `ResponseHandler` it writes
 * to: one object per request, no per-request closures on the hot path. Every way out (end, error,
 * client abort, timeout, local redirect) goes through `finish()`, which releases the admission slot
 * and the backend exactly once.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import { authorize, mergeAuthorizerVariables, type AuthorizerSettings } from './authorizer.js'
import { DISCARD_MAX_BYTES, DISCARD_MAX_MS, discardBody, lingerOnClose } from './body-pump.js'
import { isReplayable, replayBody, spooledBytesRead } from './body-spool.js'
import { DirectoryRedirect } from './cgi/script.js'
import { ProxyError, backendOverloaded, toProxyError, type ErrorCode } from './errors.js'
import { filterResponseHeaders, validStatus } from './headers.js'
import { openSendfile, sendfilePath } from './sendfile.js'
import { StaticSource, isFailedAttempt, type Backend } from './pool.js'
import { RequestFacts } from './request-facts.js'
import { SCAVENGE_MIN_BODY } from './scavenge.js'
import { endEvent } from './events.js'
import { isIdempotent } from './idempotent.js'
import { spawnWaitDeadline, waitReplacement, waitRoutable } from './spawn-wait.js'
import { SLOT, type Slotted } from '../live-set.js'
import type { CompiledRoute, ProxyRuntime } from './runtime.js'
import type { ClientInfo, Exchange, FlowControl, RawHeaders, ResponseHandler, ScriptInfo } from './types.js'

const enum Phase { Admit, Prepare, Dispatched, Streaming, Done }

/** Response bytes queued for a slow client before the backend is paused. */
const MAX_BUFFERED_PER_EXCHANGE = 256 * 1024
/**
 * Response bytes an adapter may still deliver after `onData` returned false, before it is resumed:
 * a built-in one delivers at most the rest of one socket or pipe read (64 KiB). One that goes on
 * regardless (a custom adapter ignoring flow control) would queue the whole backend response in
 * memory for a client that reads nothing: past this, the exchange fails (ERR_INTERNAL, cut).
 */
const MAX_AFTER_PAUSE = 4 * 1024 * 1024
/**
 * A body chunk this large is usually a full socket read with more of the response right behind
 * it: a 64 KiB body and its head take two 64 KiB reads. Its writes wait for the end of the loop
 * iteration's I/O (ProxyRuntime.corkUntilImmediate) and leave with the rest in one writev instead
 * of one syscall per read. Smaller chunks (a whole small response, a streamed event) go at once.
 */
const CORK_MIN_CHUNK = 16 * 1024
/**
 * How long a process that failed an attempt (connection refused, reset or closed) may stay listed
 * by its spawn before it counts as alive (waitForRestart): its exit is usually seen within a few
 * ms of its socket's reset.
 */
const RESTART_GRACE_MS = 1000
const EMPTY = Buffer.alloc(0)

export class ProxyExchange extends RequestFacts implements Exchange, ResponseHandler, Slotted {
  /** Its place in the runtime's exchanges in flight. */
  [SLOT] = -1
  headers: RawHeaders = []
  env: Record<string, string> | null = null
  script: ScriptInfo | null = null
  body: Readable | null = null
  contentLength: number | null = null
  readonly role: 'responder' | 'authorizer' = 'responder'

  /** Deadlines checked by the runtime's sweep (0 = none). */
  headDeadline = 0
  /** The adapter said the exchange waits for a connection (waitingForConnection): headDeadline is the queue's. */
  awaitingConnection = false
  private dispatchedAt = 0
  idleDeadline = 0
  /** A request body is still arriving from the client: the sweep watches it for a slow drip. */
  uploadWatch = false
  /**
   * The backend has not taken the whole request body yet: the sweep moves the head deadline while
   * it takes more (checkBodySent). `bodyMark` is the last progress seen (bodyProgress).
   */
  bodyWatch = false
  private bodyMark = 0
  /**
   * The backend is paused until the client drains its response: the sweep watches the client for a
   * stall instead of the backend for idleness (checkDownload).
   */
  downloadWatch = false
  /** Log lines this exchange's backend stderr produced (runtime.stderr caps them). */
  stderrLines = 0
  /**
   * The start of a backend stderr line whose newline has not come yet (runtime.stderr), logged when
   * the attempt ends (releaseBackend: a retry's, a replay's, finish's). null until stderr arrives.
   */
  stderrHeld: Buffer | null = null
  /** A large body is on its way: the runtime's scavenger counts its bytes (src/core/scavenge.ts). */
  private scavenging = false
  private uploadBytes = 0
  /** When this exchange first found no routable backend (waitForBackends); 0 = not yet. */
  private waitFrom = 0
  private uploadIdleSince = 0
  /**
   * The minimum upload rate (checkUpload): the socket's byte counter and the time when the body
   * began to be watched, the sweep's last tick, and how long the proxy itself held the client
   * back since (its time is not the client's).
   */
  private uploadFrom = 0
  private uploadStartedAt = 0
  private uploadTickAt = 0
  private uploadHeldMs = 0
  /** Response bytes the client had taken at the last sign of progress, and when that was. */
  private downloadTaken = 0
  private downloadIdleSince = 0
  /** Response bytes the adapter delivered since it was paused (MAX_AFTER_PAUSE). */
  private afterPause = 0
  /** A keep-alive race was replayed once (onError): a second one is a real failure. */
  private replayed = false

  /** Created only when somebody reads `signal`: the hot path uses `setAbortHandler`. */
  private ac: AbortController | null = null
  private abortedFlag = false
  private abortHandler: (() => void) | null = null
  private phase = Phase.Admit
  private backend: Backend | null = null
  private tried: Set<Backend> | null = null
  private attempts = 0
  /** The attempt after which this exchange last waited for a restarted process (waitForRestart). */
  private restartWaitedAt = 0
  private flow: FlowControl | null = null
  private onDrainBound: (() => void) | null = null
  private cleanupSpool: (() => Promise<void>) | null = null
  readonly startedAt: number
  private headAt = 0
  private bytesOut = 0
  private status = 0
  private backendId = ''
  private lastError: ProxyError | null = null

  constructor (
    private readonly rt: ProxyRuntime,
    readonly route: CompiledRoute,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    target: { method: string, url: string, path: string, query: string },
    client: ClientInfo,
    readonly peer: string,
    readonly redirects: number,
    /** The request that redirected here (REDIRECT_URL / REDIRECT_QUERY_STRING), or null. */
    readonly redirectedFrom: { url: string, path: string, query: string } | null = null,
  ) {
    super(rt.nextId(), target, req, client, route.name, route.adapterOptions)
    this.startedAt = rt.now()
  }

  get signal (): AbortSignal {
    if (this.ac === null) {
      this.ac = new AbortController()
      if (this.abortedFlag) this.ac.abort()
    }
    return this.ac.signal
  }

  get aborted (): boolean { return this.abortedFlag }

  setAbortHandler (fn: (() => void) | null): void { this.abortHandler = fn }

  /** Entry point: admission, then preparation, then the first dispatch. */
  start (): void {
    const route = this.route
    route.stats.requests++
    if (this.rt.events.wantsRequests) {
      this.rt.events.requestStart({ id: this.id, route: route.name, method: this.method, url: this.url, client: this.client.address })
    }
    // on(), not once(): once() wraps the listener (151 B per request); finish() removes it, and
    // onResClose ignores a call after the exchange is done.
    this.res.on('close', this.onResClose)
    // A pipelined request's response gets its socket only once the one before it is done, and a
    // client that leaves closes only the socket's current response: node destroys the waiting
    // requests instead. Their 'close' is then the only sign (onReqClose).
    if (this.res.socket === null) this.req.on('close', this.onReqClose = () => { if (this.phase !== Phase.Done && this.clientGone()) this.onResClose() })
    route.admission.enter(this)
  }

  // Entrant (admission.ts)
  get ended (): boolean { return this.phase === Phase.Done }
  refused (err: ProxyError): void { this.fail(err, false) }

  admitted (): void {
    this.phase = Phase.Prepare
    this.rt.track(this)
    const needsPrepare = this.route.authorizer !== null || (this.route.prepare !== null && (this.route.needsBodyPrepare(this) || this.route.cgi !== null))
    if (!needsPrepare && this.route.pool.backends.length > 0) {
      try {
        this.prepareSync()
      } catch (err) {
        this.fail(toProxyError(err, 'route'), true)
        return
      }
      this.dispatch()
      return
    }
    this.prepareAsync().then(() => {
      if (this.phase !== Phase.Prepare) return
      this.dispatch()
    }, (err: unknown) => { if (err instanceof DirectoryRedirect) this.redirectToDirectory(err.location); else this.fail(toProxyError(err), true) })
  }

  /** What every protocol needs and costs nothing asynchronous. */
  private prepareSync (): void {
    const r = this.route.requestBody(this)
    this.body = r.body
    this.contentLength = r.length
    // Watched even with clientIdle 0 (no 408 then): the head deadline counts from the last upload byte.
    if (r.body !== null && !this.req.complete) {
      this.uploadWatch = true
      const now = this.rt.now()
      this.uploadIdleSince = this.uploadStartedAt = this.uploadTickAt = now
      this.uploadBytes = this.req.socket.bytesRead
      // Body bytes that came while the request was queued are in its buffer, unread, and count as
      // received. Those of the very socket read that carried the head are not parsed yet and are
      // taken for the head's (at most one read, 64 KiB): the check errs on the strict side there.
      this.uploadFrom = this.uploadBytes - this.req.readableLength
    }
    if (r.body !== null && !this.req.complete && (r.length === null || r.length >= SCAVENGE_MIN_BODY)) this.scavenge()
    if (!this.route.adapter.capabilities.cgiEnv) this.headers = this.route.forwardHeaders(this)
  }

  private async prepareAsync (): Promise<void> {
    this.prepareSync()
    const route = this.route
    // The authorizer first (it gets no body and no script, FastCGI 1.0 §6.3): a refused client must
    // learn nothing the script walk says (404 vs 403 vs 401) and get no body spooled to disk.
    let variables: Readonly<Record<string, string>> | null = null
    if (route.authorizer !== null) {
      const verdict = await authorize(this, route.authorizer)
      if (this.phase !== Phase.Prepare) return
      if (!verdict.allowed) {
        // The authorizer's own answer went to the client; this exchange ends here.
        this.status = verdict.status
        this.finish(null)
        return
      }
      variables = verdict.variables
    }
    if (route.prepare !== null) {
      const p = await route.prepare(this)
      if (this.phase !== Phase.Prepare) {
        // The exchange ended while it was being prepared (client gone, timeout, shutdown): finish()
        // has run already and nobody will read the spooled body, so its fd goes now.
        p.cleanup?.().catch(() => {})
        return
      }
      if (p.body !== undefined) this.body = p.body
      if (p.length !== undefined) this.contentLength = p.length
      if (p.cleanup !== undefined) this.cleanupSpool = p.cleanup
      if (p.script !== undefined) this.script = p.script
      if (p.env !== undefined) this.env = p.env
    }
    if (variables !== null && this.env !== null) mergeAuthorizerVariables(this.env, variables)
    await this.waitForBackends()
  }

  /**
   * A spawn may start on demand, or recycle the process that made ensure() resolve before we pick it
   * (maxRequests under load): wait — bounded by the route's headers timeout — while nothing is
   * routable, instead of failing (the spawn manager's "requests that arrive meanwhile wait").
   */
  private async waitForBackends (): Promise<void> {
    const pool = this.route.pool
    if (pool.backends.length === 0 && this.waitFrom === 0) this.waitFrom = this.rt.now()
    // From the first wait, not the request's start: a buffered upload may take far longer than the
    // headers timeout, and is no backend's delay.
    const deadline = spawnWaitDeadline(this.waitFrom, this.route.timeouts.headers)
    if (pool.backends.length === 0 && !this.abortedFlag) await waitRoutable(pool, this.signal, deadline, this.rt.now.bind(this.rt), () => this.abortedFlag)
  }

  /** Lease a backend and hand the exchange to its client. */
  private dispatch (): void {
    const pool = this.route.pool
    const b = pool.pick({ url: this.url, client: this.client.address }, this.tried)
    if (b === null) {
      if (this.mayAwaitRestart()) { this.waitForRestart(); return }
      if (pool.backends.length === 0 && this.lastError === null && !this.abortedFlag) {
        // Every process left the list between preparation and now (recycled): wait for the next.
        this.phase = Phase.Prepare
        this.waitForBackends().then(() => { if (this.phase === Phase.Prepare) this.dispatch() }, (err: unknown) => this.fail(toProxyError(err), true))
        return
      }
      pool.noneUsable()
      // Every backend was tried for this exchange: the last real failure says more than "none left".
      if (this.lastError !== null) { this.fail(this.lastError, true); return }
      this.fail(new ProxyError('ERR_NO_BACKEND', `pool ${pool.name}`, { phase: 'connect' }), true, pool.retryAfterSeconds())
      return
    }
    this.backend = b
    this.backendId = b.endpoint.id
    this.attempts++
    pool.started(b)
    this.phase = Phase.Dispatched
    const t = this.route.timeouts
    this.dispatchedAt = this.rt.now()
    this.awaitingConnection = false
    this.headDeadline = t.headers > 0 ? this.dispatchedAt + t.headers : 0
    const body = this.body
    this.bodyWatch = body !== null && t.headers > 0 && !body.readableEnded
    if (this.bodyWatch) this.bodyMark = this.bodyProgress(body as Readable)
    b.client.dispatch(this, this)
  }

  // --- ResponseHandler ------------------------------------------------------------------

  onInformational (status: number, headers: RawHeaders): void {
    // Only 103 Early Hints (RFC 8297) is passed on, and only its Link fields: 100 Continue was
    // answered by node:http itself, 101 is the upgrade path's, WebDAV's 102 is dropped (as nginx
    // does). Never to an HTTP/1.0 client, which would take it for the response (RFC 9110 §15.2).
    // A hint is best effort: node refuses some Link values RFC 8288 allows, and such a hint is
    // dropped, not the response. So is a hint while the client's queue is backed up: the adapter
    // does not pause on interim responses (undici parses them as they come), and a backend flooding
    // 103s to a client that reads nothing would otherwise queue them all in memory.
    if (this.phase !== Phase.Dispatched || status !== 103) return
    if (this.res.writableLength >= MAX_BUFFERED_PER_EXCHANGE) return
    const req = this.req
    if (req.httpVersionMajor < 1 || (req.httpVersionMajor === 1 && req.httpVersionMinor === 0)) return
    let link: string[] | null = null
    for (let i = 0; i < headers.length; i += 2) {
      if (headers[i].length === 4 && headers[i].toLowerCase() === 'link') (link ??= []).push(headers[i + 1])
    }
    if (link === null) return
    try { this.res.writeEarlyHints({ link }) } catch { /* dropped: see above */ }
  }

  onHead (status: number, headers: RawHeaders, flow: FlowControl, statusText?: string): void {
    if (this.phase !== Phase.Dispatched) return
    if (!validStatus(status)) {
      this.onError(new ProxyError('ERR_BAD_RESPONSE', `status ${status}`, { phase: 'head', backend: this.backend?.endpoint.id }))
      return
    }
    // Any head, an invalid one too, shows the backend alive (passive health, pool.ts).
    if (this.backend !== null) this.route.pool.answered(this.backend)
    let out: RawHeaders
    try {
      out = filterResponseHeaders(headers, status, this.route.responseRewrite(this), this.httpVersion, this.route.adapter.capabilities.cgiEnv)
    } catch (err) {
      // A CGI-family empty Location (headers.ts), or headers a custom adapter handed over in a
      // shape they cannot have (not a flat array of strings).
      this.onError(err instanceof ProxyError ? err : new ProxyError('ERR_BAD_RESPONSE_HEADER', (err as Error)?.message ?? String(err), { phase: 'head', cause: err }))
      return
    }
    this.phase = Phase.Streaming
    this.flow = flow
    this.headDeadline = 0
    const now = this.rt.now()
    this.headAt = now
    if (this.route.timeouts.idle > 0) this.idleDeadline = now + this.route.timeouts.idle
    this.status = status
    if (this.route.s.sendfileRoots !== null) {
      // The file's response keeps the backend's fields as filtered for any response (hop-by-hop
      // dropped, Location and cookies mapped); openSendfile then drops the framing and X-Sendfile.
      const file = sendfilePath(headers)
      if (file !== null) { this.startSendfile(file, out); return }
    }
    try {
      if (statusText !== undefined && statusText !== '') this.res.writeHead(status, statusText, out)
      else this.res.writeHead(status, out)
    } catch (err) {
      // node:http refused a header value or the reason phrase (invalid characters): the backend's
      // fault. writeHead kept that phrase as statusMessage, and the 502 page's writeHead would
      // reuse it (throwing again: the client hung) — the error page gets node's own phrase.
      this.res.statusMessage = ''
      this.phase = Phase.Dispatched
      this.onError(new ProxyError('ERR_BAD_RESPONSE_HEADER', (err as Error).message, { phase: 'head', cause: err }))
    }
  }

  onData (chunk: Buffer): boolean {
    if (this.phase === Phase.Dispatched) {
      // Body bytes before any head: an adapter bug. Dropped, they were lost unseen (onEnd before
      // the head is a 502 too).
      this.onError(new ProxyError('ERR_BAD_RESPONSE', 'response body before its head', { phase: 'head' }))
      return false
    }
    if (this.phase !== Phase.Streaming || this.sendfile !== null) return true
    if (typeof chunk !== 'string' && !(chunk instanceof Uint8Array)) {
      // A custom adapter's chunk in a shape node:http cannot write (a number, an object, null):
      // res.write would throw into the adapter's socket handler, an uncaught exception.
      this.fail(new ProxyError('ERR_INTERNAL', `the ${this.route.adapter.name} adapter's onData() got ${chunk === null ? 'null' : typeof chunk}, not a Buffer`, { phase: 'body' }), true)
      return false
    }
    // A custom adapter's string goes out as UTF-8: its bytes are what counts (bytesOut, the log).
    const size = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length
    if (this.downloadWatch && (this.afterPause += size) > MAX_AFTER_PAUSE) {
      this.fail(new ProxyError('ERR_INTERNAL', `the ${this.route.adapter.name} adapter ignored flow control: ${this.afterPause} response bytes delivered after onData() returned false`, { phase: 'body' }), true)
      return false
    }
    this.sent(size)
    if (this.idleDeadline !== 0) this.idleDeadline = this.rt.now() + this.route.timeouts.idle
    if (size >= CORK_MIN_CHUNK) {
      const socket = this.res.socket
      if (socket !== null && socket.writableCorked === 0) this.rt.corkUntilImmediate(socket)
    }
    // Backpressure with slack: node:http says "full" past 16 KiB, which would pause and resume the
    // backend on every 64 KiB chunk. Keep reading until MAX_BUFFERED_PER_EXCHANGE is queued, then
    // pause the adapter until the client drains. Still bounded per exchange.
    if (this.res.write(chunk) || this.res.writableLength < MAX_BUFFERED_PER_EXCHANGE) return true
    this.pauseForClient()
    return false
  }

  /**
   * We hold the backend (or an X-Sendfile file) paused for a slow client: its idle deadline stops
   * (the pause is ours, not the backend's) and starts again when the client drains. Meanwhile the
   * client is what may stall.
   */
  private pauseForClient (): void {
    if (this.downloadWatch) return
    this.downloadWatch = true
    this.afterPause = 0
    this.idleDeadline = 0
    this.downloadTaken = this.taken()
    this.downloadIdleSince = this.rt.now()
    this.onDrainBound ??= () => {
      if (this.phase !== Phase.Streaming) return
      this.downloadWatch = false
      if (this.sendfileStream !== null) { this.sendfileStream.resume(); return }
      if (this.route.timeouts.idle > 0) this.idleDeadline = this.rt.now() + this.route.timeouts.idle
      // Runs from the client's 'drain': an adapter's throw here would be an uncaught exception.
      try { this.flow?.resume() } catch (err) { this.fail(new ProxyError('ERR_INTERNAL', `the ${this.route.adapter.name} adapter's flow.resume() threw: ${(err as Error)?.message ?? String(err)}`, { phase: 'body', cause: err }), true) }
    }
    this.res.once('drain', this.onDrainBound)
  }

  /** `n` more response-body bytes went to the client; past 1 MiB the body counts as large. */
  private sent (n: number): void {
    this.bytesOut += n
    if (this.bytesOut >= SCAVENGE_MIN_BODY && !this.scavenging) this.scavenge()
  }

  private scavenge (): void {
    this.scavenging = true
    this.rt.scavenger?.watch(this.req.socket)
  }

  onEnd (trailers?: RawHeaders): void {
    if (this.sendfile !== null) { this.sendfileBackendDone(); return }
    if (this.phase !== Phase.Streaming) {
      if (this.phase === Phase.Dispatched) this.onError(new ProxyError('ERR_BAD_RESPONSE', 'response ended before its head', { phase: 'head' }))
      return
    }
    if (trailers !== undefined && trailers.length > 0 && acceptsTrailers(this.req.headers.te)) {
      this.res.addTrailers(headersToObject(trailers))
    }
    this.finish(null)
    this.res.end()
  }

  onError (err: ProxyError): void {
    if (this.phase === Phase.Done) return
    // A custom adapter may report a plain Error (or a string): the core reads code and status.
    if (!(err instanceof ProxyError)) err = toProxyError(err, this.phase === Phase.Streaming ? 'body' : 'head')
    // The backend's part of an X-Sendfile exchange is over once its head arrived.
    if (this.sendfile !== null && err.code !== 'ERR_SENDFILE_FORBIDDEN' && err.code !== 'ERR_SCRIPT_NOT_FOUND') { this.sendfileBackendDone(); return }
    const b = this.backend
    // Passive health after the connect: a reset, a close, a headers timeout or an invalid head before
    // any response head. A replayable one too: the HTTP adapter cannot tell a keep-alive race from a
    // backend that resets every request, and a race is rare enough that maxFails of them with no
    // success in between do not happen to a sound backend.
    if (b !== null && this.phase === Phase.Dispatched && !this.abortedFlag && isFailedAttempt(err)) this.route.pool.attemptFailed(b, err.code)
    if (b !== null && this.phase === Phase.Dispatched && err.replayable && err.phase !== 'connect' && !this.replayed && !this.abortedFlag) {
      this.replay()
      return
    }
    if (b !== null && this.phase === Phase.Dispatched && (err.retryable || this.resendable(err))) {
      if (err.phase === 'connect') this.route.pool.connectFailed(b, err.code, backendOverloaded(err))
      this.releaseBackend()
      if (this.attempts <= this.route.retries && !this.abortedFlag) {
        if (err.backend === undefined) err.backend = b.endpoint.id
        this.lastError = err
        this.tried ??= new Set()
        this.tried.add(b)
        this.phase = Phase.Prepare
        this.headDeadline = 0
        this.rewindBody()
        this.dispatch()
        return
      }
    }
    if (err.backend === undefined && b !== null) err.backend = b.endpoint.id
    this.fail(err, true)
  }

  /**
   * A backend connection reset or closed before any byte of the response arrived (the adapter
   * marks it `unanswered`; nothing reached the client either, the phase says): the request may
   * have run, so it goes again only when running it twice does no harm — an idempotent method
   * (RFC 9110 §9.2.2, idempotent.ts) with no body or a spooled one — as nginx's
   * `proxy_next_upstream error` does (idempotent methods only since 1.9.13). It counts against
   * `retries` and goes only to a backend this request was not sent to (`tried`): another backend
   * of the pool, or the process a spawn starts in place of the one that died (a new Backend, even
   * at the same address: waitForRestart). The same live backend (php-fpm's pool address, a static
   * `backends:` entry) never gets it twice, so a request that crashes its backend is not sent back
   * to it (the "query of death": at most 1 + `retries` distinct backends or processes see it).
   */
  private resendable (err: ProxyError): boolean {
    return err.unanswered && err.phase !== 'connect' &&
      (err.code === 'ERR_BACKEND_RESET' || err.code === 'ERR_BACKEND_CLOSED') &&
      isIdempotent(this.method) && (this.body === null || isReplayable(this.body))
  }

  /**
   * The last attempt's process may be gone (its connect refused or failed, its connection reset or
   * closed) and no backend this request has not tried is routable: a spawn restarts a process that
   * died, as a new backend at the same address. Only a pool that follows processes (not a fixed
   * `backends:` list, whose entries stay the same backends), once per attempt (retries bound the
   * attempts).
   */
  private mayAwaitRestart (): boolean {
    const last = this.lastError
    if (last === null || this.abortedFlag || this.restartWaitedAt === this.attempts || this.tried === null) return false
    if (this.route.pool.source instanceof StaticSource) return false
    // Not a full listen queue (EAGAIN): that process is alive, only busy.
    if (last.code === 'ERR_CONNECT_FAILED') return !backendOverloaded(last)
    return last.code === 'ERR_CONNECT_REFUSED' || last.code === 'ERR_BACKEND_RESET' || last.code === 'ERR_BACKEND_CLOSED'
  }

  /**
   * Wait for the process that replaces the one the last attempt failed on, within the bounded wait
   * every request gets for a routable backend (the route's headers timeout, at least 1 s), then
   * dispatch to it. A failed process that is still listed RESTART_GRACE_MS later is alive (a master
   * whose worker died, a backend that closed a connection): no new process is coming, and the
   * request fails with the last attempt's error, as it did at once before. So does the end of the
   * wait (the restart is late: its backoff).
   */
  private waitForRestart (): void {
    this.restartWaitedAt = this.attempts
    this.phase = Phase.Prepare
    this.headDeadline = 0
    const pool = this.route.pool
    const tried = this.tried as Set<Backend>
    const now = this.rt.now()
    const deadline = spawnWaitDeadline(now, this.route.timeouts.headers)
    const failed = [...tried]
    const stop = (): boolean => this.abortedFlag || this.phase !== Phase.Prepare
    waitReplacement(pool, failed, tried, this.signal, Math.min(now + RESTART_GRACE_MS, deadline), deadline, this.rt.now.bind(this.rt), stop).then((found) => {
      if (this.phase !== Phase.Prepare) return
      if (found) this.dispatch()
      else this.fail(this.lastError as ProxyError, true)
    }, (err: unknown) => {
      if (this.phase !== Phase.Prepare) return
      const e = toProxyError(err)
      this.fail(e.code === 'ERR_SPAWN_NOT_READY' ? this.lastError as ProxyError : e, true)
    })
  }

  /**
   * A spooled body (body-spool.ts) goes to the next attempt from its first byte, whatever the last
   * one read of it: an adapter reports a failure after body bytes as retryable only for such a body
   * (FastCGI's FCGI_OVERLOADED), and `retries` bounds how often it is sent. A client's stream is
   * left as it is (not read yet, or the failure was not retryable).
   */
  private rewindBody (): void {
    const fresh = replayBody(this.body)
    if (fresh === null) return
    this.body?.destroy()
    this.body = fresh
  }

  /**
   * A reused keep-alive connection the backend closed as the request arrived (the adapter marks the
   * error `replayable`): send it once more on a fresh connection. Not a failover: the backend is
   * healthy, so it may take the request again and nothing is counted against `retries`; the pool
   * counts it as one failed attempt (onError: a backend that resets every request looks the same).
   */
  private replay (): void {
    this.replayed = true
    this.releaseBackend()
    this.attempts--
    this.phase = Phase.Prepare
    this.dispatch()
  }

  /**
   * RFC 3875 §6.2.2 local redirect. Off by default (CVE-2024-38476: backend output must not pick
   * local handlers): the client gets the 302 RFC 3875 §6.2.3 asks for, Location unchanged.
   */
  takesLocalRedirects (): boolean {
    return this.route.s.localRedirects
  }

  onLocalRedirect (location: string): void {
    if (this.phase !== Phase.Dispatched) return
    if (!this.route.s.localRedirects) {
      const flow: FlowControl = { resume () {} }
      this.onHead(302, ['Location', location, 'Content-Length', '0'], flow)
      this.onEnd()
      return
    }
    this.finish(null, true)
    this.rt.redirect(this, location)
  }

  closeAfterResponse (): void {
    this.res.shouldKeepAlive = false
  }

  /**
   * Logged by line (runtime.stderr). Stderr that comes once the exchange is over (a CGI script's
   * pipe is drained after its response) has no later end: its unfinished line is logged at once.
   */
  onStderr (chunk: Buffer): void {
    this.rt.stderr(this, chunk, this.phase === Phase.Done)
  }

  // --- X-Sendfile ---------------------------------------------------------------------------

  /** Set while the proxy serves a file a backend named; `backend`/`file` say which half is done. */
  private sendfile: { backend: boolean, file: boolean } | null = null
  /** The file being sent, paused while the client drains (pauseForClient) instead of the backend. */
  private sendfileStream: Readable | null = null

  private startSendfile (path: string, headers: RawHeaders): void {
    this.sendfile = { backend: false, file: false }
    this.idleDeadline = 0
    openSendfile(path, this.route.s.sendfileRoots ?? [], headers).then((f) => {
      if (this.phase !== Phase.Streaming) { f.stream.destroy(); return }
      const res = this.res
      // A 204 has no body and no Content-Length (RFC 9110 §8.6); a 304 keeps the file's length.
      res.writeHead(this.status, this.status === 204 ? withoutLength(f.headers) : f.headers)
      if (this.method === 'HEAD' || this.status === 204 || this.status === 304) { f.stream.destroy(); this.sendfileFileDone(); return }
      this.sendfileStream = f.stream
      f.stream.on('data', (chunk: Buffer | string) => {
        this.sent(chunk.length)
        // A client that stops reading is cut after clientIdle, as for a backend's body.
        if (!res.write(chunk)) { f.stream.pause(); this.pauseForClient() }
      })
      f.stream.once('end', () => this.sendfileFileDone())
      f.stream.once('error', (err) => { this.sendfile = null; this.fail(new ProxyError('ERR_INTERNAL', `X-Sendfile read: ${err.message}`, { cause: err }), true) })
      this.signal.addEventListener('abort', () => f.stream.destroy(), { once: true })
    }, (err: unknown) => {
      this.sendfile = null
      this.fail(toProxyError(err, 'head'), true)
    })
  }

  private sendfileBackendDone (): void {
    if (this.sendfile === null) return
    this.sendfile.backend = true
    this.releaseBackend()
    if (this.sendfile.file) this.sendfileComplete()
  }

  /**
   * The file is out: the response is complete, whatever the backend still does (its body is
   * dropped anyway). A backend that keeps its output open after the head (a CGI script that goes
   * on running) held the exchange, its slot and the client's keep-alive connection with no timeout
   * at all (idleDeadline is off while the file is sent); it is aborted now, as nginx finalizes the
   * upstream on X-Accel-Redirect.
   */
  private sendfileFileDone (): void {
    if (this.sendfile === null) return
    this.sendfile.file = true
    const backendDone = this.sendfile.backend
    this.sendfileComplete()
    if (!backendDone) this.abortBackend()
  }

  private sendfileComplete (): void {
    this.sendfile = null
    this.finish(null)
    this.res.end()
  }

  // --- endings ----------------------------------------------------------------------------

  /** The runtime's sweep found a deadline passed. */
  timedOut (code: Extract<ErrorCode, 'ERR_HEADERS_TIMEOUT' | 'ERR_BODY_TIMEOUT'>): void {
    if (code === 'ERR_HEADERS_TIMEOUT' && this.awaitingConnection) {
      this.onError(new ProxyError('ERR_QUEUE_TIMEOUT', `no connection to the backend came free in ${this.route.admission.queueTimeout} ms (its adapter's connection cap)`, { phase: 'connect', backend: this.backendId }))
      return
    }
    this.onError(new ProxyError(code, undefined, { phase: code === 'ERR_HEADERS_TIMEOUT' ? 'head' : 'body' }))
  }

  /**
   * The adapter queues this exchange behind its connection cap (Exchange.waitingForConnection):
   * until connectionReady the wait is bounded by the route's queueTimeout (0: as long as the
   * client waits), from the dispatch, and is no late head.
   */
  waitingForConnection (): void {
    if (this.phase !== Phase.Dispatched) return
    this.awaitingConnection = true
    const q = this.route.admission.queueTimeout
    this.headDeadline = q > 0 ? this.dispatchedAt + q : 0
  }

  /** The exchange has its connection: timeouts.headers counts from now (nginx's proxy_read_timeout starts once the request is sent). */
  connectionReady (): void {
    if (!this.awaitingConnection) return
    this.awaitingConnection = false
    if (this.phase !== Phase.Dispatched) return
    const h = this.route.timeouts.headers
    this.headDeadline = h > 0 ? this.rt.now() + h : 0
  }

  /**
   * Response bytes that left the proxy's queue for the client's socket. Not the queue's length
   * alone: an adapter may still deliver a chunk or two after it was paused.
   */
  private taken (): number {
    return this.bytesOut - this.res.writableLength
  }

  /** The proxy's close() grace is over: a 503 if nothing was sent yet, else the connection is cut. */
  shutDown (): void {
    this.fail(new ProxyError('ERR_SHUTTING_DOWN', 'still in flight when the drain ended', { phase: this.phase === Phase.Streaming ? 'body' : 'head' }), true)
  }

  /**
   * A client that reads its response slowly is served at its pace; one that reads nothing for
   * `timeouts.clientIdle` while the backend waits on it is cut (ERR_CLIENT_TIMEOUT, the client's
   * fault, not the backend's). Like checkUpload, no per-write bookkeeping: the sweep compares the
   * bytes the client took between ticks.
   */
  checkDownload (now: number): void {
    const taken = this.taken()
    if (taken > this.downloadTaken) {
      this.downloadTaken = taken
      this.downloadIdleSince = now
      return
    }
    const limit = this.route.timeouts.clientIdle
    if (limit === 0 || now - this.downloadIdleSince < limit) return
    this.downloadWatch = false
    this.fail(new ProxyError('ERR_CLIENT_TIMEOUT', `the client read no response byte for ${limit} ms`, { phase: 'body' }), true)
  }

  /**
   * The backend's time to answer counts from when it has taken the whole request body, as nginx's
   * proxy_read_timeout counts once the request is sent: while it goes on taking the body (a CGI
   * script or git's receive-pack working through a large spooled upload, a backend reading the
   * last buffered bytes at its own pace), each tick that saw progress moves the head deadline, and
   * the body's end moves it once more. A backend that stops taking the body is timed from its last
   * step. Runs before the sweep's deadline check; the upload watch (checkUpload) has the deadline
   * while the client still sends, the queue while a connection is awaited.
   */
  checkBodySent (now: number): void {
    const body = this.body
    if (body === null || this.phase !== Phase.Dispatched) { this.bodyWatch = false; return }
    if (this.uploadWatch || this.awaitingConnection || this.headDeadline === 0) return
    if (body.readableEnded) {
      this.bodyWatch = false
      this.headDeadline = now + this.route.timeouts.headers
      return
    }
    const mark = this.bodyProgress(body)
    if (mark === this.bodyMark) return
    this.bodyMark = mark
    this.headDeadline = now + this.route.timeouts.headers
  }

  /**
   * A number that changes whenever the body's consumer takes bytes: what came in (the client's
   * socket, a spool file's reader) less what waits unread in the body's buffers. A refill after a
   * read changes it too (more came in); nothing changes it while the consumer reads nothing.
   */
  private bodyProgress (body: Readable): number {
    const req = this.req
    const inReq = req.socket === null ? 0 : req.socket.bytesRead - req.readableLength
    return inReq + spooledBytesRead(body) - (body === req ? 0 : body.readableLength)
  }

  /**
   * Slow-drip uploads (AC-59): the client's socket delivered no byte for `timeouts.clientIdle` while
   * we wanted more (a full read buffer means our own backpressure, not the client). No per-chunk
   * bookkeeping: the sweep compares the socket's byte counter between ticks.
   */
  checkUpload (now: number): void {
    const req = this.req
    const waitingForHead = this.phase === Phase.Dispatched && this.headDeadline !== 0 && !this.awaitingConnection
    if (req.complete || this.phase === Phase.Done) {
      this.uploadWatch = false
      // The backend's time to answer counts from the end of the upload, not from dispatch: a
      // 1 GiB upload at 10 MiB/s must not turn into a 504 (nginx: proxy_read_timeout starts once
      // the request is sent).
      if (req.complete && waitingForHead) this.headDeadline = now + this.route.timeouts.headers
      return
    }
    const read = req.socket.bytesRead
    const tick = now - this.uploadTickAt
    this.uploadTickAt = now
    // Expect: 100-continue and nobody read the body yet: the client waits for the 100, not idle.
    if (this.rt.holdsBodyForContinue(req)) { this.uploadIdleSince = now; this.uploadHeldMs += tick; return }
    // A full read buffer: the proxy holds the client back (a backend or the spool reads slowly).
    const held = req.readableLength >= req.readableHighWaterMark
    if (held) this.uploadHeldMs += tick
    if (this.uploadTooSlow(now, read)) return
    if (read !== this.uploadBytes) {
      this.uploadBytes = read
      this.uploadIdleSince = now
      // Still uploading, so the head is not late yet. A backend that stops reading stops this too
      // (the client's bytes stop), and its head timeout runs again.
      if (waitingForHead) this.headDeadline = now + this.route.timeouts.headers
      return
    }
    if (held) {
      this.uploadIdleSince = now
      return
    }
    // The client pauses and the backend has read what it was sent (no buffer full): the backend
    // waits for the client, so its head is not late. The pause is clientIdle's and minUploadRate's
    // (nginx: client_body_timeout), not a failed attempt against a healthy backend.
    if (waitingForHead) this.headDeadline = now + this.route.timeouts.headers
    // clientIdle 0: no limit on the client's pauses; the watch only keeps the head deadline above.
    const limit = this.route.timeouts.clientIdle
    if (limit === 0 || now - this.uploadIdleSince < limit) return
    this.uploadWatch = false
    this.res.shouldKeepAlive = false
    this.fail(new ProxyError('ERR_REQUEST_TIMEOUT', `no request body byte for ${this.route.timeouts.clientIdle} ms`, { phase: 'request' }), true)
  }

  /**
   * Slowloris on the body (mod_reqtimeout `body=,MinRate=`): a client that sends a byte now and
   * then is never idle for clientIdle, yet holds its slot and a backend (a CGI process, a FastCGI
   * worker) for as long as it likes. The body must keep up with `timeouts.minUploadRate` on
   * average from its start, `uploadGrace` being its credit: every minUploadRate bytes received buy
   * one more second, as mod_reqtimeout extends its deadline. Time the proxy held the client back
   * does not count. Checked on the sweep's tick, from the socket's byte counter (chunk framing
   * counts, a few bytes per chunk): nothing per chunk, no timer of its own.
   */
  private uploadTooSlow (now: number, read: number): boolean {
    const { minUploadRate: rate, uploadGrace: grace } = this.route.timeouts
    if (rate <= 0) return false
    const elapsed = now - this.uploadStartedAt - this.uploadHeldMs
    const got = read - this.uploadFrom
    if (elapsed <= grace + got * 1000 / rate) return false
    this.uploadWatch = false
    this.res.shouldKeepAlive = false
    const average = Math.floor(got * 1000 / Math.max(elapsed, 1))
    this.fail(new ProxyError('ERR_UPLOAD_TOO_SLOW', `${got} request body bytes in ${elapsed} ms (${average} bytes/s; time the proxy held the client back not counted): below timeouts.minUploadRate ${rate} bytes/s once timeouts.uploadGrace ${grace} ms is used up`, { phase: 'request' }), true)
    return true
  }

  private readonly onResClose = (): void => {
    if (this.phase === Phase.Done) return
    if (this.res.writableFinished) {
      // The whole answer went out and node closed the connection before this exchange heard of it
      // (an authorizer's refusal under Expect: 100-continue: node closes at once, the body never
      // asked for). A completed response, logged with the status the client got.
      this.status = this.res.statusCode
      this.finish(null)
      this.abortBackend()
      return
    }
    // The client went away: cancel the backend exchange and free its slot. Not an error.
    this.finish('ERR_CLIENT_ABORTED')
    this.abortBackend()
  }

  /**
   * Set for a pipelined request only (its response has no socket yet), made then: a closure per
   * request for the rare case. Its request ended (onResClose never comes for it): an abort only
   * if the client left.
   */
  private onReqClose: (() => void) | null = null

  private abortBackend (): void {
    if (this.abortedFlag) return
    this.abortedFlag = true
    const h = this.abortHandler
    this.abortHandler = null
    if (this.ac !== null) this.ac.abort()
    if (h === null) return
    try { h() } catch (err) {
      // An adapter's abort hook that throws: its backend work may linger, the process must not die.
      this.rt.log.error({ adapter: this.route.adapter.name, route: this.routeName, id: this.id, code: 'ERR_INTERNAL', err }, `the ${this.route.adapter.name} adapter's abort handler threw`)
    }
  }

  /** Fail the exchange: an error page if nothing was sent yet, else cut the client connection. */
  private fail (err: ProxyError, logIt: boolean, retryAfter?: number): void {
    if (this.phase === Phase.Done) return
    // "Client aborted" is said by whoever lost the request body; only the client's connection can
    // tell whether the client really left. If it is still there it must get an answer, not hang.
    if (err.code === 'ERR_CLIENT_ABORTED' && !this.clientGone()) err = stillConnected(err)
    const wasStreaming = this.res.headersSent
    if (!wasStreaming) this.status = err.status
    // Finish first: aborting makes the adapter report back (re-entrantly), and that report must
    // find the exchange already done.
    this.finish(err.code)
    this.abortBackend()
    if (err.code === 'ERR_CLIENT_ABORTED') return
    if (logIt) this.rt.logError(this, err)
    if (wasStreaming) {
      this.cutResponse(err)
      return
    }
    this.rt.sendError(this.res, err, retryAfter ?? (err.status === 503 ? this.route.pool.retryAfterSeconds() : undefined))
  }

  /**
   * A response that fails after its head (RELIABILITY rule 5): it stays truncated — no final chunk,
   * no padding — and the connection ends. What the backend sent before the failure and the client
   * has not taken yet still reaches it: the socket is ended after its queue (destroying it would
   * drop up to MAX_BUFFERED_PER_EXCHANGE bytes the backend did send), within clientIdle (5 s when
   * that is 0). A client that stopped reading (ERR_CLIENT_TIMEOUT) is cut at once.
   */
  private cutResponse (err: ProxyError): void {
    const socket = this.res.socket
    if (socket === null || socket.destroyed || !socket.writable || err.code === 'ERR_CLIENT_TIMEOUT' || this.res.writableLength + socket.writableLength === 0) {
      this.res.destroy(err)
      return
    }
    this.res.shouldKeepAlive = false
    const limit = this.route.timeouts.clientIdle > 0 ? this.route.timeouts.clientIdle : 5000
    const timer = setTimeout(() => socket.destroy(), limit)
    timer.unref()
    socket.once('close', () => clearTimeout(timer))
    // end() uncorks (corkUntilImmediate) and sends FIN after the queue: no chunked terminator.
    socket.end()
  }

  /** `/dir` names a directory with an index (DirectoryRedirect): 301 to `/dir/`, the query kept. */
  private redirectToDirectory (location: string): void {
    if (this.phase === Phase.Done) return
    this.status = 301
    this.finish(null)
    if (this.res.headersSent || this.res.destroyed) return
    this.res.writeHead(301, { location: this.query === '' ? location : `${location}?${this.query}`, 'content-length': 0 })
    this.res.end()
  }

  /** The client's connection is closed, or its request stream was aborted mid-body. */
  private clientGone (): boolean {
    return this.res.destroyed || this.req.socket.destroyed || this.req.readableAborted
  }

  private releaseBackend (): void {
    // This attempt's stderr is over (the end, an error, a retry), a backend still leased or not:
    // its unfinished line is logged now, not lost nor joined to the next backend's.
    if (this.stderrHeld !== null) this.rt.stderr(this, EMPTY, true)
    const b = this.backend
    if (b === null) return
    this.backend = null
    this.route.pool.finished(b)
  }

  private finish (error: ErrorCode | null, redirected = false): void {
    if (this.phase === Phase.Done) return
    const admitted = this.phase !== Phase.Admit
    this.phase = Phase.Done
    this.headDeadline = 0
    this.idleDeadline = 0
    this.uploadWatch = false
    this.downloadWatch = false
    if (this.scavenging) { this.scavenging = false; this.rt.scavenger?.unwatch(this.req.socket) }
    // Also logs an unfinished backend stderr line, leased backend or not.
    this.releaseBackend()
    if (admitted) {
      this.route.admission.release()
      this.rt.untrack(this)
    }
    if (this.onDrainBound !== null) this.res.removeListener('drain', this.onDrainBound)
    this.res.removeListener('close', this.onResClose)
    if (this.onReqClose !== null) this.req.removeListener('close', this.onReqClose)
    if (this.cleanupSpool !== null) this.cleanupSpool().catch(() => {})
    if (redirected) return
    if (!this.req.complete) this.discardUnreadBody()
    const stats = this.route.stats
    if (error !== null && error !== 'ERR_CLIENT_ABORTED') stats.errors++
    const now = this.rt.now()
    stats.observe(now - this.startedAt)
    if (this.rt.events.wantsRequests) {
      this.rt.events.requestEnd(endEvent({
        id: this.id, route: this.route.name, method: this.method, url: this.url, client: this.client.address,
        status: this.status, backend: this.backendId, startedAt: this.startedAt, headAt: this.headAt, bytesOut: this.bytesOut,
        httpVersion: this.req.httpVersion, referer: this.req.headers.referer, userAgent: this.req.headers['user-agent'],
      }, error, now))
    }
  }

  get inPhaseWaitingForHead (): boolean { return this.phase === Phase.Dispatched }

  /**
   * The exchange is over but the client's request body is not read to its end (the backend
   * answered without reading it all, a 404 before any spooling, an error): node:http parses the
   * next request of a keep-alive connection only after this body, and a body paused for
   * backpressure is never read again, so the connection would stall. After this turn (the adapter
   * lets go of the body when the core aborts it), the rest is read and dropped (src/core/body-pump.ts
   * discardBody).
   */
  private discardUnreadBody (): void {
    const max = this.route.s.maxBodySize > 0 ? Math.min(this.route.s.maxBodySize, DISCARD_MAX_BYTES) : DISCARD_MAX_BYTES
    // Now, before the response ends: node closes a last response's socket when it has.
    lingerOnClose(this.req)
    setImmediate(() => discardBody(this.req, max, DISCARD_MAX_MS))
  }
}

/** A body source said "client aborted" while the client is still connected: our failure, answered as one. */
function stillConnected (err: ProxyError): ProxyError {
  return new ProxyError('ERR_INTERNAL', `${err.message}, yet the client is still connected`, { cause: err, phase: err.phase, ...(err.backend !== undefined ? { backend: err.backend } : {}) })
}

/** What the authorizer step reads and writes of the exchange it guards (src/core/authorizer.ts). */
export type Authorizable = Pick<ProxyExchange, 'id' | 'method' | 'url' | 'path' | 'query' | 'httpVersion' | 'requestHeaders' | 'client' | 'routeName' | 'req' | 'res' | 'signal' | 'env'>

/**
 * A route's authorizer step, shared by requests and upgrades (src/core/upgrade.ts): null when the
 * exchange may go on, its Variable-* values merged into the CGI environment where it has one; else
 * the status of the authorizer's own answer, already written to `main.res`.
 */
export async function authorizeExchange (main: Authorizable, a: AuthorizerSettings): Promise<number | null> {
  const verdict = await authorize(main, a)
  if (!verdict.allowed) return verdict.status
  if (main.env !== null) mergeAuthorizerVariables(main.env, verdict.variables)
  return null
}

function headersToObject (raw: RawHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase()
    const prev = out[k]
    out[k] = prev === undefined ? raw[i + 1] : Array.isArray(prev) ? [...prev, raw[i + 1]] : [prev, raw[i + 1]]
  }
  return out
}

/** Flat header pairs without Content-Length. */
function withoutLength (headers: string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < headers.length; i += 2) if (headers[i].toLowerCase() !== 'content-length') out.push(headers[i], headers[i + 1])
  return out
}

/**
 * TE names `trailers` as a list member of its own (RFC 9110 §10.1.4: `#t-codings`, `trailers` or a
 * transfer coding with parameters), in any case; a word match took `x-trailers` for it.
 */
function acceptsTrailers (te: string | string[] | undefined): boolean {
  if (te === undefined) return false
  for (const member of String(te).split(',')) if (member.split(';')[0].trim().toLowerCase() === 'trailers') return true
  return false
}
