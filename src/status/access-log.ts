/**
 * Access log from the proxy's `request:end` events: Apache/nginx "combined" plus the upstream
 * fields nginx operators add by hand (`$upstream_addr $upstream_status $request_time
 * $upstream_header_time`), or one JSON object per line.
 *
 *   127.0.0.1 - - [10/Oct/2025:13:55:36 +0000] "GET /api/x?y=1 HTTP/1.1" 200 2326 "-" "curl/8.5" route=api upstream=127.0.0.1:9000 upstream_status=200 rt=0.004 uht=0.003 code=-
 *
 * Times are UTC. Fields the events do not carry (referer, user agent, HTTP version) are read when
 * the core provides them and written as `-` (version: `HTTP/1.1`, the only one node:http serves
 * besides 1.0) otherwise. Values are escaped like nginx's `escape=default`: `"`, `\` and bytes
 * outside printable ASCII become `\xHH`, so a crafted URL cannot forge a log line.
 *
 * The log never blocks the proxy: when the stream is more than `maxBuffered` bytes behind, lines
 * are dropped and counted (`dropped`) instead of queued. Nor does it bring the proxy down: a stream
 * that fails (ENOSPC on a full disk, EACCES, a log directory that does not exist) emits 'error',
 * which with no listener is an uncaught exception that ends the process; the log listens, keeps
 * the first error in `error`, and counts every later line as dropped.
 */
import type { Writable } from 'node:stream'
import { ERRORS } from '../core/errors.js'
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

/** Request fields a core version may add to `request:end`; used when present. */
type EndEvent = RequestEndEvent & { httpVersion?: string, referer?: string, userAgent?: string, upstreamStatus?: number }

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
    `route=${esc(e.route || '-')} upstream=${esc(e.backend || '-')} upstream_status=${up ?? '-'} ` +
    `rt=${seconds(e.totalMs)} uht=${seconds(e.headMs)} code=${e.error ?? '-'}`
}

export function jsonLine (e: EndEvent, at: number): string {
  return JSON.stringify({
    time: new Date(at).toISOString(),
    client: e.client,
    method: e.method,
    url: e.url,
    ...(e.httpVersion !== undefined ? { httpVersion: e.httpVersion } : {}),
    status: clientStatus(e),
    bytes: e.bytesOut,
    ...(e.referer !== undefined ? { referer: e.referer } : {}),
    ...(e.userAgent !== undefined ? { userAgent: e.userAgent } : {}),
    route: e.route,
    upstream: e.backend === '' ? null : e.backend,
    upstreamStatus: upstreamStatus(e),
    headMs: e.headMs < 0 ? null : e.headMs,
    totalMs: e.totalMs,
    error: e.error,
    id: e.id,
  })
}

/** Common Log Format time: `10/Oct/2025:13:55:36 +0000`. */
function clf (ms: number): string {
  const d = new Date(ms)
  const p = (n: number): string => String(n).padStart(2, '0')
  return `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`
}

function esc (s: string): string {
  return s.replace(/[^\x20-\x7e]|["\\]/gu, (c) => {
    let out = ''
    for (const b of Buffer.from(c, 'utf8')) out += `\\x${b.toString(16).padStart(2, '0').toUpperCase()}`
    return out
  })
}
