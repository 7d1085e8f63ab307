/**
 * FastCGI 1.0 record encoder and name-value pair codec (the web-server side).
 *
 * Every request is encoded into as few Buffers as possible: BEGIN_REQUEST + all PARAMS records +
 * the empty PARAMS terminator (+ the empty STDIN record when there is no body) go out as ONE Buffer;
 * each STDIN chunk costs one 8-byte header and a slice of a shared zero pad.
 */
import { ProxyError } from '../../core/errors.js'
import { Scratch } from '../scratch.js'
import { envBytes, hasRawBytes } from '../../utf8.js'

/** FastCGI 1.0 §8: header length and version. */
export const HEADER_LEN = 8
export const VERSION_1 = 1

/** FastCGI 1.0 §8: record types. */
export const RecordType = {
  BEGIN_REQUEST: 1,
  ABORT_REQUEST: 2,
  END_REQUEST: 3,
  PARAMS: 4,
  STDIN: 5,
  STDOUT: 6,
  STDERR: 7,
  DATA: 8,
  GET_VALUES: 9,
  GET_VALUES_RESULT: 10,
  UNKNOWN_TYPE: 11,
} as const

/** FastCGI 1.0 §5.1: roles. */
export const Role = { RESPONDER: 1, AUTHORIZER: 2, FILTER: 3 } as const

/** FastCGI 1.0 §5.1: BEGIN_REQUEST flags. */
export const KEEP_CONN = 1

/** FastCGI 1.0 §5.5: END_REQUEST protocolStatus. */
export const ProtocolStatus = {
  REQUEST_COMPLETE: 0,
  CANT_MPX_CONN: 1,
  OVERLOADED: 2,
  UNKNOWN_ROLE: 3,
} as const

/** FastCGI 1.0 §3.3: "contentData: Between 0 and 65535 bytes". */
export const MAX_CONTENT = 65535
/** FastCGI 1.0 §3.3: requestId is 16 bits and 0 is the management id: ids 1..65535. */
export const MAX_REQUEST_ID = 65535

/** Largest single name-value pair we can send: php parses each PARAMS record on its own. */
export const MAX_PAIR = MAX_CONTENT

const ZERO_PAD = Buffer.alloc(8)

/**
 * FastCGI 1.0 §3.3 recommends 8-byte aligned records. php rejects a record whose
 * contentLength + paddingLength exceeds 65535, so padding is dropped when it would.
 */
export function paddingFor (contentLength: number): number {
  const pad = (8 - (contentLength & 7)) & 7
  return contentLength + pad > MAX_CONTENT ? 0 : pad
}

/** FastCGI 1.0 §3.3: {version, type, requestIdB1, requestIdB0, contentLengthB1, contentLengthB0, paddingLength, reserved}. */
export function writeHeader (buf: Buffer, off: number, type: number, requestId: number, contentLength: number, paddingLength: number): number {
  buf[off] = VERSION_1
  buf[off + 1] = type
  buf[off + 2] = (requestId >> 8) & 0xff
  buf[off + 3] = requestId & 0xff
  buf[off + 4] = (contentLength >> 8) & 0xff
  buf[off + 5] = contentLength & 0xff
  buf[off + 6] = paddingLength
  buf[off + 7] = 0
  return off + HEADER_LEN
}

/** A record with no content: empty stream terminators, ABORT_REQUEST. */
export function encodeEmpty (type: number, requestId: number): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_LEN)
  writeHeader(buf, 0, type, requestId, 0, 0)
  return buf
}

/** FastCGI 1.0 §5.4 */
export function encodeAbortRequest (requestId: number): Buffer {
  return encodeEmpty(RecordType.ABORT_REQUEST, requestId)
}

/** FastCGI 1.0 §3.4: 1-byte length up to 127, else 4 bytes with the high bit set. */
function lengthSize (n: number): number {
  return n > 127 ? 4 : 1
}

