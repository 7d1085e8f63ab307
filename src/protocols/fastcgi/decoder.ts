/**
 * Incremental FastCGI record decoder for the web-server side: a state machine over buffered chunks
 * (the ws `lib/receiver.js` shape — named states, `consume(n)`, early return on short input, one
 * `fail()` that stops the loop). It never throws: every violation becomes one
 * `ProxyError('ERR_PROTOCOL')` handed to `sink.error`, after which it ignores all input.
 *
 * STDOUT/STDERR content is streamed as slices of the socket's chunks (no copy, no wait for the whole
 * record). END_REQUEST, GET_VALUES_RESULT and UNKNOWN_TYPE bodies are small and buffered whole.
 */
import { ProxyError } from '../../core/errors.js'
import { HEADER_LEN, RecordType, VERSION_1, decodePairs } from './codec.js'

/** What the decoder reports. Called synchronously from `write()` / `resume()`. */
export interface RecordSink {
  /** Is `requestId` an active request on this connection? (FastCGI 1.0 §3.3 "Managing request IDs") */
  accepts (requestId: number): boolean
  /** A piece of FCGI_STDOUT content. Return false to pause the decoder until `resume()`. */
  stdout (requestId: number, chunk: Buffer): boolean
  /** The empty FCGI_STDOUT record: end of stream (§3.3 stream records). */
  stdoutEnd (requestId: number): void
  stderr (requestId: number, chunk: Buffer): void
  stderrEnd (requestId: number): void
  /** FastCGI 1.0 §5.5 */
  endRequest (requestId: number, appStatus: number, protocolStatus: number): void
  /** FastCGI 1.0 §4.1 */
  values (values: Map<string, string>): void
  /** FastCGI 1.0 §4.2: the application did not understand a management record of `type`. */
  unknownType (type: number): void
  error (err: ProxyError): void
}

const EMPTY = Buffer.alloc(0)

const State = {
  HEADER: 0,
  /** STDOUT/STDERR content, streamed. */
  STREAM: 1,
  /** END_REQUEST / GET_VALUES_RESULT / UNKNOWN_TYPE content, buffered whole. */
  BODY: 2,
  PADDING: 3,
  FAILED: 4,
} as const
type State = typeof State[keyof typeof State]

export class RecordDecoder {
  private readonly sink: RecordSink
  private buffers: Buffer[] = []
  private bufferedBytes = 0
  private state: State = State.HEADER
  private paused = false
  private looping = false
  private type = 0
  private requestId = 0
  private contentLength = 0
  private remaining = 0
  private paddingLength = 0
  /** Bytes ever written, and where the record being read began (in that count). */
  private received = 0
  private headerAt = 0
  /**
   * Set by the sink while no request is active: any byte past the current record (its padding
   * included) fails the decoder. RELIABILITY §2.11: data after END_REQUEST → close, never reuse;
   * nginx keeps a connection only if END_REQUEST ends exactly where the read ended.
   */
  idle = false

  constructor (sink: RecordSink) {
    this.sink = sink
  }

  /** True between records: nothing buffered, no record half-read. A close here is clean. */
  get atBoundary (): boolean {
    return this.state === State.HEADER && this.bufferedBytes === 0
  }

  get failed (): boolean {
    return this.state === State.FAILED
  }

  get isPaused (): boolean {
    return this.paused
  }

  /** Buffered bytes past the end of the record being read (its padding included). */
  get bytesPastRecord (): number {
    const rest = this.state === State.HEADER
      ? 0
      : this.state === State.PADDING ? this.remaining : this.remaining + this.paddingLength
    return Math.max(0, this.bufferedBytes - rest)
  }

  /** Position, in bytes written, where the record being read (or the next one) begins. */
  get recordStart (): number {
    return this.state === State.HEADER ? this.received - this.bufferedBytes : this.headerAt
  }

  /** Bytes written so far. */
  get bytesReceived (): number {
    return this.received
  }

  write (chunk: Buffer): void {
    if (this.state === State.FAILED || chunk.length === 0) return
    this.buffers.push(chunk)
    this.bufferedBytes += chunk.length
    this.received += chunk.length
    this.loop()
  }

  pause (): void {
    this.paused = true
  }

  resume (): void {
    if (!this.paused) return
    this.paused = false
    this.loop()
  }

  /** Stop decoding and report `err` once (also used by the sink for violations it detects). */
  fail (err: ProxyError): void {
    if (this.state === State.FAILED) return
    this.state = State.FAILED
    this.buffers = []
    this.bufferedBytes = 0
    this.sink.error(err)
  }

  private loop (): void {
    if (this.looping) return // re-entrant resume() from inside a sink callback
    this.looping = true
    try {
      while (!this.paused && this.state !== State.FAILED) {
        if (this.state === State.HEADER) {
          if (this.idle && this.bufferedBytes > 0) {
            return this.fail(protocolError(`${this.bufferedBytes} bytes while no request is active (data after END_REQUEST)`))
          }
          if (this.bufferedBytes < HEADER_LEN) return
          this.headerAt = this.received - this.bufferedBytes
          this.readHeader(this.consume(HEADER_LEN))
        } else if (this.state === State.STREAM) {
          if (!this.readStream()) return
        } else if (this.state === State.BODY) {
          if (this.bufferedBytes < this.contentLength) return
          this.readBody(this.consume(this.contentLength))
        } else {
          if (!this.skipPadding()) return
        }
      }
    } finally {
      this.looping = false
    }
  }

