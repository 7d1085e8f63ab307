/**
 * Access log from the proxy's `request:end` events: Apache/nginx "combined" plus the upstream
 * fields nginx operators add by hand (`$upstream_addr $upstream_status $request_time
 * $upstream_header_time`), or one JSON object per line.
 *
 *   127.0.0.1 - - [10/Oct/2025:13:55:36 +0000] "GET /api/x?y=1 HTTP/1.1" 200 2326 "-" "curl/8.5" route=api upstream=127.0.0.1:9000 upstream_status=200 rt=0.004 uht=0.003 code=-
 *
 * Times are UTC. Referer, user agent and HTTP version come from the event (node's own strings of
 * the request); a request without them (a head node's parser refused) gets `-` and `HTTP/1.1`.
 * Values are escaped like nginx's `escape=default`: `"`, `\` and bytes outside printable ASCII
 * become `\xHH`, one per byte the client sent (node decodes a head one char per byte), so a
 * crafted URL, referer or user agent cannot forge a log line; in the unquoted `route=` and
 * `upstream=` fields a space is `\x20` too. JSON writes those three as the UTF-8
 * characters the client's bytes are, and a byte outside a well-formed sequence (and `\`) as the
 * text `\xHH`.
 *
 * The log never blocks the proxy: when the stream is more than `maxBuffered` bytes behind, lines
 * are dropped and counted (`dropped`) instead of queued. Nor does it bring the proxy down: a stream
 * that fails (ENOSPC on a full disk, EACCES, a log directory that does not exist) emits 'error',
 * which with no listener is an uncaught exception that ends the process; the log listens, keeps
 * the first error in `error`, and counts every later line as dropped.
 */
import { constants, createWriteStream, open as openFd } from 'node:fs'
import { access } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Writable } from 'node:stream'
import { promisify } from 'node:util'
import { ConfigError, ERRORS } from '../core/errors.js'
import type { ProxyEvents, RequestEndEvent } from '../core/events.js'

export type AccessLogFormat = 'combined' | 'json'

export interface AccessLogOptions {
  format?: AccessLogFormat
  /** Where lines go (a file stream, process.stdout, ...). The log never ends it. */
  stream: Writable
  /** Bytes queued in `stream` beyond which lines are dropped (default 1 MiB). */
  maxBuffered?: number
  /** Clock for the timestamp (tests). */
  now?: () => number
}

export interface AccessLog {
  /** Lines dropped because the stream was too far behind. */
  readonly dropped: number
  readonly written: number
  /** The stream's first 'error' (ENOSPC, EACCES, ENOENT...), null while it works; lines after it are dropped. */
  readonly error: Error | null
  /** Stop listening (the stream stays open; it belongs to the caller). */
  close (): void
}

type EndEvent = RequestEndEvent

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']

export function createAccessLog (events: ProxyEvents, opts: AccessLogOptions): AccessLog {
  const format = opts.format ?? 'combined'
  const maxBuffered = opts.maxBuffered ?? 1024 * 1024
  const now = opts.now ?? Date.now
  let dropped = 0
  let written = 0
  let error: Error | null = null
  // Without a listener a write error (a full disk) is an uncaught exception: the whole proxy exits.
  const onError = (err: Error): void => { error ??= err }
  opts.stream.on('error', onError)
  const onEnd = (e: EndEvent): void => {
    if (error !== null || opts.stream.writableLength > maxBuffered || opts.stream.destroyed) { dropped++; return }
    const line = format === 'json' ? jsonLine(e, now()) : combinedLine(e, now())
    opts.stream.write(line + '\n')
    written++
  }
  events.on('request:end', onEnd)
  return {
    get dropped () { return dropped },
    get written () { return written },
    get error () { return error },
    close () {
      events.off('request:end', onEnd)
      opts.stream.off('error', onError)
    },
  }
}

/** `accessLog` of the operator file: a file path or `stdout`, and the line format. */
export interface AccessLogTarget { path: string, format?: AccessLogFormat | undefined }

/** A target opened and not yet written to (AccessLogFile.use switches to it). */
export interface OpenedAccessLog {
  readonly path: string
  readonly format: AccessLogFormat
  readonly stream: Writable
  /** The stream's first 'error' (ENOSPC, EACCES, EIO...): lines after it are dropped until the next reopen. */
  error: Error | null
  /** Close it unused (a start or reload that failed after opening it). */
  discard (): void
}