function writeLength (buf: Buffer, off: number, n: number): number {
  if (n > 127) {
    buf.writeUInt32BE((n | 0x80000000) >>> 0, off)
    return off + 4
  }
  buf[off] = n
  return off + 1
}

/**
 * Name-value pairs as FastCGI sends them (FastCGI 1.0 §3.4), in the object's key order: a CGI
 * environment as the core builds it. The encoders walk its own keys directly; going through
 * `Object.entries` cost ~1.2 KB and ~2 µs per request (docs/design/architecture.md, "What
 * proxycore's own code cost").
 */
export type Params = Readonly<Record<string, string>>

/** Byte length of each pair (length prefixes included); rejects what FastCGI cannot carry. */
function measurePairs (params: Params): { names: Array<string | Buffer>, values: Array<string | Buffer>, sizes: number[], nameLens: number[], valueLens: number[] } {
  const names: Array<string | Buffer> = []
  const values: Array<string | Buffer> = []
  const sizes: number[] = []
  const nameLens: number[] = []
  const valueLens: number[] = []
  for (const name in params) {
    if (!Object.hasOwn(params, name)) continue
    const value = params[name]
    // FastCGI 1.0 §6.1: "the value itself does not include a null byte" (php reads C strings).
    if (name.length === 0 || name.includes('\0') || value.includes('\0')) {
      throw new ProxyError('ERR_BAD_HEADER_VALUE', `FastCGI parameter ${JSON.stringify(name.slice(0, 64))} is empty or contains NUL`)
    }
    // Header bytes that were not UTF-8 go out as they came (envBytes, docs/protocols/fastcgi.md).
    const nameBytes = hasRawBytes(name) ? envBytes(name) : name
    const bytes = hasRawBytes(value) ? envBytes(value) : value
    const n = typeof nameBytes === 'string' ? Buffer.byteLength(name) : nameBytes.length
    const v = typeof bytes === 'string' ? Buffer.byteLength(value) : bytes.length
    const size = lengthSize(n) + lengthSize(v) + n + v
    // AC-78: a pair split across two PARAMS records is rejected by php; refuse before connecting.
    if (size > MAX_PAIR) {
      throw new ProxyError('ERR_BAD_HEADER_VALUE', `FastCGI parameter ${JSON.stringify(name.slice(0, 64))} is ${size} bytes, over the ${MAX_PAIR}-byte record limit`)
    }
    names.push(nameBytes); values.push(bytes); sizes.push(size); nameLens.push(n); valueLens.push(v)
  }
  return { names, values, sizes, nameLens, valueLens }
}

interface RecordPlan { size: number, write: (buf: Buffer, off: number, type: number, requestId: number) => number }

/** Where the 7-bit encoder writes its records (src/protocols/scratch.ts). */
const scratch = new Scratch()

/**
 * Encode name-value pairs as a stream of `type` records (PARAMS or GET_VALUES) into `scratch` from
 * offset 0, never splitting a pair across records, each record ≤ 65535 content bytes, padded to 8.
 * Returns the end offset, or -1 when a pair is not plain 7-bit text without NUL, has an empty name
 * or is over MAX_PAIR: the general encoder (planPairRecordsUtf8) then does the whole job, and
 * reports the error if there is one.
 *
 * Almost every CGI environment is 7-bit text: characters are bytes, and one pass over the
 * environment copies them with a loop that checks them on the way. Measured against one latin1
 * string per record written with buf.write (the encoder before): ~4.9 → ~4.1 µs and 6.1 → 0.8 KB
 * allocated per fresh 33-variable environment (docs/design/architecture.md, "What proxycore's own
 * code cost"); buf.latin1Write per name and value was slower than both (~7 µs, a native call each).
 */
