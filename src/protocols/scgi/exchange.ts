/**
 * One SCGI exchange on its own connection (SCGI §2: one request per connection; the server ends
 * the response by closing). The core owns connect timeouts, head/idle timeouts (they abort
 * `exchange.signal`), retries and balancing; this is only the wire.
 *
 *   encode head ─> connect ─> write head + body (backpressure) ─┐
 *   socket data ─> CgiResponseParser ─> onHead | onLocalRedirect ─> onData* ─> onEnd (EOF or CL)
 *   any failure / abort ─> onError, socket destroyed                  (exactly one ending)
 *   reset (ECONNRESET/EPIPE, on a read or on the upload's write) ─> onError, never onEnd
 *   a TCP reset libuv reported as an end of stream (resetSeenAsEof) ─> onError too
 */
import type { Socket } from 'node:net'
import { isAborted, unwatchAbort, watchAbort } from '../../core/abort.js'
import { pumpBody, type BodyPump } from '../../core/body-pump.js'
import { ProxyError, fromSocketError } from '../../core/errors.js'
import type { ClientContext, Endpoint, Exchange, FlowControl, ResponseHandler } from '../../core/types.js'
import { CgiResponseParser, type CgiResponseParserOptions } from '../../core/cgi/response-head.js'
import { CgiBodyFramer, deliverCgiHead } from '../../core/cgi/response-body.js'
import { encodeScgiHead } from './netstring.js'
import type { ScgiOptions } from './options.js'

/**
 * Per request, only what cannot be shared: the exchange is its own FlowControl (no `{ resume }`
 * object and closure per head), the parser's options are the client's, and the socket's 'end' and
 * 'error' take plain `on` listeners (`once` wraps each in a state object and a bound function;
 * the socket is destroyed at the first ending anyway, and `settled` guards the rest).
 */
export class ScgiExchange implements FlowControl {
  private socket: Socket | null = null
  private settled = false
  private parser: CgiResponseParser | null
  /** Request body bytes are still being written. */
  private upload: BodyPump | null = null
  /** A byte of the response arrived: a connection lost before that is `unanswered` (see lost()). */
  private received = false
  private framer: CgiBodyFramer | null = null
  private readonly onAbort = (): void => this.fail(this.abortReason())

  constructor (
    private readonly endpoint: Endpoint,
    opts: ScgiOptions,
    private readonly ctx: ClientContext,
    private readonly exchange: Exchange,
    private readonly handler: ResponseHandler,
    private readonly done: (x: ScgiExchange) => void,
    parserOptions: CgiResponseParserOptions = scgiParserOptions(ctx, opts)
  ) {
    this.parser = new CgiResponseParser(parserOptions)
  }

  start (): void {
    const ex = this.exchange
    if (isAborted(ex)) return this.fail(this.abortReason())
    if (ex.body !== null && ex.contentLength === null) {
      return this.fail(new ProxyError('ERR_LENGTH_REQUIRED', 'SCGI needs the body length up front', { phase: 'request' }))
    }
    let head: Buffer
    try {
      // Before any connection: a value that cannot be encoded is the client's fault (400).
      head = encodeScgiHead(ex.env ?? {}, ex.body === null ? 0 : ex.contentLength ?? 0)
    } catch (err) {
      return this.fail(err as ProxyError)
    }
    watchAbort(ex, this.onAbort)
    this.ctx.connect(this.endpoint).then((socket) => {
      if (this.settled) { socket.destroy(); return }
      this.socket = socket
      socket.on('data', (chunk: Buffer) => this.onData(chunk))
      socket.on('end', () => this.onEof())
      socket.on('error', (err: NodeJS.ErrnoException) => this.onSocketError(err))
      socket.write(head)
      this.sendBody(socket)
    }, (err: unknown) => this.fail(err instanceof ProxyError ? err : fromSocketError(err as NodeJS.ErrnoException, 'connect', this.endpoint.id)))
  }

  /** FlowControl: the core's consumer wants more body after onData returned false. */
  resume (): void {
    if (!this.settled) this.socket?.resume()
  }

  /** Stop now (client gone, client destroyed). */
  abort (reason: ProxyError): void {
    this.fail(reason)
  }

  private abortReason (): ProxyError {
    const reason: unknown = this.exchange.signal.reason
    return reason instanceof ProxyError ? reason : new ProxyError('ERR_CLIENT_ABORTED', undefined, { cause: reason, backend: this.endpoint.id })
  }

  /** Stream exactly CONTENT_LENGTH body bytes, pausing the source while the socket is full. */
  private sendBody (socket: Socket): void {
    const body = this.exchange.body
    const total = this.exchange.contentLength ?? 0
    if (body === null || total === 0) return
    this.upload = pumpBody(body, total, socket, { endSink: false, onFail: (err) => this.fail(err) })
  }