  /** FastCGI 1.0 §3.3 record header; §2.11 "Our rule": only the types a web server may receive. */
  private readHeader (h: Buffer): void {
    if (h[0] !== VERSION_1) return this.fail(protocolError(`unsupported FastCGI version ${h[0]}`))
    this.type = h[1]
    this.requestId = (h[2] << 8) | h[3]
    this.contentLength = (h[4] << 8) | h[5]
    this.paddingLength = h[6]
    this.remaining = this.contentLength
    switch (this.type) {
      case RecordType.STDOUT:
      case RecordType.STDERR:
        if (!this.checkRequestId()) return
        if (this.contentLength === 0) {
          if (this.type === RecordType.STDOUT) this.sink.stdoutEnd(this.requestId)
          else this.sink.stderrEnd(this.requestId)
          return this.afterContent()
        }
        this.state = State.STREAM
        return
      case RecordType.END_REQUEST:
        if (!this.checkRequestId()) return
        // §5.5 FCGI_EndRequestBody is exactly 8 bytes.
        if (this.contentLength !== 8) return this.fail(protocolError(`END_REQUEST with contentLength ${this.contentLength}, expected 8`))
        this.state = State.BODY
        return
      case RecordType.GET_VALUES_RESULT:
      case RecordType.UNKNOWN_TYPE:
        // §3.3: management records have requestId 0.
        if (this.requestId !== 0) return this.fail(protocolError(`management record type ${this.type} with request id ${this.requestId}`))
        if (this.type === RecordType.UNKNOWN_TYPE && this.contentLength !== 8) {
          return this.fail(protocolError(`UNKNOWN_TYPE with contentLength ${this.contentLength}, expected 8`))
        }
        this.state = State.BODY
        return
      default:
        return this.fail(protocolError(`unexpected record type ${this.type} from the application`))
    }
  }

  private checkRequestId (): boolean {
    if (this.requestId !== 0 && this.sink.accepts(this.requestId)) return true
    this.fail(protocolError(`record type ${this.type} for request id ${this.requestId}, which is not active`))
    return false
  }

  /** Hand out as much stream content as is buffered, one slice per input chunk. */
  private readStream (): boolean {
    while (this.remaining > 0) {
      if (this.bufferedBytes === 0 || this.paused || this.state === State.FAILED) return false
      const chunk = this.consumeUpTo(this.remaining)
      this.remaining -= chunk.length
      if (this.type === RecordType.STDOUT) {
        if (!this.sink.stdout(this.requestId, chunk)) this.paused = true
      } else {
        this.sink.stderr(this.requestId, chunk)
      }
    }
    if (this.state !== State.FAILED) this.afterContent()
    return true
  }

  private readBody (body: Buffer): void {
    if (this.type === RecordType.END_REQUEST) {
      // §5.5 {appStatusB3..B0, protocolStatus, reserved[3]}
      this.afterContent()
      this.sink.endRequest(this.requestId, body.readUInt32BE(0), body[4])
    } else if (this.type === RecordType.UNKNOWN_TYPE) {
      this.afterContent()
      this.sink.unknownType(body[0])
    } else {
      const values = decodePairs(body)
      if (values === null) return this.fail(protocolError('malformed name-value pairs in GET_VALUES_RESULT'))
      this.afterContent()
      this.sink.values(values)
    }
  }

  private afterContent (): void {
    this.remaining = this.paddingLength
    this.state = this.paddingLength > 0 ? State.PADDING : State.HEADER
  }

  /** §3.3: "requires receivers to interpret the paddingLength and skip the paddingData" — even across reads. */
  private skipPadding (): boolean {
    while (this.remaining > 0) {
      if (this.bufferedBytes === 0) return false
      this.remaining -= this.consumeUpTo(this.remaining).length
    }
    this.state = State.HEADER
    return true
  }

  /** Up to `n` bytes from the first buffered chunk, without copying. */
  private consumeUpTo (n: number): Buffer {
    const buf = this.buffers[0]
    if (n >= buf.length) {
      this.buffers.shift()
      this.bufferedBytes -= buf.length
      return buf
    }
    this.buffers[0] = buf.subarray(n)
    this.bufferedBytes -= n
    return buf.subarray(0, n)
  }

  /** Exactly `n` (≤ bufferedBytes) bytes; copies only when they span chunks. */
  private consume (n: number): Buffer {
    if (n === 0) return EMPTY
    if (n <= this.buffers[0].length) return this.consumeUpTo(n)
    const dst = Buffer.allocUnsafe(n)
    let off = 0
    while (off < n) {
      const part = this.consumeUpTo(n - off)
      part.copy(dst, off)
      off += part.length
    }
    return dst
  }
}

export function protocolError (detail: string): ProxyError {
  return new ProxyError('ERR_PROTOCOL', detail, { phase: 'head' })
}
