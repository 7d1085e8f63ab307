/**
 * One exchange on its way through a FastCGI backend: its encoded request head, the CGI head parser
 * over FCGI_STDOUT, the STDERR cap, flow control, and the guarantee that the handler hears exactly
 * one of onEnd / onError / onLocalRedirect.
 *
 * States:  queued ──start──> active ──END_REQUEST──> (settled, id freed)
 *             │                 │
 *             └─abort/fail──────┴──> settled; if the id is still active on a shared connection it
 *                                     stays a "zombie" until END_REQUEST (FastCGI 1.0 §3.3: an id
 *                                     is never reused before its END_REQUEST).
 */
import { isAborted, unwatchAbort, watchAbort } from '../../core/abort.js'
import { isReplayable } from '../../core/body-spool.js'
import { ProxyError, isProxyError } from '../../core/errors.js'
import { isIdempotent } from '../../core/idempotent.js'
import type { ClientContext, Exchange, FlowControl, ResponseHandler } from '../../core/types.js'
import { Utf8Carry } from '../../utf8.js'
import { ProtocolStatus, Role, encodeRequestHead } from './codec.js'
import { CgiBodyFramer, deliverCgiHead } from '../../core/cgi/response-body.js'
import { CgiResponseParser } from '../../core/cgi/response-head.js'

export interface RequestOwner {
  /**
   * The exchange settled (in-flight accounting). Unless `keepOnWire` (a local redirect: the
   * request runs on to its END_REQUEST), a request still active on a connection is stopped there.
   */
  settled (req: FcgiRequest, keepOnWire: boolean): void
  /** The client aborted while the request was queued or active. */
  aborted (req: FcgiRequest): void
  readonly maxHeadSize: number
  readonly stderrLimit: number
  readonly keepConn: boolean
  readonly backend: string
  readonly log: { debug (obj: object, msg?: string): void }
}

/** The connection a request is active on. */
export interface Carrier {
  /** Stop the request on the wire (ABORT_REQUEST on a shared connection, else close it). */
  drop (req: FcgiRequest): void
}

export class FcgiRequest {
  readonly exchange: Exchange
  readonly handler: ResponseHandler
  /** The context of the pool that sent it: a connection opened for it uses its connect timeout. */
  readonly ctx: ClientContext
  /** BEGIN_REQUEST + PARAMS (+ empty STDIN when there is no body to stream), id patched at start. */
  readonly headRecords: Buffer
  /** Whether the body is streamed as STDIN records after the head. */
  readonly streamsBody: boolean
  readonly flow: FlowControl
  isSettled = false
  /** Some bytes of `exchange.body` were consumed: the request can no longer be replayed. */
  bodyStarted = false
  /** Any FCGI_STDOUT/STDERR byte arrived for this request. */
  gotResponse = false
  stdoutEnded = false
  retries = 0
  /** onData returned false; waiting for flow.resume(). */
  paused = false
  /** Called by flow.resume() (set by the connection carrying the request). */
  onResume: (() => void) | null = null
  /** The connection the request is active on; null while queued and after END_REQUEST. */
  carrier: Carrier | null = null
  /** Request id on `carrier`. */
  requestId = 0
  /**
   * Set by the connection streaming the body: stop reading it; `keepWhole` and no byte read yet
   * leaves it paused for another attempt (see connection.ts streamBody).
   */
  stopBody: ((keepWhole: boolean) => void) | null = null
  /** Armed when FCGI_ABORT_REQUEST was sent for this request: its END_REQUEST is overdue then. */
  abortTimer: NodeJS.Timeout | null = null
  private readonly owner: RequestOwner
  private parser: CgiResponseParser | null = null
  private framer: CgiBodyFramer | null = null
  private headDone = false
  private stderrBytes = 0
  /** The incomplete UTF-8 character the last STDERR record ended with; the marker said (stderr). */
  private readonly stderrCarry = new Utf8Carry()
  private stderrMarked = false
  private readonly abortListener: () => void

  /** Throws ProxyError for params FastCGI cannot carry; the caller reports it before queueing. */
  constructor (exchange: Exchange, handler: ResponseHandler, owner: RequestOwner, ctx: ClientContext) {
    this.exchange = exchange
    this.ctx = ctx
    this.handler = handler
    this.owner = owner
    const authorizer = exchange.role === 'authorizer'
    // FastCGI 1.0 §6.3: an Authorizer gets no request body; the core keeps it for the responder.
    this.streamsBody = !authorizer && exchange.body !== null && (exchange.contentLength ?? 0) > 0
    if (exchange.env === null) throw new ProxyError('ERR_INTERNAL', 'FastCGI exchange without a CGI environment')
    this.headRecords = encodeRequestHead(1, authorizer ? Role.AUTHORIZER : Role.RESPONDER, owner.keepConn,
      exchange.env, !this.streamsBody)
    this.flow = { resume: () => { if (this.paused && !this.isSettled) { this.paused = false; this.onResume?.() } } }
    this.abortListener = () => { if (!this.isSettled) this.owner.aborted(this) }
    watchAbort(exchange, this.abortListener)
  }