function encodePlainPairs (params: Params, type: number, requestId: number): number {
  let buf = scratch.buf
  let recStart = 0
  let off = HEADER_LEN
  for (const name in params) {
    // Own keys only, as Object.entries gave: a polluted Object.prototype must never reach php-fpm
    // as, say, PHP_VALUE.
    if (!Object.hasOwn(params, name)) continue
    const value = params[name]
    const n = name.length
    const v = value.length
    const size = (n > 127 ? 4 : 1) + (v > 127 ? 4 : 1) + n + v
    // AC-78: a pair split across two PARAMS records is rejected by php; the general encoder refuses it.
    if (n === 0 || size > MAX_PAIR) return -1
    if (off - recStart - HEADER_LEN + size > MAX_CONTENT) {
      const len = off - recStart - HEADER_LEN
      const pad = paddingFor(len)
      writeHeader(buf, recStart, type, requestId, len, pad)
      for (let i = 0; i < pad; i++) buf[off + i] = 0
      recStart = off + pad
      off = recStart + HEADER_LEN
    }
    // Room for this pair, its record's padding and the next record's header.
    if (off + size + 16 > buf.length) buf = scratch.grow(off + size + 16, off)
    off = writeLength(buf, off, n)
    off = writeLength(buf, off, v)
    // (c - 1) | c is over 0x7f for NUL (-1) and for any c over 0x7f.
    let bits = 0
    for (let i = 0; i < n; i++) { const c = name.charCodeAt(i); bits |= (c - 1) | c; buf[off++] = c }
    for (let i = 0; i < v; i++) { const c = value.charCodeAt(i); bits |= (c - 1) | c; buf[off++] = c }
    if ((bits & ~0x7f) !== 0) return -1
  }
  const len = off - recStart - HEADER_LEN
  if (len === 0) return recStart // no pairs at all (a record is only closed for a pair that follows)
  const pad = paddingFor(len)
  writeHeader(buf, recStart, type, requestId, len, pad)
  for (let i = 0; i < pad; i++) buf[off + i] = 0
  return off + pad
}


/** The general encoder: any Unicode text as UTF-8 (escaped header bytes as themselves), two writes per pair. */
function planPairRecordsUtf8 (params: Params): RecordPlan {
  const m = measurePairs(params)
  // Record boundaries: [startPairIndex, endPairIndex, contentLength]
  const records: number[] = []
  let start = 0
  let len = 0
  for (let i = 0; i < m.sizes.length; i++) {
    if (len + m.sizes[i] > MAX_CONTENT) {
      records.push(start, i, len)
      start = i
      len = 0
    }
    len += m.sizes[i]
  }
  if (len > 0) records.push(start, m.sizes.length, len)
  let size = 0
  for (let r = 0; r < records.length; r += 3) size += HEADER_LEN + records[r + 2] + paddingFor(records[r + 2])
  const write = (buf: Buffer, off: number, type: number, requestId: number): number => {
    for (let r = 0; r < records.length; r += 3) {
      const contentLength = records[r + 2]
      const pad = paddingFor(contentLength)
      off = writeHeader(buf, off, type, requestId, contentLength, pad)
      for (let i = records[r]; i < records[r + 1]; i++) {
        off = writeLength(buf, off, m.nameLens[i])
        off = writeLength(buf, off, m.valueLens[i])
        const name = m.names[i]
        off += typeof name === 'string' ? buf.write(name, off) : name.copy(buf, off)
        const value = m.values[i]
        off += typeof value === 'string' ? buf.write(value, off) : value.copy(buf, off)
      }
      buf.fill(0, off, off + pad)
      off += pad
    }
    return off
  }
  return { size, write }
}

/**
 * The whole request head in one Buffer: BEGIN_REQUEST (FastCGI 1.0 §5.1), PARAMS records and the
 * empty PARAMS record (§5.2), and, when `endStdin`, the empty STDIN record (§6.2).
 * Throws ProxyError('ERR_BAD_HEADER_VALUE') for a parameter FastCGI cannot carry — call it before
 * taking a connection so the backend never sees the request.
 */