  private onData (chunk: Buffer): void {
    if (this.settled) return
    this.received = true
    let data = chunk
    if (this.parser !== null) {
      const r = this.parser.push(chunk)
      if ('error' in r) return this.fail(withBackend(r.error, this.endpoint.id))
      if (!r.done) return
      this.parser = null
      this.framer = CgiBodyFramer.forResponse(r.head, this.exchange.method)
      if (deliverCgiHead(r.head, this.handler, this) === 'redirect') return this.settle()
      data = r.rest
    }
    const framer = this.framer as CgiBodyFramer
    const part = framer.take(data)
    if (part.length > 0 && !this.handler.onData(part)) this.socket?.pause()
    // AC-88: a Content-Length from the backend ends the response; extra bytes are dropped.
    if (framer.complete && !this.settled) this.succeed()
  }

  private onEof (): void {
    if (this.settled) return
    if (this.resetSeenAsEof()) return this.onSocketError(Object.assign(new Error('read ECONNRESET (reported as an end of stream)'), { code: 'ECONNRESET' }))
    if (this.parser !== null) return this.fail(this.lost(withBackend(this.parser.end(), this.endpoint.id)))
    const short = (this.framer as CgiBodyFramer).eof()
    if (short !== null) return this.fail(withBackend(short, this.endpoint.id))
    this.succeed()
  }

  /**
   * A socket error is never an end of the response, also while the upload is still going. SCGI
   * ends a response by a clean close (FIN: 'end', onEof). An early answer that does not read the
   * upload (AC-89, a 413) is delivered when it is complete by its Content-Length (onData settles
   * before any error) or when the server closes its side cleanly. A reset, whether a read or the
   * upload's write sees it (ECONNRESET, EPIPE), cuts the response: 502 before the head, an aborted
   * client connection after it (as nginx: a response delimited by close ends only at EOF).
   */
  private onSocketError (err: NodeJS.ErrnoException): void {
    if (this.settled) return
    this.fail(this.lost(fromSocketError(err, this.parser !== null ? 'head' : 'body', this.endpoint.id)))
  }

  /**
   * A TCP reset that libuv reported as an end of stream. When a reset arrives while response
   * bytes still wait unread (a slow client paused the socket), libuv reads them and, its last
   * read short and the poll that woke it saying HUP, reports an EOF without the read that would
   * have returned ECONNRESET (`uv__stream_io`, the POLLHUP short-cut): a response delimited by the
   * close would end "cleanly" with its tail lost (the backend's unsent bytes die with the RST).
   * The socket's state tells them apart: after a FIN it is CLOSE_WAIT and getpeername(2) works;
   * after a reset it is CLOSED and getpeername(2) fails (ENOTCONN). Node has no getsockopt
   * (SO_ERROR), so the handle's getpeername is asked directly (`socket.remoteAddress` caches it).
   * Not for unix sockets (a closed peer stays their peer), and not while the upload is still
   * being written (or waits in the socket's buffer): a backend that answered early and closed is
   * reset by our next write, after its FIN (the early answer stays delivered, AC-89).
   */
  private resetSeenAsEof (): boolean {
    if (this.endpoint.kind !== 'tcp' || this.upload?.active === true || (this.socket?.writableLength ?? 0) > 0) return false
    const handle = (this.socket as unknown as { _handle?: { getpeername?: (out: object) => number } } | null)?._handle
    if (typeof handle?.getpeername !== 'function') return false
    return handle.getpeername(PEER_SCRATCH) !== 0
  }

  /**
   * The connection reset or closed before any response byte: the core may send an idempotent
   * request to another backend or to the restarted process (exchange.ts, onError).
   */
  private lost (err: ProxyError): ProxyError {
    if (!this.received && (err.code === 'ERR_BACKEND_RESET' || err.code === 'ERR_BACKEND_CLOSED')) err.unanswered = true
    return err
  }

  private succeed (): void {
    this.settle()
    this.handler.onEnd()
  }

  private fail (err: ProxyError): void {
    if (this.settled) return
    this.settle()
    this.handler.onError(err)
  }

  private settle (): void {
    this.settled = true
    this.upload?.stop()
    unwatchAbort(this.exchange, this.onAbort)
    this.socket?.destroy()
    this.done(this)
  }
}

/** The response parser's options of a client's exchanges: made once per client, not per request. */
export function scgiParserOptions (ctx: ClientContext, opts: ScgiOptions): CgiResponseParserOptions {
  return { maxHeadSize: ctx.limits.maxResponseHeadSize, acceptStatusLine: opts.acceptStatusLine }
}

/** getpeername's output object of resetSeenAsEof (only its result code is read): one for all. */
const PEER_SCRATCH: object = {}

function withBackend (err: ProxyError, backend: string): ProxyError {
  err.backend ??= backend
  return err
}