  /** Why the exchange was aborted, as a ProxyError (the core's timeout reason, or a client abort). */
  abortReason (): ProxyError {
    const reason: unknown = this.exchange.signal.reason
    if (isProxyError(reason)) return reason
    return new ProxyError('ERR_CLIENT_ABORTED', undefined, { cause: reason, backend: this.owner.backend })
  }

  /**
   * Whether it may be sent again if a reused connection closes under it unanswered (the
   * keep-alive race, connection.ts): an idempotent method (the backend may have read the request
   * and acted on it before its worker died: a POST must not run twice), no body to stream, and not
   * sent again already. The HTTP adapter applies the same rule (src/core/idempotent.ts).
   */
  get replayable (): boolean {
    return !this.streamsBody && this.retries === 0 && isIdempotent(this.exchange.method)
  }

  /** A fresh attempt after CANT_MPX_CONN or a reused connection closing under us. */
  resetForRetry (): void {
    this.stopBody?.(true)
    this.retries++
    this.stdoutEnded = false
    this.gotResponse = false
    this.paused = false
    this.onResume = null
    this.carrier = null
    this.requestId = 0
  }

  /** FCGI_STDOUT content. Returns false when the handler asked to pause. */
  stdout (chunk: Buffer): boolean {
    this.gotResponse = true
    if (this.isSettled) return true
    if (!this.headDone) {
      this.parser ??= new CgiResponseParser({ maxHeadSize: this.owner.maxHeadSize })
      const r = this.parser.push(chunk)
      if ('error' in r) {
        this.fail(r.error)
        return true
      }
      if (!r.done) return true
      this.headDone = true
      this.parser = null
      this.framer = CgiBodyFramer.forResponse(r.head, this.exchange.method)
      if (deliverCgiHead(r.head, this.handler, this.flow) === 'redirect') {
        // RFC 3875 §6.2.2: the core re-dispatches; this request still runs to its END_REQUEST —
        // unless its body is still being sent (stopBody set): settling stops that, and a backend
        // that reads the body before it ends (php-fpm drains it at the script's end) would wait
        // for it, with the connection and its worker, for good. It is dropped from the wire then.
        this.settle(this.stopBody === null)
        return true
      }
      if (this.isSettled || r.rest.length === 0) return true
      chunk = r.rest
    }
    // A backend Content-Length frames the body: bytes past it are dropped (CVE-2024-24795).
    const data = this.framer!.take(chunk)
    if (data.length === 0 || this.handler.onData(data)) return true
    this.paused = !this.isSettled
    return !this.paused
  }

  /**
   * FCGI_STDERR: always drained, handed on up to the cap, then one marker (as CGI's, AC-91) so the
   * log says the rest was dropped. The core decodes each record on its own, and a backend cuts its
   * records by size: the incomplete UTF-8 character a record ends with (at most 3 bytes) is held
   * for the next record, so a character split between two is logged whole rather than as two
   * U+FFFD. At the cap that half character is left out, as the rest.
   */
  stderr (chunk: Buffer): void {
    this.gotResponse = true
    if (this.stderrMarked || chunk.length === 0 || this.isSettled || this.handler.onStderr === undefined) return
    const room = this.owner.stderrLimit - this.stderrBytes
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk
    this.stderrBytes += part.length
    const whole = this.stderrCarry.take(part, part.length < chunk.length)
    if (whole.length > 0) this.handler.onStderr(whole)
    if (part.length < chunk.length) {
      this.stderrMarked = true
      this.handler.onStderr(Buffer.from(`[stderr truncated after ${this.owner.stderrLimit} bytes]`))
    }
  }

