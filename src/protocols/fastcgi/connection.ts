/**
 * One transport connection to a FastCGI backend: the socket, its record decoder and the requests
 * active on it (by request id). Writes BEGIN_REQUEST/PARAMS in one Buffer, streams the body as
 * STDIN records with backpressure, routes STDOUT/STDERR/END_REQUEST back to the requests.
 *
 * Flow-control policy: a connection is read as one stream, so when any request on it asks to
 * pause (onData returned false), the whole connection pauses until every paused request resumed.
 * On a multiplexed connection a slow client therefore stalls its neighbours (head-of-line);
 * FastCGI has no per-request window to do better.
 *
 * Failure policy: any protocol violation or transport error destroys the connection and fails
 * every request active on it; such a connection is never reused.
 */
import type { Socket } from 'node:net'
import { ProxyError, fromSocketError } from '../../core/errors.js'
import { SLOT, type Slotted } from '../../live-set.js'
import { MAX_CONTENT, MAX_REQUEST_ID, ProtocolStatus, encodeAbortRequest, encodeEmpty, RecordType, setRequestId, stdinFraming } from './codec.js'
import { RecordDecoder, type RecordSink } from './decoder.js'
import type { Carrier, FcgiRequest } from './request.js'

export interface ConnectionOwner {
  readonly backend: string
  /** The request finished on the wire (END_REQUEST); `retry` asks to send it again elsewhere. */
  requestDone (conn: FcgiConnection, req: FcgiRequest, retry: boolean): void
  /** A request was lost because a reused connection closed before answering: send it again. */
  requeue (req: FcgiRequest): void
  /** The connection closed (for whatever reason); it must not be used again. */
  connectionClosed (conn: FcgiConnection): void
  /** The backend said it cannot multiplex (FCGI_CANT_MPX_CONN). */
  noMultiplexing (): void
  /** ms to wait for the END_REQUEST of a request sent FCGI_ABORT_REQUEST (see drop). */
  readonly abortTimeout: number
  readonly log: { debug (obj: object, msg?: string): void, warn (obj: object, msg?: string): void }
}

/**
 * The requests active on one connection, by request id: an array, not a Map. A long-lived Map
 * with an entry per request gets every request graph promoted out of V8's young generation
 * (see src/live-set.ts).
 */
export class RequestTable {
  private readonly byId: Array<FcgiRequest | undefined> = [undefined]
  size = 0

  has (id: number): boolean { return this.byId[id] !== undefined }
  get (id: number): FcgiRequest | undefined { return this.byId[id] }

  /**
   * The lowest request id neither in use nor `held` (FastCGI 1.0 §3.3: ids are reused, starting at
   * 1), or 0 when all 65535 are taken: an id is 16 bits on the wire and 0 is the management id.
   */
  freeId (held: ReadonlyArray<{ id: number }> = []): number {
    for (let id = 1; id <= MAX_REQUEST_ID; id++) {
      if (this.byId[id] === undefined && !held.some((h) => h.id === id)) return id
    }
    return 0
  }

  set (id: number, req: FcgiRequest): void {
    while (this.byId.length < id) this.byId.push(undefined)
    if (this.byId[id] === undefined) this.size++
    this.byId[id] = req
  }

  delete (id: number): boolean {
    if (this.byId[id] === undefined) return false
    this.byId[id] = undefined
    this.size--
    while (this.byId.length > 1 && this.byId[this.byId.length - 1] === undefined) this.byId.pop()
    return true
  }

  values (): FcgiRequest[] { return this.byId.filter((r): r is FcgiRequest => r !== undefined) }

  clear (): void {
    this.byId.length = 1
    this.size = 0
  }
}