const openAsync = promisify(openFd)

/**
 * Open `target` for appending, creating the file (mode 0640, less the umask) but never its
 * directory. A file that cannot be opened is an `ERR_ACCESS_LOG` config issue at `/accessLog/path`:
 * serve does not start and a reload is refused, as nginx does with an `access_log` it cannot open.
 * `stdout` is node's own process.stdout (synchronous for files and pipes on Linux).
 */
export async function openAccessLogTarget (target: AccessLogTarget): Promise<OpenedAccessLog> {
  const format = target.format ?? 'combined'
  if (target.path === 'stdout') {
    // A closed stdout (EPIPE) must not end the proxy either; the listener goes with the target.
    const onError = (err: Error): void => { out.error ??= err }
    const out: OpenedAccessLog = { path: 'stdout', format, stream: process.stdout, error: null, discard () { process.stdout.off('error', onError) } }
    process.stdout.on('error', onError)
    return out
  }
  let fd: number
  try {
    fd = await openAsync(target.path, 'a', 0o640)
  } catch (err) {
    throw new ConfigError([{ path: '/accessLog/path', message: openProblem(target.path, err as NodeJS.ErrnoException), found: target.path }])
  }
  const stream = createWriteStream('', { fd, autoClose: true })
  const opened: OpenedAccessLog = {
    path: target.path,
    format,
    stream,
    error: null,
    discard () { stream.destroy() },
  }
  // Without a listener a write error (a full disk) is an uncaught exception: the whole proxy exits.
  stream.on('error', (err: Error) => { opened.error ??= err })
  return opened
}

function openProblem (path: string, e: NodeJS.ErrnoException): string {
  const why = e.code === 'ENOENT'
    ? `its directory ${dirname(path)} does not exist (proxycore creates the file, not the directory)`
    : e.code === 'EACCES'
      ? 'permission denied (the user proxycore runs as needs write access to the file, or to its directory to create it)'
      : e.code === 'EISDIR' ? 'it is a directory (name a file in it)' : (e.code ?? e.message)
  return `ERR_ACCESS_LOG: cannot open the access log ${path}: ${why}`
}

/**
 * What `proxycore check` says of an access log path (absolute), without creating anything: null
 * when this user could open it (the file is writable, or its directory is to create it).
 */
export async function accessLogProblem (path: string): Promise<string | null> {
  if (path === 'stdout') return null
  try {
    await access(path, constants.W_OK)
    return null
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return openProblem(path, err as NodeJS.ErrnoException)
  }
  try {
    await access(dirname(path), constants.W_OK)
    return null
  } catch (err) {
    return openProblem(path, err as NodeJS.ErrnoException)
  }
}

export interface AccessLogFileOptions {
  /** Bytes queued in the stream beyond which lines are dropped (default 1 MiB). */
  maxBuffered?: number
  now?: () => number
  /** Told once per opened target of its first write error (ENOSPC...), with the path. */
  onError?: (err: Error, path: string) => void
}

/**
 * The operator's access log (`accessLog` in the file): one target at a time, written by every
 * proxy generation attached to it (the current one and those still draining after a reload), and
 * switched by `use` (a reload) or `reopen` (SIGUSR1, after logrotate renamed the file). Lines go to
 * the target in use when their request ends, so each lands in exactly one file: the old stream is
 * ended, not dropped, so the lines it still buffers reach the renamed file before its fd closes.
 */
export class AccessLogFile {
  private cur: OpenedAccessLog | null = null
  private readonly told = new WeakSet<OpenedAccessLog>()
  private readonly attached = new WeakSet<ProxyEvents>()
  private readonly maxBuffered: number
  private readonly now: () => number
  private droppedLines = 0
  private writtenLines = 0

  constructor (private readonly opts: AccessLogFileOptions = {}) {
    this.maxBuffered = opts.maxBuffered ?? 1024 * 1024
    this.now = opts.now ?? Date.now
  }

  get path (): string | null { return this.cur?.path ?? null }
  get dropped (): number { return this.droppedLines }
  get written (): number { return this.writtenLines }