export function encodeRequestHead (requestId: number, role: number, keepConn: boolean, params: Params, endStdin: boolean): Buffer {
  const plainEnd = encodePlainPairs(params, RecordType.PARAMS, requestId)
  if (plainEnd < 0) scratch.release()
  const plan = plainEnd < 0 ? planPairRecordsUtf8(params) : null
  const total = 16 + (plan === null ? plainEnd : plan.size) + HEADER_LEN + (endStdin ? HEADER_LEN : 0)
  const buf = Buffer.allocUnsafe(total)
  let off = writeHeader(buf, 0, RecordType.BEGIN_REQUEST, requestId, 8, 0)
  // §5.1 FCGI_BeginRequestBody {roleB1, roleB0, flags, reserved[5]}
  buf[off] = (role >> 8) & 0xff
  buf[off + 1] = role & 0xff
  buf[off + 2] = keepConn ? KEEP_CONN : 0
  buf.fill(0, off + 3, off + 8)
  off += 8
  if (plan === null) {
    off += scratch.buf.copy(buf, off, 0, plainEnd)
    scratch.release()
  } else {
    off = plan.write(buf, off, RecordType.PARAMS, requestId)
  }
  off = writeHeader(buf, off, RecordType.PARAMS, requestId, 0, 0)
  if (endStdin) writeHeader(buf, off, RecordType.STDIN, requestId, 0, 0)
  return buf
}

/**
 * Rewrite the request id of every record in an encoded buffer (the head is encoded before a
 * connection — and so an id — is chosen).
 */
export function setRequestId (buf: Buffer, requestId: number): void {
  let off = 0
  while (off + HEADER_LEN <= buf.length) {
    buf[off + 2] = (requestId >> 8) & 0xff
    buf[off + 3] = requestId & 0xff
    off += HEADER_LEN + ((buf[off + 4] << 8) | buf[off + 5]) + buf[off + 6]
  }
}

/** FastCGI 1.0 §4.1: {FCGI_GET_VALUES, 0, {names with empty values}}. */
export function encodeGetValues (names: readonly string[]): Buffer {
  const params: Record<string, string> = Object.create(null)
  for (const n of names) params[n] = ''
  const plainEnd = encodePlainPairs(params, RecordType.GET_VALUES, 0)
  if (plainEnd >= 0) {
    const buf = Buffer.allocUnsafe(plainEnd)
    scratch.buf.copy(buf, 0, 0, plainEnd)
    scratch.release()
    return buf
  }
  scratch.release()
  const plan = planPairRecordsUtf8(params)
  const buf = Buffer.allocUnsafe(plan.size)
  plan.write(buf, 0, RecordType.GET_VALUES, 0)
  return buf
}

/**
 * Header + padding for one STDIN record carrying `contentLength` bytes of the request body.
 * The payload itself is written by the caller between the two (no copy of the body).
 */
export function stdinFraming (requestId: number, contentLength: number): { header: Buffer, padding: Buffer | null } {
  const pad = paddingFor(contentLength)
  const header = Buffer.allocUnsafe(HEADER_LEN)
  writeHeader(header, 0, RecordType.STDIN, requestId, contentLength, pad)
  return { header, padding: pad === 0 ? null : ZERO_PAD.subarray(0, pad) }
}

/**
 * FastCGI 1.0 §3.4: decode a name-value pair block (GET_VALUES_RESULT content).
 * Returns null when a length runs past the end of the block.
 */
export function decodePairs (buf: Buffer): Map<string, string> | null {
  const out = new Map<string, string>()
  let off = 0
  const readLen = (): number => {
    if (off >= buf.length) return -1
    if (buf[off] & 0x80) {
      if (off + 4 > buf.length) return -1
      const n = buf.readUInt32BE(off) & 0x7fffffff
      off += 4
      return n
    }
    return buf[off++]
  }
  while (off < buf.length) {
    const n = readLen()
    const v = readLen()
    if (n < 0 || v < 0 || off + n + v > buf.length) return null
    out.set(buf.toString('latin1', off, off + n), buf.toString('latin1', off + n, off + n + v))
    off += n + v
  }
  return out
}