  /**
   * FastCGI 1.0 §5.5 END_REQUEST. Returns 'retry' when the backend refused the request unprocessed
   * (CANT_MPX_CONN) and it may be sent again.
   */
  end (appStatus: number, protocolStatus: number): 'done' | 'retry' {
    if (this.isSettled) return 'done'
    const backend = this.owner.backend
    switch (protocolStatus) {
      case ProtocolStatus.REQUEST_COMPLETE:
        break
      case ProtocolStatus.CANT_MPX_CONN:
        if (this.retries === 0 && !this.bodyStarted && !this.gotResponse) return 'retry'
        this.fail(new ProxyError('ERR_PROTOCOL', 'backend answered CANT_MPX_CONN after the request was under way', { phase: this.headDone ? 'body' : 'head', backend }))
        return 'done'
      case ProtocolStatus.OVERLOADED:
        // Rejected before processing: the core may try another backend.
        this.fail(new ProxyError('ERR_BACKEND_OVERLOADED', 'FCGI_OVERLOADED', { phase: 'connect', backend }))
        return 'done'
      case ProtocolStatus.UNKNOWN_ROLE:
        this.fail(new ProxyError('ERR_UNKNOWN_ROLE', `role ${this.exchange.role} (FCGI_UNKNOWN_ROLE)`, { phase: 'connect', backend }))
        return 'done'
      default:
        this.fail(new ProxyError('ERR_PROTOCOL', `END_REQUEST with unknown protocolStatus ${protocolStatus}`, { phase: 'head', backend }))
        return 'done'
    }
    // appStatus is what the CGI program would have exited with: log only (fcgiwrap reports 0
    // even for a killed script, RELIABILITY §2.11).
    if (appStatus !== 0) this.owner.log.debug({ backend, exchange: this.exchange.id, appStatus }, 'FastCGI appStatus')
    if (!this.headDone) {
      this.fail(new ProxyError('ERR_BAD_RESPONSE', 'FastCGI request ended before the CGI response head was complete', { phase: 'head', backend }))
      return 'done'
    }
    const short = this.framer!.eof()
    if (short !== null) {
      this.fail(short)
      return 'done'
    }
    this.settle(false)
    this.handler.onEnd()
    return 'done'
  }

  /** The connection failed under an active request. */
  connectionLost (err: ProxyError): void {
    if (this.isSettled) return
    err.phase = this.headDone ? 'body' : 'head'
    this.fail(err)
  }

  fail (err: ProxyError): void {
    if (this.isSettled) return
    err.backend ??= this.owner.backend
    // Another backend may be tried only with the whole body: once a byte of it went to this one, a
    // client's stream cannot give it again, whatever the code. A spooled body (requestBuffering,
    // or a chunked one) can: the core reads it again from its first byte (body-spool replayBody),
    // at most as often as the route's retries allow.
    if (this.bodyStarted && err.retryable && !isReplayable(this.exchange.body)) err = spent(err)
    this.settle(false, err.retryable)
    this.handler.onError(err)
  }

  /** `retryable`: the core may send the exchange again, so a body not read yet is kept whole. */
  private settle (keepOnWire: boolean, retryable = false): void {
    this.flushStderr()
    this.isSettled = true
    this.paused = false
    this.parser = null
    unwatchAbort(this.exchange, this.abortListener)
    this.stopBody?.(retryable)
    if (retryable) this.releaseUnreadBody()
    this.owner.settled(this, keepOnWire)
  }

  /**
   * The exchange is over, and with it the STDERR stream: the incomplete UTF-8 character it ended
   * with (held for a record that never came) is handed on, to be logged as U+FFFD, not dropped.
   * Past the cap it was left out already (stderr).
   */
  private flushStderr (): void {
    const held = this.stderrCarry.end()
    if (held.length > 0 && !this.stderrMarked) this.handler.onStderr?.(held)
  }

  /**
   * stopBody keeps a body not read yet paused, whole, for the core's next attempt (a retryable
   * failure such as FCGI_OVERLOADED). Should the core make none, it aborts the exchange: the body
   * then flows on unread, as an abandoned body always did, so the client connection is not stalled.
   * The next attempt's request takes the exchange's one abort watcher over (watchAbort).
   */
  private releaseUnreadBody (): void {
    const body = this.exchange.body
    if (!this.streamsBody || this.bodyStarted || body === null || !body.isPaused()) return
    if (isAborted(this.exchange)) body.resume()
    else watchAbort(this.exchange, () => { body.resume() })
  }
}

/**
 * `err` (whose code is retryable: FCGI_OVERLOADED) after request bytes reached the backend: same
 * code, status and message, never retried.
 */
function spent (err: ProxyError): ProxyError {
  const e = new SpentRequestError(err.code, undefined, { cause: err.cause, phase: err.phase, ...(err.backend !== undefined ? { backend: err.backend } : {}) })
  e.message = err.message
  return e
}

class SpentRequestError extends ProxyError {
  override get retryable (): boolean { return false }
}