  private readonly onEnd = (e: EndEvent): void => {
    const t = this.cur
    if (t === null) return
    if (t.error !== null || t.stream.destroyed || t.stream.writableLength > this.maxBuffered) {
      this.droppedLines++
      if (t.error !== null && !this.told.has(t)) { this.told.add(t); this.opts.onError?.(t.error, t.path) }
      return
    }
    t.stream.write((t.format === 'json' ? jsonLine(e, this.now()) : combinedLine(e, this.now())) + '\n')
    this.writtenLines++
  }

  /**
   * Write to `next` from now on (null: no access log) and log the requests of `events` (a proxy
   * generation; none when `next` is null). The previous target is ended; resolves once it is closed.
   */
  async use (next: OpenedAccessLog | null, events?: ProxyEvents): Promise<void> {
    const old = this.cur
    this.cur = next
    if (next !== null && events !== undefined && !this.attached.has(events)) {
      this.attached.add(events)
      events.on('request:end', this.onEnd)
    }
    if (old !== null && old !== next) await finish(old)
  }

  /**
   * SIGUSR1: open the path in use again and switch to it (logrotate renamed the file). When it
   * cannot be opened, the old file stays in use (nginx does the same) and this throws the issue.
   * Resolves to the path reopened, null when there is no access log or it is stdout.
   */
  async reopen (): Promise<string | null> {
    const was = this.cur
    if (was === null || was.path === 'stdout') return null
    const next = await openAccessLogTarget({ path: was.path, format: was.format })
    // A reload switched targets meanwhile: its file is the newer one.
    if (this.cur !== was) { next.discard(); return null }
    await this.use(next)
    return next.path
  }

  /** No more lines; the target is ended and closed (every buffered line written). */
  async close (): Promise<void> {
    await this.use(null)
  }
}

/** End a target: its buffered lines are written, then its fd closes. stdout is left open. */
async function finish (t: OpenedAccessLog): Promise<void> {
  if (t.stream === process.stdout) { t.discard(); return }
  if (t.stream.destroyed) return
  await new Promise<void>((resolve) => {
    t.stream.once('close', resolve)
    t.stream.end()
  })
}

/**
 * The status the client got. The core reports 0 when it failed the exchange before a response
 * head was chosen; the error table gives the status that error page carries.
 */
export function clientStatus (e: RequestEndEvent): number {
  if (e.status !== 0 || e.error === null) return e.status
  return ERRORS[e.error]?.status ?? 500
}

/** The backend's status when one answered; null when the proxy made the response itself. */
function upstreamStatus (e: EndEvent): number | null {
  if (typeof e.upstreamStatus === 'number') return e.upstreamStatus
  return e.backend !== '' && e.error === null && e.headMs >= 0 && e.status !== 0 ? e.status : null
}

const seconds = (ms: number): string => (ms < 0 ? '-' : (ms / 1000).toFixed(3))

export function combinedLine (e: EndEvent, at: number): string {
  const up = upstreamStatus(e)
  // No method: node's parser refused the request line or head (nginx writes "-" for these too).
  const request = e.method === '' ? '-' : `${esc(e.method)} ${esc(e.url)} ${esc(e.httpVersion !== undefined ? `HTTP/${e.httpVersion}` : 'HTTP/1.1')}`
  return `${esc(e.client || '-')} - - [${clf(at)}] "${request}" ` +
    `${clientStatus(e)} ${e.bytesOut > 0 ? e.bytesOut : '-'} "${esc(e.referer ?? '-')}" "${esc(e.userAgent ?? '-')}" ` +
    `route=${field(e.route || '-')} upstream=${field(e.backend || '-')} upstream_status=${up ?? '-'} ` +
    `rt=${seconds(e.totalMs)} uht=${seconds(e.headMs)} code=${e.error ?? '-'}`
}

/**
 * One JSON object. The client's strings (URL, Referer, User-Agent) are node's one char per byte:
 * they are turned back into the bytes the client sent and written as the characters those bytes
 * are in UTF-8; a byte that is not part of a valid UTF-8 sequence, and a backslash, are written as
 * the text `\xHH` (as the combined format writes them). Control characters, DEL, C1 controls and
 * U+2028/U+2029 are `\uXXXX` escapes, so no value can break the line for a reader that splits on them.
 */
