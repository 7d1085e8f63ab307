/**
 * The CGI response head (RFC 3875 §6), parsed incrementally over chunks: FastCGI STDOUT, SCGI and
 * CGI pipes all start their response with it. A state machine over buffered lines (ws
 * `receiver.js` habit): every complete line is checked as soon as it arrives, the first error
 * stops the parser for good.
 *
 * Policy (RELIABILITY §2.3, §2.4, §2.5):
 * - LF or CRLF line ends, mixed too (§7.2). Continuation lines are refused (§6.3).
 * - Names must be RFC 9110 tokens; values must not carry CTLs other than HTAB (a bare CR would
 *   split the response downstream) → ERR_BAD_RESPONSE_HEADER.
 * - `Status: NNN reason` (§6.3.3): 3 digits, 200–599, else ERR_BAD_RESPONSE. A 1xx is interim
 *   (RFC 9110 §15.2) and this head is the one final response: node:http would end a 1xx bodyless
 *   and keep the connection, so a pipelined request's answer would become this one's. Status,
 *   Location and Content-Type may appear once (§6.3).
 * - A 204 loses its Content-Length (RFC 9110 §8.6: MUST NOT be sent; node:http forwards it).
 * - Transfer-Encoding is REJECTED (CVE-2024-24795: a CGI-like backend must not frame the
 *   client response; forwarding or silently dropping it would desync the client).
 *   Content-Length must be one run of digits (`5, 5` is refused) and is reported so the adapter
 *   can frame the body by it.
 * - Connection, Keep-Alive, Proxy-Connection, Trailer, TE, Upgrade, fields named in Connection,
 *   and X-CGI-* (§6.3.5 MAY) are dropped: never forwarded.
 * - `Location: /path` with no Status and no Content-Type is a local redirect (§6.2.2); one with a
 *   `#fragment` is not (a client redirect: the fragment is the client's). The head
 *   still says 302 + Location, so a core with local redirects off sends it as a client redirect.
 *   An absolute-URI Location without Status → 302 (§6.2.3).
 * - NPH (§5): the first line is an HTTP status line, validated the same way. With
 *   `acceptStatusLine`, a head MAY start with one (SCGI: the response format is unspecified and
 *   servers send either; nginx accepts both).
 * - Over `maxHeadSize` bytes before the blank line → ERR_RESPONSE_HEAD_TOO_LARGE.
 */
import { ProxyError } from '../errors.js'

export interface CgiHead {
  readonly status: number
  readonly statusText?: string
  /** Flat raw [name, value, ...], CGI fields (Status) and hop-by-hop fields removed. */
  readonly headers: string[]
  /** Set for a §6.2.2 local redirect: the local path-query to re-dispatch as GET. */
  readonly localRedirect?: string
  /** A valid Content-Length from the backend, else null: the body ends at EOF. */
  readonly contentLength: number | null
}

export interface CgiResponseParserOptions {
  /** Largest head accepted, bytes, blank line included. */
  readonly maxHeadSize: number
  /** NPH script (RFC 3875 §5): the head starts with a mandatory HTTP status line. */
  readonly nph?: boolean
  /** The head may start with an HTTP status line instead of a Status field (SCGI). */
  readonly acceptStatusLine?: boolean
}

export type CgiPushResult =
  | { readonly done: false }
  | { readonly done: true, readonly head: CgiHead, readonly rest: Buffer }
  | { readonly error: ProxyError }

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/
const STATUS_FIELD = /^(\d{3})(?:[ \t]+(.*))?$/
/**
 * The script's own connection fields. `Upgrade` is not among them: the core's response filter
 * (core/headers.ts filterResponseHeaders) drops it on every status but 426, where RFC 9110 §15.5.22
 * requires it (a CGI head is never a 101).
 */
const DROPPED = new Set(['connection', 'keep-alive', 'proxy-connection', 'trailer', 'te'])
/** Fields that may appear once (§6.3), as bits of `seen`. */
const ONCE: ReadonlyMap<string, number> = new Map([['status', 1], ['location', 2], ['content-type', 4], ['content-length', 8]])
const NOT_YET = { done: false } as const
/** Shared and never written: a parser holds it while it has no bytes. */
const EMPTY = Buffer.alloc(0)