export class FcgiConnection implements RecordSink, Carrier, Slotted {
  /** Its place in the client's connections. */
  [SLOT] = -1
  readonly socket: Socket
  readonly requests = new RequestTable()
  /** Requests that completed on this connection (a reused connection may have been closed by the backend). */
  served = 0
  /** False once the connection must not take another request. */
  reusable = true
  /** Closed by the client to make way for a fresh connection; counted out of the limit until gone. */
  retired = false
  closed = false
  idleTimer: NodeJS.Timeout | null = null
  private readonly owner: ConnectionOwner
  private readonly decoder: RecordDecoder
  private readonly paused = new Set<FcgiRequest>()
  private failure: ProxyError | null = null
  /** An aborted request's END_REQUEST never came: take nothing new, close once only such remain. */
  private ignoresAbort = false
  /**
   * Ids that ended while bytes read with their END_REQUEST were still undecoded (multiplexing):
   * not given to a new request until the decoder has passed byte `until`, so stray records for the
   * old request fail the connection instead of reaching the new one.
   */
  private held: Array<{ id: number, until: number }> = []
  /**
   * The socket closed while a slow client held the decoder paused on bytes already read (a backend
   * may close right after END_REQUEST: keepConn false, a recycled worker). Those bytes are decoded
   * as the client resumes; the close takes effect once the decoder stops holding any (resumeFor),
   * or at once when the connection is destroyed. Also after a socket error (a reset reported as
   * ECONNRESET: Node 24 does so where Node 20 and 22 report an end of stream, see
   * test/fastcgi/reset-eof.test.ts): the bytes read before it are the backend's, and a request
   * whose END_REQUEST is among them is complete; the error fails what the close cuts.
   */
  private closePending = false
  /** `failure` when a socket 'error' set it (not the decoder, nor destroy). */
  private socketFailure: ProxyError | null = null
  /**
   * The stream of a TCP connection ended with requests active, and that end was a reset libuv
   * reported as an end of stream (endOfTcpStream). Not `failure`: a request whose END_REQUEST the
   * paused decoder still holds (closePending) completes; only the requests the close cuts fail
   * with it (onClose).
   */
  private resetAtEnd: ProxyError | null = null