export function jsonLine (e: EndEvent, at: number): string {
  return JSON.stringify({
    time: new Date(at).toISOString(),
    client: e.client,
    method: e.method,
    url: clientText(e.url),
    ...(e.httpVersion !== undefined ? { httpVersion: e.httpVersion } : {}),
    status: clientStatus(e),
    bytes: e.bytesOut,
    ...(e.referer !== undefined ? { referer: clientText(e.referer) } : {}),
    ...(e.userAgent !== undefined ? { userAgent: clientText(e.userAgent) } : {}),
    route: e.route,
    upstream: e.backend === '' ? null : e.backend,
    upstreamStatus: upstreamStatus(e),
    headMs: e.headMs < 0 ? null : e.headMs,
    totalMs: e.totalMs,
    error: e.error,
    id: e.id,
  }).replace(LINE_BREAKERS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** Left raw by JSON.stringify, yet line ends or terminal controls to some readers (NEL U+0085 to Python's splitlines). */
const LINE_BREAKERS = /[\u007f-\u009f\u2028\u2029]/gu

/**
 * A string node decoded one char per byte, as the characters the bytes are in UTF-8; bytes that are
 * not part of a well-formed sequence (RFC 3629) become the text `\xHH`, and so does a backslash
 * (`\x5C`, as combined writes it): every `\` in the value then starts a `\xHH`, so the text `\xFF`
 * a client sent and the byte FF read back differently and the client's bytes can be recovered
 * (nginx's escape=json writes the byte raw, an invalid UTF-8 line; Apache writes `\` as `\\`).
 * A string with a char above U+00FF was not decoded that way (an embedder's own event) and is
 * returned as it is.
 */
function clientText (s: string): string {
  if (!/[\x80-\xff\\]/u.test(s) || /[^\x00-\xff]/u.test(s)) return s
  const b = Buffer.from(s, 'latin1')
  let out = ''
  let from = 0
  for (let i = 0; i < b.length;) {
    const n = b[i] === 0x5c ? 0 : utf8Length(b, i)
    if (n > 0) { i += n; continue }
    out += b.toString('utf8', from, i) + hex(b[i])
    from = ++i
  }
  return out + b.toString('utf8', from)
}

/** Length of the well-formed UTF-8 sequence at `i` (RFC 3629 §4, Unicode Table 3-7), 0 when there is none. */
function utf8Length (b: Buffer, i: number): number {
  const b0 = b[i]
  if (b0 < 0x80) return 1
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean => i + k < b.length && b[i + k] >= lo && b[i + k] <= hi
  if (b0 >= 0xc2 && b0 <= 0xdf) return cont(1) ? 2 : 0
  if (b0 >= 0xe0 && b0 <= 0xef) {
    // E0: no overlong forms; ED: no UTF-16 surrogates.
    const ok = b0 === 0xe0 ? cont(1, 0xa0) : b0 === 0xed ? cont(1, 0x80, 0x9f) : cont(1)
    return ok && cont(2) ? 3 : 0
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    // F0: no overlong forms; F4: nothing above U+10FFFF.
    const ok = b0 === 0xf0 ? cont(1, 0x90) : b0 === 0xf4 ? cont(1, 0x80, 0x8f) : cont(1)
    return ok && cont(2) && cont(3) ? 4 : 0
  }
  return 0
}

/** Common Log Format time: `10/Oct/2025:13:55:36 +0000`. */
function clf (ms: number): string {
  const d = new Date(ms)
  const p = (n: number): string => String(n).padStart(2, '0')
  return `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`
}

function esc (s: string): string {
  return s.replace(/[^\x20-\x7e]|["\\]/gu, (c) => {
    // node decodes a request head as latin1: a char up to U+00FF is the byte the client sent.
    if (c.length === 1 && c.charCodeAt(0) <= 0xff) return hex(c.charCodeAt(0))
    let out = ''
    for (const b of Buffer.from(c, 'utf8')) out += hex(b)
    return out
  })
}

/**
 * An unquoted `key=value` field (route, upstream): as `esc`, and a space too (`\x20`), or a route
 * named `php app` would end its field there and its rest read as fields of their own
 * (`name: "a upstream=10.0.0.1:80"` forged an upstream for a reader that splits on spaces).
 */
function field (s: string): string {
  return esc(s).replaceAll(' ', '\\x20')
}

const hex = (b: number): string => `\\x${b.toString(16).padStart(2, '0').toUpperCase()}`