function bad (detail: string): ProxyError {
  return new ProxyError('ERR_BAD_RESPONSE', detail, { phase: 'head' })
}

function badHeader (detail: string): ProxyError {
  return new ProxyError('ERR_BAD_RESPONSE_HEADER', detail, { phase: 'head' })
}

function checkReason (text: string | undefined): string | undefined {
  if (text === undefined || text === '') return undefined
  if (BAD_VALUE.test(text)) throw bad('control character in reason phrase')
  return text
}

function parseStatusCode (digits: string): number {
  const status = Number(digits)
  if (status < 200 || status > 599) throw bad(`status ${digits} out of range 200-599 (a CGI head is the final response)`)
  return status
}

export class CgiResponseParser {
  private readonly opts: CgiResponseParserOptions
  private buf: Buffer = EMPTY
  /**
   * The head so far grows in a buffer of its own, doubled when full: a head arriving a byte at a
   * time (1-byte FastCGI STDOUT records) costs O(n) copying, not O(n²) (65 000 pushes took
   * ~220 ms with a concatenation per push). `buf` is a view of `store` once it owns the bytes.
   */
  private store: Buffer | null = null
  /** Start of the line being collected. */
  private lineStart = 0
  /** Where the LF search resumes (everything before it has been scanned). */
  private scanFrom = 0
  private failed: ProxyError | null = null
  private finished = false
  private lineNo = 0

  private status: number | null = null
  private statusText: string | undefined
  /** Flat [name, value, lower-cased name, ...]. */
  private readonly fields: string[] = []
  /** ONCE bits of the fields seen. */
  private seen = 0
  /** Field names listed in Connection, made when there is one. */
  private hop: Set<string> | null = null
  private location: string | undefined
  private contentLength: number | null = null

  constructor (opts: CgiResponseParserOptions) {
    this.opts = opts
  }

  /** Feed the next chunk. After `done` or `error`, the parser must not be fed again. */
  push (chunk: Buffer): CgiPushResult {
    if (this.failed !== null) return { error: this.failed }
    if (this.finished) return { error: new ProxyError('ERR_INTERNAL', 'CgiResponseParser fed after the head was complete') }
    this.append(chunk)
    try {
      for (;;) {
        const lf = this.buf.indexOf(0x0a, this.scanFrom)
        if (lf === -1) {
          this.scanFrom = this.buf.length
          if (this.buf.length > this.opts.maxHeadSize) throw new ProxyError('ERR_RESPONSE_HEAD_TOO_LARGE', `over ${this.opts.maxHeadSize} bytes`, { phase: 'head' })
          return NOT_YET
        }
        if (lf + 1 > this.opts.maxHeadSize) throw new ProxyError('ERR_RESPONSE_HEAD_TOO_LARGE', `over ${this.opts.maxHeadSize} bytes`, { phase: 'head' })
        const end = lf > this.lineStart && this.buf[lf - 1] === 0x0d ? lf - 1 : lf
        const line = this.buf.toString('latin1', this.lineStart, end)
        this.lineStart = this.scanFrom = lf + 1
        if (line === '') {
          const head = this.finish()
          this.finished = true
          const rest = this.buf.subarray(lf + 1)
          this.buf = EMPTY
          this.store = null
          return { done: true, head, rest }
        }
        this.line(line)
      }
    } catch (err) {
      this.failed = err instanceof ProxyError ? err : new ProxyError('ERR_INTERNAL', String(err), { cause: err, phase: 'head' })
      return { error: this.failed }
    }
  }

  private append (chunk: Buffer): void {
    const have = this.buf.length
    if (have === 0) { this.buf = chunk; return }
    const need = have + chunk.length
    let store = this.store
    if (store === null || need > store.length || this.buf.buffer !== store.buffer || this.buf.byteOffset !== store.byteOffset) {
      store = Buffer.allocUnsafeSlow(Math.max(need, 2 * have, 1024))
      this.buf.copy(store, 0)
      this.store = store
    }
    chunk.copy(store, have)
    this.buf = store.subarray(0, need)
  }

  /** The stream ended before the head was complete: the error to report (adapters may remap it). */
  end (): ProxyError {
    if (this.failed !== null) return this.failed
    if (this.buf.length === 0 && this.lineNo === 0) {
      return new ProxyError('ERR_BACKEND_CLOSED', 'no response at all', { phase: 'head' })
    }
    return bad('end of output before the end of the response head')
  }