  /** `tcp`: the socket is a TCP connection (a reset may come as an end of stream, endOfTcpStream). */
  constructor (socket: Socket, owner: ConnectionOwner, tcp = false) {
    this.socket = socket
    this.owner = owner
    this.decoder = new RecordDecoder(this)
    // No request yet: the backend has nothing to say (see endRequest).
    this.decoder.idle = true
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => {
      this.decoder.write(chunk)
      if (this.decoder.isPaused && !this.closed) socket.pause()
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (this.failure === null) this.failure = this.socketFailure = fromSocketError(err, 'head', owner.backend)
    })
    if (tcp) socket.on('end', () => this.endOfTcpStream())
    socket.on('close', () => {
      if (this.decoder.isPaused && (this.failure === null || this.failure === this.socketFailure) && !this.closed) {
        this.closePending = true
        this.reusable = false
        return
      }
      this.onClose()
    })
  }

  get idle (): boolean {
    return this.requests.size === 0
  }

  /**
   * Whether `start` has a request id to give (at most 65535 ids, held ones included). The client's
   * per-connection limit is capped at 65535 (client.ts requestsPerConnection); held ids may still
   * take the last ones.
   */
  hasFreeId (): boolean {
    this.dropPassedHolds()
    return this.requests.size + this.held.length < MAX_REQUEST_ID
  }

  private dropPassedHolds (): void {
    const position = this.decoder.recordStart
    if (this.held.length > 0) this.held = this.held.filter((h) => h.until > position)
  }

  /** Put `req` on the wire with the lowest request id not active here (FastCGI 1.0 §3.3). */
  start (req: FcgiRequest): void {
    if (this.idleTimer !== null) { clearTimeout(this.idleTimer); this.idleTimer = null }
    this.dropPassedHolds()
    const id = this.requests.freeId(this.held)
    // Not reached: the client starts a request only where hasFreeId() (or on a fresh connection).
    if (id === 0) return req.fail(new ProxyError('ERR_INTERNAL', 'no free FastCGI request id on the connection', { backend: this.owner.backend }))
    this.decoder.idle = false
    req.requestId = id
    req.carrier = this
    req.onResume = () => this.resumeFor(req)
    this.requests.set(id, req)
    setRequestId(req.headRecords, id)
    this.socket.write(req.headRecords)
    if (req.streamsBody) this.streamBody(req)
  }

  /**
   * FCGI_STDIN (FastCGI 1.0 §6.2): exactly CONTENT_LENGTH bytes, in records of ≤ 65535 bytes,
   * then the empty record. Reads the body only as fast as the socket drains.
   */
  private streamBody (req: FcgiRequest): void {
    const body = req.exchange.body!
    const total = req.exchange.contentLength ?? 0
    const id = req.requestId
    let sent = 0
    const detach = (): void => {
      if (req.stopBody === stop) req.stopBody = null
      body.off('data', onData)
      body.off('end', onEnd)
      body.off('error', onError)
      this.socket.off('drain', onDrain)
    }
    // The request leaves this connection (settled, or to be sent again). A body not read yet stays
    // paused when another attempt may read it from its first byte (a flowing stream with no
    // listener would drop it); any other body is left flowing, its rest dropped unread.
    const stop = (keepWhole: boolean): void => {
      detach()
      if (keepWhole && !req.bodyStarted) body.pause()
    }
    req.stopBody = stop
    const active = (): boolean => req.carrier === this && !req.isSettled && !this.closed
    const onDrain = (): void => { if (active()) body.resume() }
    const onData = (chunk: Buffer): void => {
      if (!active()) return detach()
      req.bodyStarted = true
      if (sent + chunk.length > total) chunk = chunk.subarray(0, total - sent)
      sent += chunk.length
      let flushed = true
      this.socket.cork()
      for (let off = 0; off < chunk.length; off += MAX_CONTENT) {
        const piece = chunk.subarray(off, Math.min(off + MAX_CONTENT, chunk.length))
        const { header, padding } = stdinFraming(id, piece.length)
        this.socket.write(header)
        flushed = this.socket.write(piece)
        if (padding !== null) flushed = this.socket.write(padding)
      }
      if (sent === total) {
        detach()
        this.socket.write(encodeEmpty(RecordType.STDIN, id))
      } else if (!flushed) {
        body.pause()
        this.socket.once('drain', onDrain)
      }
      this.socket.uncork()
    }
    const onEnd = (): void => {
      detach()
      // FastCGI 1.0 §6.2: never send fewer bytes than CONTENT_LENGTH — the update would be applied
      // with a short body. The body ended early: the client is gone; abort the FastCGI request.
      if (active() && sent < total) {
        req.fail(new ProxyError('ERR_CLIENT_ABORTED', `request body ended at ${sent} of ${total} bytes`, { phase: 'request' }))
      }
    }
    const onError = (err: Error): void => {
      detach()
      if (active()) req.fail(new ProxyError('ERR_CLIENT_ABORTED', 'request body failed', { cause: err, phase: 'request' }))
    }
    body.on('data', onData)
    body.on('end', onEnd)
    body.on('error', onError)
    // Paused by an earlier attempt's stop: a 'data' listener alone does not restart it.
    body.resume()
    if (body.readableEnded) onEnd()
  }

  /** A settled request still active here: stop it on the wire. */
  drop (req: FcgiRequest): void {
    this.resumeFor(req)
    if (this.closed || req.carrier !== this) return
    if (this.requests.size > 1) {
      // FastCGI 1.0 §5.4: ask the application to end it; the id stays taken until END_REQUEST.
      this.socket.write(encodeAbortRequest(req.requestId))
      if (this.ignoresAbort) this.closeIfOnlyAborted()
      else this.awaitAbortEnd(req)
      return
    }
    // §5.4: "When a Web server is not multiplexing requests over a transport connection, the Web
    // server can abort a request by closing the request's transport connection."
    this.destroy(null)
  }

  /**
   * A backend that ignores FCGI_ABORT_REQUEST (§5.4 lets it finish the request first, but it
   * never sends the END_REQUEST) would keep the id taken for as long as the connection lives, and
   * with enough such ids a multiplexed connection fills up for good. After `abortTimeout` the
   * connection takes no new request and is closed as soon as only aborted requests remain on it:
   * the close frees their ids (§5.4: closing the connection aborts what is on it) without cutting
   * the requests still being answered there.
   */
  private awaitAbortEnd (req: FcgiRequest): void {
    if (req.abortTimer !== null) return
    req.abortTimer = setTimeout(() => {
      req.abortTimer = null
      if (this.closed || this.requests.get(req.requestId) !== req) return
      this.owner.log.warn({ backend: this.owner.backend, requestId: req.requestId, abortTimeout: this.owner.abortTimeout },
        'FastCGI backend sent no END_REQUEST for an aborted request; connection retired')
      this.ignoresAbort = true
      this.reusable = false
      this.closeIfOnlyAborted()
    }, this.owner.abortTimeout)
    req.abortTimer.unref()
  }

  /** Close a connection retired by awaitAbortEnd once every request left on it is settled. */
  private closeIfOnlyAborted (): void {
    if (!this.ignoresAbort || this.closed) return
    for (const r of this.requests.values()) if (!r.isSettled) return
    this.destroy(null)
  }

  private resumeFor (req: FcgiRequest): void {
    if (!this.paused.delete(req) || this.paused.size > 0 || this.closed) return
    // The decoder first works through what it holds; the socket flows again only if that did not
    // pause it anew. Resuming the socket first read one more chunk (several 8 KiB records from
    // php) per resume while a slow client took one record: the buffer grew with the response.
    this.decoder.resume()
    if (this.closePending) {
      if (!this.decoder.isPaused) this.onClose()
      return
    }
    if (!this.decoder.isPaused && !this.closed) this.socket.resume()
  }

  /**
   * A TCP reset that libuv reported as an end of stream. When a reset arrives while response bytes
   * still wait unread (a slow client paused the socket), libuv reads them and, its last read short
   * and the poll that woke it saying HUP, reports an EOF without the read that would have returned
   * ECONNRESET (`uv__stream_io`, the POLLHUP short-cut). Records frame the response, so it is cut
   * either way, but the requests it cuts failed with ERR_PROTOCOL (the RST drops the backend's
   * unsent bytes: the stream stops inside a record) or ERR_BACKEND_CLOSED instead of
   * ERR_BACKEND_RESET. The socket's state tells them apart: after a FIN it is CLOSE_WAIT and
   * getpeername(2) works; after a reset it is CLOSED and getpeername(2) fails (ENOTCONN). Node has
   * no getsockopt (SO_ERROR), so the handle's getpeername is asked directly (`socket.remoteAddress`
   * caches it), as the SCGI and HTTP clients do: one syscall per end of stream, and only with
   * requests active (an idle connection's end asks nothing). Run at 'end', before the socket ends
   * its own side (allowHalfOpen false: a FIN that our FIN answers would leave the socket CLOSED).
   * Not for unix sockets (a closed peer stays their peer), and not while a request body is still
   * being written (or waits in the socket's buffer): a backend that closed is reset by our next
   * write, after its FIN.
   */
  private endOfTcpStream (): void {
    if (this.closed || this.failure !== null || this.requests.size === 0 || this.socket.writableLength > 0) return
    for (const req of this.requests.values()) if (req.stopBody !== null) return
    const handle = (this.socket as unknown as { _handle?: { getpeername?: (out: object) => number } | null })._handle
    if (typeof handle?.getpeername !== 'function' || handle.getpeername(PEER_SCRATCH) === 0) return
    const err: NodeJS.ErrnoException = Object.assign(new Error('read ECONNRESET (reported as an end of stream)'), { code: 'ECONNRESET' })
    this.resetAtEnd = fromSocketError(err, 'body', this.owner.backend)
  }

  // --- RecordSink --------------------------------------------------------------------------------

  accepts (requestId: number): boolean {
    return this.requests.has(requestId)
  }

  stdout (requestId: number, chunk: Buffer): boolean {
    const req = this.requests.get(requestId)!
    // FastCGI 1.0 §3.3: after the empty record the stream is closed.
    if (req.stdoutEnded) {
      this.decoder.fail(new ProxyError('ERR_PROTOCOL', `STDOUT for request ${requestId} after its end of stream`, { phase: 'body' }))
      return true
    }
    if (req.stdout(chunk)) return true
    this.paused.add(req)
    return false
  }

  stdoutEnd (requestId: number): void {
    this.requests.get(requestId)!.stdoutEnded = true
  }

  stderr (requestId: number, chunk: Buffer): void {
    this.requests.get(requestId)!.stderr(chunk)
  }

  stderrEnd (): void {
    // §6.1: zero or more empty STDERR records are all fine.
  }

  endRequest (requestId: number, appStatus: number, protocolStatus: number): void {
    const req = this.requests.get(requestId)!
    this.requests.delete(requestId)
    this.paused.delete(req)
    req.carrier = null
    if (req.abortTimer !== null) { clearTimeout(req.abortTimer); req.abortTimer = null }
    this.served++
    // The backend ended the request before its whole STDIN stream (the empty record included) was
    // written: stopBody is still set until then. The rest is never sent, and a backend that reads
    // it after END_REQUEST waits for it on this connection (php-fpm's fastcgi_finish_request()
    // drains the body at the script's end: its worker hung for as long as the connection was
    // kept idle). nginx keeps no such connection either (request_body_sent): close it once idle.
    if (req.stopBody !== null) this.reusable = false
    // Decided before req.end(): its handler may dispatch the next request at once.
    if (this.idle) {
      // RELIABILITY §2.11: any byte past this record, now or while idle, fails the decoder and
      // closes the connection — so with such bytes already read it must not take the next request.
      this.decoder.idle = true
      if (this.decoder.bytesPastRecord > 0) this.reusable = false
    } else if (this.decoder.bytesPastRecord > 0) {
      this.held.push({ id: requestId, until: this.decoder.bytesReceived })
    }
    const outcome = req.end(appStatus, protocolStatus)
    if (protocolStatus === ProtocolStatus.CANT_MPX_CONN) {
      // §5.5 CANT_MPX_CONN: the backend does not multiplex. 'retry': rejected unprocessed, sent once
      // more on a fresh connection. Either way this connection takes nothing new (the requests on
      // it run on) and multiplexing is off, also when the request was under way (ERR_PROTOCOL).
      this.reusable = false
      this.owner.noMultiplexing()
    }
    this.owner.requestDone(this, req, outcome === 'retry')
    this.closeIfOnlyAborted()
  }

  values (): void {
    // GET_VALUES is only sent on the discovery connection (see discovery.ts); ignore stray answers.
  }

  unknownType (type: number): void {
    this.owner.log.debug({ backend: this.owner.backend, type }, 'FastCGI UNKNOWN_TYPE')
  }

  error (err: ProxyError): void {
    err.backend ??= this.owner.backend
    this.failure = err
    this.owner.log.warn({ backend: this.owner.backend, code: err.code, err: err.message }, 'FastCGI protocol error')
    this.destroy(err)
  }

  // --- lifetime ------------------------------------------------------------------------------------

  /** Close now. Requests still active fail with `err` (or are left alone when null: already settled). */
  destroy (err: ProxyError | null): void {
    if (err !== null) this.failure ??= err
    this.reusable = false
    this.socket.destroy()
    if (this.closePending) this.onClose()
  }

  private onClose (): void {
    if (this.closed) return
    this.closed = true
    this.reusable = false
    if (this.idleTimer !== null) { clearTimeout(this.idleTimer); this.idleTimer = null }
    const truncated = !this.decoder.failed && !this.decoder.atBoundary
    // A reset seen as the end of stream fails what the close cuts, as a reset reported as one does.
    const failure = this.failure ?? this.resetAtEnd
    const reqs = this.requests.values()
    this.requests.clear()
    this.paused.clear()
    for (const req of reqs) {
      req.carrier = null
      if (req.abortTimer !== null) { clearTimeout(req.abortTimer); req.abortTimer = null }
      if (req.isSettled) continue
      // A kept-alive connection the backend closed before it saw this request (the keep-alive
      // race, e.g. php-cgi recycling after PHP_FCGI_MAX_REQUESTS): nothing was processed. The
      // close comes as an EOF, or as a reset when the request lay unread in the exited worker's
      // socket (ECONNRESET; php-fpm's pm.max_requests). Only a `replayable` request is ever sent
      // on a reused connection (client.ts, pick), and only one the backend answered nothing yet
      // goes again: any STDOUT/STDERR byte (END_REQUEST takes it off this table) says it ran.
      // That it never ran cannot be known — a worker may act on a request and die before its
      // first byte — which is why only idempotent methods are `replayable` (request.ts).
      const raced = failure === null || failure.code === 'ERR_BACKEND_RESET'
      if (raced && this.served > 0 && !req.gotResponse && req.replayable) {
        this.owner.requeue(req)
        continue
      }
      const lost = failure !== null
        ? new ProxyError(failure.code, detailOf(failure), { cause: failure.cause ?? failure, backend: this.owner.backend })
        : truncated
          ? new ProxyError('ERR_PROTOCOL', 'connection closed in the middle of a record', { backend: this.owner.backend })
          : new ProxyError('ERR_BACKEND_CLOSED', 'connection closed without END_REQUEST', { backend: this.owner.backend })
      // No STDOUT/STDERR byte of this request came: the core may send an idempotent one to another
      // backend or to the restarted process (its failover after a reset, exchange.ts onError).
      if (!req.gotResponse && (lost.code === 'ERR_BACKEND_RESET' || lost.code === 'ERR_BACKEND_CLOSED')) lost.unanswered = true
      req.connectionLost(lost)
    }
    this.owner.connectionClosed(this)
  }
}

/** getpeername's output object of endOfTcpStream (only its result code is read): one for all. */
const PEER_SCRATCH: object = {}

function detailOf (err: ProxyError): string {
  const colon = err.message.indexOf(': ')
  return colon === -1 ? '' : err.message.slice(colon + 2)
}