  private line (line: string): void {
    const first = this.lineNo++ === 0
    if (first && (this.opts.nph === true || (this.opts.acceptStatusLine === true && line.startsWith('HTTP/')))) {
      const m = STATUS_LINE.exec(line)
      if (m === null) throw bad('malformed HTTP status line')
      this.status = parseStatusCode(m[1])
      this.statusText = checkReason(m[2])
      this.seen |= 1
      return
    }
    if (line[0] === ' ' || line[0] === '\t') throw badHeader('continuation line (RFC 3875 §6.3)')
    const colon = line.indexOf(':')
    if (colon <= 0) throw badHeader('line without a field name and colon')
    const name = line.slice(0, colon)
    if (!TOKEN.test(name)) throw badHeader('field name is not a token')
    // Without the SP and HTAB around it (a loop: a regex replace cost ~6 % of parsing a head).
    let from = colon + 1
    let to = line.length
    while (from < to && (line.charCodeAt(from) === 0x20 || line.charCodeAt(from) === 0x09)) from++
    while (to > from && (line.charCodeAt(to - 1) === 0x20 || line.charCodeAt(to - 1) === 0x09)) to--
    const value = line.slice(from, to)
    if (BAD_VALUE.test(value)) throw badHeader(`control character in the value of ${name}`)
    const lname = name.toLowerCase()
    const once = ONCE.get(lname)
    if (once !== undefined) {
      if ((this.seen & once) !== 0) throw bad(`${name} given more than once`)
      this.seen |= once
    }
    switch (lname) {
      case 'status': {
        const m = STATUS_FIELD.exec(value)
        if (m === null) throw bad(`malformed Status "${value}"`)
        this.status = parseStatusCode(m[1])
        this.statusText = checkReason(m[2])
        return
      }
      case 'transfer-encoding':
        throw badHeader('Transfer-Encoding from a CGI-like backend (CVE-2024-24795)')
      case 'content-length':
        if (!/^\d{1,15}$/.test(value)) throw badHeader(`invalid Content-Length "${value}"`)
        this.contentLength = Number(value)
        break
      case 'location':
        this.location = value
        break
      case 'connection': {
        const hop = this.hop ??= new Set()
        for (const t of value.split(',')) hop.add(t.trim().toLowerCase())
        return
      }
    }
    if (DROPPED.has(lname) || lname.startsWith('x-cgi-')) return
    this.fields.push(name, value, lname)
  }

  private finish (): CgiHead {
    if (this.lineNo === 0) throw bad('empty response head (RFC 3875 §6.3: at least one field)')
    const headers: string[] = []
    let keptLength = this.contentLength
    const status = this.status ?? (this.location !== undefined ? 302 : 200)
    const fields = this.fields
    const hop = this.hop
    for (let i = 0; i < fields.length; i += 3) {
      const lname = fields[i + 2]
      if ((hop?.has(lname) === true && !(status === 426 && lname === 'upgrade')) || (status === 204 && lname === 'content-length')) {
        if (lname === 'content-length') keptLength = null
        continue
      }
      headers.push(fields[i], fields[i + 1])
    }
    const statusGiven = this.status !== null
    // httpd and lighttpd key a local redirect on "no Status, Location is a local path" only: php-cgi
    // always adds Content-Type, and RFC 3875 §6.2.2's "no other fields" would make PHP's
    // `header('Location: /x', true, 200)` unusable. Routes opt in (`localRedirects`), so this
    // leniency never reaches a route that did not ask for it.
    // A fragment is the client's (§6.2.2's local-pathquery has none, and the server never sees
    // one): `Location: /x#y` goes to the client as a 302, fragment and all, not looked up as `/x#y`.
    const local = !statusGiven && this.location !== undefined && this.location.startsWith('/') &&
      !this.location.startsWith('//') && !this.location.includes('#')
    const head: { -readonly [K in keyof CgiHead]: CgiHead[K] } = { status, headers, contentLength: keptLength }
    if (this.statusText !== undefined) head.statusText = this.statusText
    if (local) head.localRedirect = this.location
    return head
  }
}
