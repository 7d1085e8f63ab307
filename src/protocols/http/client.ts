/**
 * HTTP/1.1 backend client on undici's Pool: keep-alive connection reuse, streaming both ways with
 * backpressure, llhttp's strict response parsing. undici's own timeouts are off — the core owns
 * timeouts — and connections are opened through the core's connector so every protocol shares one
 * connect-timeout and one error mapping.
 *
 * The legacy handler interface (onConnect/onHeaders/onData/onComplete) is undici's direct path:
 * raw header buffers, no header object built per response.
 */
import { createRequire } from 'node:module'
import type { Socket } from 'node:net'
import type { Duplex, Readable } from 'node:stream'
import type { Pool, buildConnector } from 'undici'
import { isAborted, unwatchAbort, watchAbort } from '../../core/abort.js'
import { ProxyError, type ErrorCode, type ErrorPhase } from '../../core/errors.js'
import { filterTrailers, reasonPhrase, sameName } from '../../core/headers.js'
import { isIdempotent } from '../../core/idempotent.js'
import type { BackendClient, ClientContext, Endpoint, Exchange, FlowControl, RawHeaders, ResponseHandler, UpgradeHandler } from '../../core/types.js'
import { lazy } from '../../lazy.js'
import type { HttpOptions } from './options.js'

/**
 * undici's Pool module alone, not the package entry: the entry also loads fetch, WebSocket, the
 * cache and mock agents, EventSource… (measured: +19.4 MiB RSS and +6.2 MiB of V8 heap, against
 * +10.8 / +2.0 for the Pool). undici has no `exports` map, so the path resolves; it is the very
 * module the entry exports as `Pool` (same CommonJS cache entry, checked by a test). Should a
 * future undici move it, the entry is the fallback.
 */
export const UNDICI_POOL_MODULE = 'undici/lib/dispatcher/pool.js'
const poolModule = lazy<typeof Pool>(UNDICI_POOL_MODULE)
const undiciEntry = lazy<typeof import('undici')>('undici')
export function undiciPool (): typeof Pool {
  try {
    return poolModule()
  } catch {
    return undiciEntry().Pool
  }
}

/**
 * undici's response parser is llhttp compiled to WebAssembly, and undici compiles it on its first
 * connection. Left at V8's defaults, that compile is lazy and cheap, and the parser's hot function
 * is compiled again by the optimizing compiler in the background once the load has started: that
 * compile needs ~30 MiB of scratch memory for a few tens of milliseconds, which glibc keeps
 * resident afterwards because the requests in flight allocated above it (docs/design/
 * architecture.md "What RSS is made of"). `proxycore serve` therefore turns off the baseline
 * compiler and lazy compilation (`--no-liftoff --no-wasm-lazy-compilation`), and the first HTTP
 * client compiles the module here, while the proxy is being created: ~110 ms once, its scratch
 * memory handed back before the first request. undici's own compile of the same bytes is then a
 * hit in V8's per-process module cache. Without those flags this costs ~3 ms and changes nothing.
 * The file choice mirrors undici's (SIMD unless UNDICI_NO_WASM_SIMD=1 or an old Node on ppc64);
 * if undici moves the files, nothing is compiled early and undici compiles as before.
 */
let parserModule: object | null = null
/** The one WebAssembly call needed here; the project's lib (ES2022, no DOM) does not declare it. */
const Wasm = (globalThis as unknown as { WebAssembly: { Module: new (bytes: Uint8Array) => object } }).WebAssembly
const UNDICI_PARSER_MODULES = ['undici/lib/llhttp/llhttp_simd-wasm.js', 'undici/lib/llhttp/llhttp-wasm.js'] as const
const requireUndici = createRequire(import.meta.url)
export function compileParserEarly (): object | null {
  if (parserModule !== null) return parserModule
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number)
  let simd = !(process.arch === 'ppc64' && (major < 24 || (major === 24 && minor < 12)))
  if (process.env.UNDICI_NO_WASM_SIMD === '1') simd = false
  else if (process.env.UNDICI_NO_WASM_SIMD === '0') simd = true
  for (const file of simd ? UNDICI_PARSER_MODULES : UNDICI_PARSER_MODULES.slice(1)) {
    try {
      parserModule = new Wasm.Module(requireUndici(file) as Uint8Array)
      return parserModule
    } catch {}
  }
  return null
}

/**
 * undici ends a response framed by the close of the connection (no Content-Length and not chunked,
 * or `Connection: close`) as complete when the socket fails with ECONNRESET after the status line:
 * a macOS workaround (client-h1.js onHttpSocketError, "we get an ECONNRESET even if there is a full
 * body"). A reset cuts such a body as it cuts any other; it can never be told complete. So the
 * connector's first 'error' listener renames the code before undici sees it: undici then reports
 * the error, and mapError maps it to ERR_BACKEND_RESET (the client connection is cut, the event
 * records the error), as nginx does. A clean close (FIN) still ends such a body.
 */
const HIDDEN_RESET = 'PROXYCORE_ECONNRESET'
function hideReset (err: NodeJS.ErrnoException): void {
  if (err.code === 'ECONNRESET') err.code = HIDDEN_RESET
}

/**
 * A backend that answers before it has read the whole request body and closes (a 413 to a large
 * upload, an early 401) resets the connection when the rest of the body reaches it. The proxy's
 * next body write then fails (EPIPE, ECONNRESET) and Node destroys the socket at once — before the
 * answer already sitting in the receive buffer is read: undici would fail the exchange with 502
 * where the client should get the backend's 413 (measured: a 4 MB upload to a node:http backend
 * answering `413` + `Connection: close`, 502 every time). So a failed write is held until the read
 * side has said its last word: its end (FIN), a read error, or the close. Whatever the backend
 * sent first is parsed and delivered; a backend that sent nothing still fails with the write's
 * error (ERR_BACKEND_RESET), as before. Only the write callback waits: nothing more is written
 * meanwhile (undici waits for the callback), and the socket is destroyed right after.
 *
 * `_writeGeneric` is net.Socket's one write path (`_write` and `_writev` call it; Node >= 8), set
 * here on the instance; an upgraded socket gets the prototype's back (`releaseWriteErrors`).
 */
type WriteGeneric = (writev: boolean, data: unknown, encoding: string, cb: (err?: Error | null) => void) => unknown
interface HeldSocket extends Socket { _writeGeneric: WriteGeneric }
function holdWriteErrors (socket: Socket): void {
  const s = socket as HeldSocket
  const write = s._writeGeneric
  if (typeof write !== 'function') return
  s._writeGeneric = function (writev, data, encoding, cb) {
    return write.call(this, writev, data, encoding, (err) => {
      const code = (err as NodeJS.ErrnoException | null | undefined)?.code
      if (code !== 'EPIPE' && code !== 'ECONNRESET' && code !== HIDDEN_RESET) { cb(err); return }
      if (s.readableEnded || s.destroyed) { cb(err); return }
      let held = true
      const release = (): void => {
        if (!held) return
        held = false
        s.off('end', release).off('close', release).off('error', release)
        cb(err)
      }
      // First in line: the write's error wins over undici's 'other side closed' at a FIN without
      // a response, so a reset still reads ERR_BACKEND_RESET.
      s.prependListener('end', release).prependListener('close', release).prependListener('error', release)
    })
  }
}
function releaseWriteErrors (socket: Duplex): void {
  delete (socket as Partial<HeldSocket>)._writeGeneric
}

/**
 * A response that ends with the connection (`Connection: close`, or framed by the close) whose last
 * body bytes found the client's queue full: the handler returned false, undici paused its parser,
 * and then the backend's FIN came. undici 7's 'end' listener calls `parser.finish()`, which asserts
 * that the parser is not paused: an AssertionError thrown from a socket event, uncaught, and the
 * whole proxy process dies (nodejs/undici#5360; measured: a client pipelining two GETs, the second
 * answered `Connection: close` by a node:http backend while queued behind the first). 'end' comes
 * only once every byte read has gone through the parser, so nothing is left to hold back: this
 * listener, first in line, resumes the parser (undici's own resume, which flushes it: a
 * Content-Length or chunked body completes there), and undici's listener then finishes a body
 * framed by the close as it would have. The response's bytes are already queued for the client.
 */
function resumeAtEnd (this: Socket): void {
  let kParser: symbol | undefined
  try { kParser = undiciSymbols().kParser } catch { return }
  if (typeof kParser !== 'symbol') return
  const parser = (this as unknown as Record<symbol, { paused?: boolean, resume?: () => void } | null | undefined>)[kParser]
  if (parser?.paused === true && typeof parser.resume === 'function') parser.resume()
}

/**
 * A TCP reset that libuv reported as an end of stream. When a reset arrives while response bytes
 * still wait unread (a slow client: undici's parser paused, the socket's reading stopped), libuv
 * reads them and, its last read short and the poll that woke it saying HUP, reports an EOF without
 * the read that would have returned ECONNRESET (`uv__stream_io`, the POLLHUP short-cut). A body
 * framed by the close (HTTP/1.0, or `Connection: close` without Content-Length or chunked) would
 * then end "cleanly" with its tail lost (the backend's unsent bytes die with the RST); a framed body
 * is cut by llhttp anyway (ERR_BACKEND_CLOSED). The socket's state tells a FIN from a reset: after
 * a FIN it is CLOSE_WAIT and getpeername(2) works; after a reset it is CLOSED and getpeername(2)
 * fails (ENOTCONN). Node has no getsockopt (SO_ERROR), so the handle's getpeername is asked
 * directly (`socket.remoteAddress` caches it), as the SCGI client does.
 *
 * The 'end' listener of TCP backends' sockets, first in line (before undici's): resumeAtEnd, then,
 * only where undici's listener would end a response by the close (a status seen, no keep-alive),
 * the one syscall. A reset makes the parser's `finish()` return a reset error, for that parser
 * instance only: undici's listener destroys the socket with it instead of completing the response,
 * undici reports it and mapError maps it to ERR_BACKEND_RESET (the client connection is cut, the
 * event records the error). An idle keep-alive connection's end (no status) asks nothing. Not while
 * the request is still being written (undici's kWriting) or waits in the socket's buffer: a backend
 * that answered early and closed is reset by our next write, after its FIN (its answer stays
 * delivered). Not for unix sockets (a closed peer stays their peer): resumeAtEnd alone.
 */
function endOfTcpStream (this: Socket): void {
  resumeAtEnd.call(this)
  let symbols: { kParser?: symbol, kWriting?: symbol }
  try { symbols = undiciSymbols() } catch { return }
  const { kParser, kWriting } = symbols
  if (typeof kParser !== 'symbol' || typeof kWriting !== 'symbol') return
  const s = this as unknown as Record<symbol, unknown> & { _handle?: { getpeername?: (out: object) => number } | null }
  const parser = s[kParser] as { statusCode?: number, shouldKeepAlive?: boolean, finish?: () => Error | null } | null | undefined
  if (parser == null || typeof parser.statusCode !== 'number' || parser.statusCode === 0 || parser.shouldKeepAlive !== false || typeof parser.finish !== 'function') return
  if (s[kWriting] === true || this.writableLength > 0) return
  const handle = s._handle
  if (typeof handle?.getpeername !== 'function' || handle.getpeername(PEER_SCRATCH) === 0) return
  const err: NodeJS.ErrnoException = Object.assign(new Error('read ECONNRESET (reported as an end of stream)'), { code: HIDDEN_RESET })
  parser.finish = () => err
}
/** getpeername's output object of endOfTcpStream (only its result code is read): one for all. */
const PEER_SCRATCH: object = {}

/**
 * An unsolicited `100 Continue`. proxycore never sends `Expect` (node:http answers the client's own
 * `Expect: 100-continue`, at the moment its body is first read), so a backend's 100 always comes
 * unasked, and RFC 9110 §15.2 says a client must parse and ignore an unexpected 1xx. undici's
 * parser destroys the connection at any 100 instead ('bad response': a 502 for a response that was
 * on its way). So each connection's parser, once undici has made it (`socket[kParser] = new
 * Parser` before the pool's 'connect' event, and before the first request is written), gets its
 * head callback replaced: a 100 goes down undici's own path for the other 1xx (headers reset, the
 * timeout refreshed, `onHeaders` called with a status under 200 and ignored by the handlers below,
 * the next message parsed on the same connection) under the unassigned code 199. A 100 that also
 * asks for an upgrade is left to undici. The change touches parser instances of this client's pool,
 * never undici's prototype (an embedder's own undici is left alone), and never the socket: the
 * accessor this hook used to define on each socket (turned into a data property at the parser's
 * assignment) gave every backend socket a hidden class of its own (V8's %HaveSameMap false for any
 * two: test/component/http-backend-socket-shape.test.ts), so each property read undici and
 * node:net make on a socket saw as many shapes as there were connections. Measured without it, 100 B
 * requests at 32 connections: 4–8 % less CPU per request (medians of three runs, bench/ab.mjs and
 * fresh-process pairs; a noisy 2-core machine, single rounds from 0.74 to 1.20). Should a future
 * undici move the symbols or the callback, nothing is replaced and a 100 is a 502 again (the test
 * says so: test/component/http-interim-responses.test.ts).
 * The interim fields are not passed on: a 100 is proxycore's to send, and a client that sent
 * `Expect` already has (or will have) its own.
 */
const UNSOLICITED_CONTINUE = 199
type HeadersComplete = (this: object, statusCode: number, upgrade: boolean, shouldKeepAlive: boolean) => number
const undiciSymbols = lazy<{ kParser?: symbol, kSocket?: symbol, kQueue?: symbol, kPendingIdx?: symbol }>('undici/lib/core/symbols.js')
/** The pool's list of its clients (one per connection): a symbol of pool-base.js's own. */
const undiciPoolBase = lazy<{ kClients?: symbol }>('undici/lib/dispatcher/pool-base.js')
/** undici's Parser prototype and its head callback, from the first parser seen. */
let parserPrototype: object | null = null
let parserHeadersComplete: HeadersComplete | null = null
/** One function for every parser (a closure per parser would be one more object per connection). */
function headersCompleteSkippingContinue (this: object, statusCode: number, upgrade: boolean, shouldKeepAlive: boolean): number {
  // A status under 100 (`HTTP/1.1 099`, `000`: llhttp takes any three digits): undici takes it for
  // a 1xx and then fails an assertion (`statusCode >= 100`), which came out as ERR_PROTOCOL ("not
  // HTTP"). It is HTTP with an invalid status, as a 600 is: refused as ERR_BAD_RESPONSE. undici's
  // execute() destroys the connection with what a callback throws, and onError keeps a ProxyError.
  if (statusCode < 100) throw new ProxyError('ERR_BAD_RESPONSE', `status ${statusCode}`, { phase: 'head' })
  return (parserHeadersComplete as HeadersComplete).call(this, statusCode === 100 && !upgrade ? UNSOLICITED_CONTINUE : statusCode, upgrade, shouldKeepAlive)
}

/**
 * llhttp's error name for a response it refuses. undici 7.30 builds its HTTPParserError with
 * `constants.ERROR[ret]`, a name→number table looked up by the number: the error's `code` is always
 * undefined, the number lost. So each parser's `createError` (called with llhttp's error number) is
 * wrapped, on the same instances and with the same guards as the head callback above, and the
 * error gets the `HPE_` code llhttp would have named (`HPE_INVALID_HEADER_TOKEN`…), read from
 * undici's own llhttp constants. An undici that sets the code itself is left as it is. mapError
 * reads the code: it tells bytes that are not HTTP at all from a malformed HTTP head.
 */
type CreateError = (this: object, ret: number, data: Buffer) => Error & { code?: string }
const llhttpConstants = lazy<{ ERROR?: Record<string, number> }>('undici/lib/llhttp/constants.js')
let llhttpErrorNames: Map<number, string> | null = null
function llhttpErrorName (ret: number): string | undefined {
  if (llhttpErrorNames === null) {
    llhttpErrorNames = new Map()
    try {
      for (const [name, n] of Object.entries(llhttpConstants().ERROR ?? {})) if (typeof n === 'number') llhttpErrorNames.set(n, name)
    } catch {}
  }
  return llhttpErrorNames.get(ret)
}
let parserCreateError: CreateError | null = null
function createErrorNamed (this: object, ret: number, data: Buffer): Error & { code?: string } {
  const err = (parserCreateError as CreateError).call(this, ret, data)
  if (err?.name === 'HTTPParserError' && err.code === undefined && typeof ret === 'number') {
    const name = llhttpErrorName(ret)
    if (name !== undefined) err.code = `HPE_${name}`
  }
  return err
}

/**
 * The pool's 'connect' listener: `targets` ends with the client whose connection just opened. Its
 * parser skips an unsolicited 100 and names its errors (createErrorNamed).
 */
function skipUnsolicitedContinue (_origin: unknown, targets: readonly unknown[]): void {
  let symbols: { kParser?: symbol, kSocket?: symbol }
  try { symbols = undiciSymbols() } catch { return }
  const { kParser, kSocket } = symbols
  if (typeof kParser !== 'symbol' || typeof kSocket !== 'symbol') return
  const client = targets[targets.length - 1] as Record<symbol, unknown> | null | undefined
  const socket = client?.[kSocket] as Record<symbol, unknown> | null | undefined
  const parser = socket?.[kParser] as { onHeadersComplete?: HeadersComplete, createError?: CreateError } | null | undefined
  if (parser == null || Object.prototype.hasOwnProperty.call(parser, 'onHeadersComplete')) return
  const proto = Object.getPrototypeOf(parser) as { onHeadersComplete?: HeadersComplete, createError?: CreateError } | null
  if (proto !== parserPrototype) {
    // Another Parser class than the first one seen (two undici copies): left alone.
    if (parserPrototype !== null || typeof proto?.onHeadersComplete !== 'function') return
    parserPrototype = proto
    parserHeadersComplete = proto.onHeadersComplete
    parserCreateError = typeof proto.createError === 'function' ? proto.createError : null
  }
  parser.onHeadersComplete = headersCompleteSkippingContinue
  if (parserCreateError !== null) parser.createError = createErrorNamed
}

/**
 * How much sooner than a backend's `Keep-Alive: timeout=N` an idle connection is given up, so the
 * proxy never reuses one the backend is closing. undici's default (2 s) turned keep-alive off for
 * every backend announcing 1 or 2 s — node:http with `keepAliveTimeout` under 3 s: one new
 * connection per request, back-to-back ones too (measured: 50 sequential requests, 50 backend
 * connections), TIME_WAIT sockets piling up under load. Node closes an idle connection at its
 * `keepAliveTimeout`, never before the whole seconds it announces; half a second is ample on a
 * LAN, and the keep-alive race it guards against is replayed for idempotent requests anyway.
 */
const KEEPALIVE_HINT_MARGIN_MS = 500

export class HttpClient implements BackendClient {
  inflight = 0
  private readonly pool: Pool

  constructor (readonly endpoint: Endpoint, opts: HttpOptions, ctx: ClientContext) {
    const origin = endpoint.kind === 'tcp'
      ? `http://${endpoint.id}`
      : 'http://localhost'
    compileParserEarly()
    const endListener = endpoint.kind === 'tcp' ? endOfTcpStream : resumeAtEnd
    this.pool = new (undiciPool())(origin, {
      connections: opts.connections,
      pipelining: 1,
      keepAliveTimeout: opts.keepAliveTimeout,
      keepAliveMaxTimeout: opts.keepAliveTimeout,
      keepAliveTimeoutThreshold: KEEPALIVE_HINT_MARGIN_MS,
      headersTimeout: 0,
      bodyTimeout: 0,
      maxHeaderSize: ctx.limits.maxResponseHeadSize,
      // The core's connector: route connect timeout, ERR_CONNECT_* codes.
      connect: ((_opts: object, cb: (err: Error | null, socket: Socket | null) => void) => {
        ctx.connect(endpoint).then((s) => { s.prependListener('error', hideReset).prependListener('end', endListener); holdWriteErrors(s); cb(null, s) }, (err: Error) => cb(err, null))
      }) as unknown as buildConnector.connector,
    })
    this.pool.on('connect', skipUnsolicitedContinue)
  }

  dispatch (ex: Exchange, handler: ResponseHandler): void {
    let headers = ex.headers
    if (ex.method === 'OPTIONS' || ex.method === 'TRACE') {
      const forwarded = spendMaxForwards(ex, handler)
      if (forwarded === null) return
      headers = forwarded
    }
    this.inflight++
    const h = new ExchangeHandler(this, ex, handler)
    // undici queues the request when every one of `connections` is busy: that wait is the route's
    // queueTimeout's, and timeouts.headers starts at onConnect (the core's Exchange contract).
    ex.waitingForConnection?.()
    try {
      this.pool.dispatch({
        path: ex.url,
        method: ex.method,
        headers,
        // undici destroys a stream body when the exchange fails; handing it an iterator that does
        // not destroy on return keeps the client connection alive so it can still get a 502.
        body: ex.body === null ? null : ex.body.iterator({ destroyOnReturn: false }) as unknown as Readable,
      }, h as unknown as Parameters<Pool["dispatch"]>[1])
    } catch (err) {
      h.onError(err as Error)
    }
  }

  /**
   * The socket undici is writing a request to, asked from the request's onConnect (undici calls it
   * synchronously, just before it writes the head): the one client of the pool with a request at
   * its pending index, the request not yet counted as written. null if undici moved its symbols.
   * Only the upgrade path asks (rare); a plain request never does.
   */
  socketBeingWritten (): Socket | null {
    let symbols: { kQueue?: symbol, kPendingIdx?: symbol, kSocket?: symbol }
    let kClients: symbol | undefined
    try { symbols = undiciSymbols(); kClients = undiciPoolBase().kClients } catch { return null }
    const { kQueue, kPendingIdx, kSocket } = symbols
    if (typeof kClients !== 'symbol' || typeof kQueue !== 'symbol' || typeof kPendingIdx !== 'symbol' || typeof kSocket !== 'symbol') return null
    const clients = (this.pool as unknown as Record<symbol, unknown>)[kClients]
    if (!Array.isArray(clients)) return null
    let found: Socket | null = null
    for (const c of clients as Array<Record<symbol, unknown>>) {
      const queue = c[kQueue] as unknown[] | undefined
      const idx = c[kPendingIdx]
      if (!Array.isArray(queue) || typeof idx !== 'number' || queue[idx] == null) continue
      // Another client with a request pending (one still connecting): which is ours is unknown.
      if (found !== null) return null
      found = (c[kSocket] as Socket | null | undefined) ?? null
    }
    return found
  }

  upgrade (ex: Exchange, handler: UpgradeHandler): void {
    this.inflight++
    const h = new UpgradeBridge(this, ex, handler)
    const headers: string[] = []
    let protocol = 'websocket'
    for (let i = 0; i < ex.headers.length; i += 2) {
      const n = ex.headers[i].toLowerCase()
      if (n === 'upgrade') { protocol = ex.headers[i + 1]; continue }
      if (n === 'connection') continue
      headers.push(ex.headers[i], ex.headers[i + 1])
    }
    // As a request: undici queues the upgrade while every one of `connections` is busy (and never
    // sends it on a connection with a request in flight), a wait bounded by the route's
    // queueTimeout; timeouts.headers starts at onConnect.
    ex.waitingForConnection?.()
    try {
      this.pool.dispatch({ path: ex.url, method: ex.method, headers, upgrade: protocol, body: null }, h)
    } catch (err) {
      h.onError(err as Error)
    }
  }

  done (): void { this.inflight-- }

  async close (): Promise<void> { await this.pool.close() }

  destroy (reason?: Error): void { this.pool.destroy(reason ?? null).catch(() => {}) }
}

/**
 * RFC 9110 §7.6.2, for an OPTIONS or TRACE request: an intermediary MUST check and update
 * Max-Forwards, and at 0 MUST NOT forward the request but answer it as its final recipient.
 * Returns the fields to forward (a copy with the value decremented: a retry on another backend
 * decrements the client's value again, not ours), or null when the request was answered here:
 * - 0, OPTIONS: `200` without a body and without `Allow`: proxycore forwards any method, and which
 *   ones the backend's resource takes it cannot say (Allow is a SHOULD, §9.3.7).
 * - 0, TRACE: `501`, as for CONNECT: proxycore never reflects a request (the request's cookies and
 *   credentials echoed are Cross-Site Tracing; nginx refuses TRACE outright with 405, which would
 *   owe an `Allow` list it cannot know).
 * - more than one Max-Forwards field, or a value that is not 1*DIGIT: 400 ERR_BAD_REQUEST, as
 *   Apache's mod_proxy answers a value it cannot parse (it also answers the 0 cases itself).
 * Values past 10^9 are taken as 10^9 (§7.6.2: "the recipient's maximum supported value").
 * Without the field the request's own list is returned, no copy. FastCGI, SCGI and CGI routes
 * never come here: their backend is the origin's application (RFC 3875 §4.1.18: the field is
 * HTTP_MAX_FORWARDS), not a next hop.
 */
function spendMaxForwards (ex: Exchange, handler: ResponseHandler): RawHeaders | null {
  const fields = ex.headers
  let at = -1
  for (let i = 0; i < fields.length; i += 2) {
    if (!sameName(fields[i], 'max-forwards')) continue
    if (at >= 0) { handler.onError(new ProxyError('ERR_BAD_REQUEST', 'more than one Max-Forwards field', { phase: 'route' })); return null }
    at = i
  }
  if (at < 0) return fields
  // Leading zeros say nothing (`0000000000` is 0, not a ten-digit value).
  const value = fields[at + 1].trim().replace(/^0+(?=\d)/, '')
  if (!/^\d+$/.test(value)) { handler.onError(new ProxyError('ERR_BAD_REQUEST', `Max-Forwards ${JSON.stringify(fields[at + 1])} is not a number`, { phase: 'route' })); return null }
  const n = value.length > 9 ? MAX_FORWARDS_CAP : Math.min(Number(value), MAX_FORWARDS_CAP)
  if (n === 0) {
    const status = ex.method === 'TRACE' ? 501 : 200
    handler.onHead(status, ['content-length', '0'], NO_FLOW, status === 501 ? 'Not Implemented' : 'OK')
    handler.onEnd()
    return null
  }
  const out = fields.slice()
  out[at + 1] = String(n - 1)
  return out
}
const MAX_FORWARDS_CAP = 1_000_000_000
/** The flow control of a response answered here: nothing to resume. */
const NO_FLOW: FlowControl = { resume () {} }

/** The head of a response not seen yet: one shared empty list, not one per exchange. */
const NO_FIELDS: RawHeaders = Object.freeze([]) as unknown as RawHeaders

/** Adapts undici's handler calls to the core's ResponseHandler. One per exchange. */
class ExchangeHandler implements FlowControl {
  private resumeFn: (() => void) | null = null
  private abortFn: ((err: Error) => void) | null = null
  private headSeen = false
  private finished = false
  /** The response head's fields: its `Connection` names the trailer fields to drop too. */
  private head: RawHeaders = NO_FIELDS

  constructor (private readonly client: HttpClient, private readonly ex: Exchange, private readonly h: ResponseHandler) {}

  onConnect (abort: (err: Error) => void): void {
    const ex = this.ex
    if (isAborted(ex)) { abort(new Error('aborted')); return }
    this.abortFn = abort
    watchAbort(ex, this.onAbort)
    // The request has its connection and undici writes its head now: the head deadline starts
    // here, not at the dispatch (a body's upload keeps pushing it, the core's checkUpload).
    ex.connectionReady?.()
  }

  private onAbort = (): void => { this.abortFn?.(new Error('aborted')) }

  onHeaders (status: number, raw: Buffer[], resume: () => void, statusText: string): boolean {
    if (status === 101) {
      // This path never asks to upgrade (an Upgrade request goes through UpgradeBridge), and a
      // server may switch only to a protocol the client asked for (RFC 9110 §15.2.2, §7.8): an
      // invalid response. llhttp takes any 101 for the switch and undici then fails an assertion
      // (a bare 101, which came out as ERR_PROTOCOL) or says 'bad upgrade'; refused here first,
      // as a malformed response, the connection destroyed.
      const err = new ProxyError('ERR_BAD_RESPONSE', '101 Switching Protocols to a request that did not ask to upgrade', { phase: 'head', backend: this.client.endpoint.id })
      this.abortFn?.(err)
      if (this.end()) this.h.onError(err)
      return false
    }
    if (status < 200) {
      this.h.onInformational?.(status, toStrings(raw))
      return true
    }
    this.headSeen = true
    this.resumeFn = resume
    const headers = toStrings(raw)
    const reason = reasonPhrase(statusText)
    const bad = framingProblem(headers) ??
      // node:http would refuse it in writeHead, and then in the 502 after it: refused here instead.
      (reason === null ? 'control character in the reason phrase' : null)
    if (bad !== null) {
      // llhttp accepts these, but the body framing is ambiguous: 502 now, connection destroyed.
      // undici hands the abort reason straight to onError, which keeps a ProxyError as it is:
      // the code stays ERR_BAD_RESPONSE (a plain Error would be mapped to ERR_PROTOCOL).
      const err = new ProxyError('ERR_BAD_RESPONSE', bad, { phase: 'head', backend: this.client.endpoint.id })
      this.headSeen = false
      this.abortFn?.(err)
      if (this.end()) this.h.onError(err)
      return false
    }
    this.head = headers
    this.h.onHead(status, headers, this, reason as string)
    // RFC 9110 §6.4.1: 204 and 304 end at their head, whatever Content-Length says. undici would
    // call a 304 with `Content-Length: 120` a length mismatch; stray bytes make it destroy the
    // socket, which is what we want, but the client's response is already complete.
    if ((status === 204 || status === 304) && this.end()) this.h.onEnd()
    return true
  }

  resume (): void { this.resumeFn?.() }

  // An empty chunk (undici flushes a body framed by the close with one when its parser resumes)
  // adds nothing to the client's queue: never a reason to pause again (resumeAtEnd).
  onData (chunk: Buffer): boolean { return this.finished || chunk.length === 0 ? true : this.h.onData(chunk) }

  onComplete (trailers: Buffer[] | null): void {
    if (!this.end()) return
    const kept = trailers !== null && trailers.length > 0 ? filterTrailers(toStrings(trailers), this.head) : []
    this.h.onEnd(kept.length > 0 ? kept : undefined)
  }

  onError (err: Error): void {
    if (!this.end()) return
    if (isAborted(this.ex)) {
      // We aborted (client gone or core timeout): the core already decided what to send.
      this.h.onError(new ProxyError('ERR_CLIENT_ABORTED', undefined, { phase: 'body' }))
      return
    }
    const e = mapError(err, this.headSeen ? 'body' : 'head', this.client.endpoint.id)
    // A reused keep-alive connection the backend had just closed: safe to replay an idempotent
    // request without body on another connection (no response byte was seen).
    if (!this.headSeen && e.phase !== 'connect' && (e.code === 'ERR_BACKEND_CLOSED' || e.code === 'ERR_BACKEND_RESET') &&
        this.ex.body === null && isIdempotent(this.ex.method)) {
      e.replayable = true
    }
    this.h.onError(e)
  }

  private end (): boolean {
    if (this.finished) return false
    this.finished = true
    if (this.abortFn !== null) unwatchAbort(this.ex, this.onAbort)
    this.client.done()
    return true
  }
}

/** Upgrade requests: 101 hands over the socket; anything else is a plain response. */
class UpgradeBridge implements FlowControl {
  private resumeFn: (() => void) | null = null
  private abortFn: ((err: Error) => void) | null = null
  private headSeen = false
  private finished = false
  /**
   * A kept-alive connection (it had carried a request before this one) and the bytes read on it
   * when this request got it: a close or a reset with no byte of the answer read is the keep-alive
   * race (onError). null: a fresh connection, or one undici did not let us see.
   */
  private reused: { socket: Socket, bytesRead: number } | null = null
  constructor (private readonly client: HttpClient, private readonly ex: Exchange, private readonly h: UpgradeHandler) {}

  onConnect (abort: (err: Error) => void): void {
    // The core may have given up (head timeout, client gone) while the request waited for a connection.
    if (isAborted(this.ex)) { abort(new Error('aborted')); return }
    this.abortFn = abort
    // Nothing of this request is written yet: bytes written before it were an earlier request's.
    const socket = this.client.socketBeingWritten()
    if (socket !== null && socket.bytesWritten > 0) this.reused = { socket, bytesRead: socket.bytesRead }
    watchAbort(this.ex, this.onAbort)
    this.ex.connectionReady?.()
  }

  private readonly onAbort = (): void => { this.abortFn?.(new Error('aborted')) }

  onUpgrade (status: number, raw: Buffer[], socket: Duplex): void {
    // The tunnel is no longer undici's: its errors keep their own codes.
    socket.off('error', hideReset).off('end', resumeAtEnd).off('end', endOfTcpStream)
    releaseWriteErrors(socket)
    if (!this.end()) return
    this.h.onUpgrade(status, toStrings(raw), socket, Buffer.alloc(0))
  }

  onHeaders (status: number, raw: Buffer[], resume: () => void, statusText: string): boolean {
    if (status === 101) {
      // A 101 that llhttp did not take for a switch (no Upgrade field, or no `Connection: upgrade`): undici would fail an
      // assertion next. The backend broke the upgrade itself (RFC 9110 §15.2.2: a 101 names the
      // protocol it switches to): the one failure that keeps ERR_UPGRADE_FAILED.
      const err = new ProxyError('ERR_UPGRADE_FAILED', '101 Switching Protocols that is no switch (no Upgrade field, or no Connection: upgrade)', { phase: 'head', backend: this.client.endpoint.id })
      this.abortFn?.(err)
      if (this.end()) this.h.onError(err)
      return false
    }
    if (status < 200) return true
    this.headSeen = true
    this.resumeFn = resume
    this.h.onHead(status, toStrings(raw), this, statusText)
    return true
  }

  resume (): void { this.resumeFn?.() }
  // undici pauses the connection when this returns false, until resume(). An empty chunk (the
  // flush of a body framed by the close, at resumeAtEnd) never pauses it again, as for
  // ExchangeHandler: undici's 'end' listener would then assert on a paused parser and the process
  // would die (test/component/upgrade-audit-paused-end.test.ts).
  onData (chunk: Buffer): boolean { return this.finished || chunk.length === 0 ? true : this.h.onData(chunk) }
  onComplete (): void { if (this.end()) this.h.onEnd() }
  onError (err: Error): void {
    if (!this.end()) return
    // The codes of a plain request for the same fault, before the answer as inside a plain
    // answer's body: a connect failure (ERR_CONNECT_*, failed over by the core), a close
    // (ERR_BACKEND_CLOSED) or a reset (ERR_BACKEND_RESET) before the head, a malformed or
    // oversized head. The status, the access log and passive health (isFailedAttempt) read them.
    const e = mapError(err, this.headSeen ? 'body' : 'head', this.client.endpoint.id)
    // A kept-alive connection the backend closed (or reset) as the Upgrade arrived, no byte of the
    // answer read: the keep-alive race a plain bodiless GET is replayed for (ExchangeHandler);
    // UpgradeExchange sends it once more, on a fresh connection. Unlike a plain request, the
    // upgrade sees its connection: a fresh one that fails so is a real failure.
    const r = this.reused
    if (r !== null && !this.headSeen && e.phase !== 'connect' && (e.code === 'ERR_BACKEND_CLOSED' || e.code === 'ERR_BACKEND_RESET') &&
        r.socket.bytesRead === r.bytesRead) {
      e.replayable = true
    }
    this.reused = null
    this.h.onError(e)
  }

  private end (): boolean {
    if (this.finished) return false
    this.finished = true
    if (this.abortFn !== null) unwatchAbort(this.ex, this.onAbort)
    this.client.done()
    return true
  }
}

/**
 * Response framing llhttp lets through but a proxy must not (RELIABILITY §2.6, nginx's 'duplicate
 * transfer encoding' / 'unknown transfer encoding'): Transfer-Encoding twice, or anything but
 * `chunked` (which would make the client wait for EOF).
 */
function framingProblem (headers: RawHeaders): string | null {
  let te = 0
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]
    if (!sameName(n, 'transfer-encoding')) continue
    te++
    if (te > 1) return 'duplicate Transfer-Encoding'
    if (headers[i + 1].trim().toLowerCase() !== 'chunked') return `unsupported Transfer-Encoding ${JSON.stringify(headers[i + 1])}`
  }
  return null
}

function toStrings (raw: Buffer[]): RawHeaders {
  const out = new Array<string>(raw.length)
  for (let i = 0; i < raw.length; i++) out[i] = (i & 1) === 0 ? fieldName(raw[i]) : raw[i].toString('latin1')
  return out
}

/**
 * Field names a backend sends are the same few on every response (`Content-Type`, `Date`,
 * `Connection`…): the first FIELD_NAMES_PER_LENGTH names of each length up to FIELD_NAME_CACHE_MAX
 * bytes are kept, and a name whose bytes equal a kept one, byte for byte (case included), is that
 * string: no decode call into C++ and no new string per field (measured: ~45 ns and ~30 B per name
 * saved, 5 names per response from a node:http backend). Any other name is decoded as before.
 */
const FIELD_NAME_CACHE_MAX = 32
const FIELD_NAMES_PER_LENGTH = 4
const fieldNames: string[][] = Array.from({ length: FIELD_NAME_CACHE_MAX + 1 }, () => [])
export function fieldName (b: Buffer): string {
  const n = b.length
  if (n > FIELD_NAME_CACHE_MAX) return b.toString('latin1')
  const kept = fieldNames[n]
  next: for (let k = 0; k < kept.length; k++) {
    const s = kept[k]
    for (let i = 0; i < n; i++) if (b[i] !== s.charCodeAt(i)) continue next
    return s
  }
  const s = b.toString('latin1')
  if (kept.length < FIELD_NAMES_PER_LENGTH) kept.push(s)
  return s
}

/** undici / llhttp errors -> stable codes. */
function mapError (err: Error & { code?: string }, phase: ErrorPhase, backend: string): ProxyError {
  if (err instanceof ProxyError) return err
  const code = err.code ?? ''
  let mapped: ErrorCode
  if (code === 'UND_ERR_HEADERS_OVERFLOW' || code === 'HPE_HEADER_OVERFLOW') mapped = 'ERR_RESPONSE_HEAD_TOO_LARGE'
  // llhttp refused the response: decided by the error's identity, as undici 7.30 leaves `code`
  // unset where createErrorNamed could not name it.
  else if (err.name === 'HTTPParserError' || code.startsWith('HPE_')) mapped = notHttp(code, err.message) ? 'ERR_PROTOCOL' : 'ERR_BAD_RESPONSE'
  else if (code === 'UND_ERR_INVALID_ARG' || err.message === 'bad response' || err.message === 'bad upgrade') mapped = 'ERR_BAD_RESPONSE'
  else if (code === 'ECONNRESET' || code === HIDDEN_RESET || code === 'EPIPE') mapped = 'ERR_BACKEND_RESET'
  // undici reports ANY parse error as a length mismatch once a Content-Length was read
  // (client-h1.js createError): before the head was delivered that is a malformed head
  // (`Content-Length: 2, 2`, two different values), never a closed connection to replay on.
  else if (code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') mapped = phase === 'head' ? 'ERR_BAD_RESPONSE' : 'ERR_BACKEND_CLOSED'
  else if (code === 'UND_ERR_SOCKET' || code === 'UND_ERR_CLOSED') mapped = 'ERR_BACKEND_CLOSED'
  else if (code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH') mapped = 'ERR_BAD_REQUEST'
  else mapped = 'ERR_PROTOCOL'
  return new ProxyError(mapped, `${code || err.name}: ${err.message}`, { phase, backend, cause: err })
}

/**
 * A response that is not HTTP at all: llhttp expected a message's protocol token (`HTTP/`) and got
 * something else — a FastCGI, TLS or SSH peer on an `http` route, or bytes after a message that
 * start no other. ERR_PROTOCOL ("check the route uses the right protocol"); every other parse error
 * is a malformed HTTP response (ERR_BAD_RESPONSE). llhttp's kind (HPE_INVALID_CONSTANT) is its
 * kind for any literal it expected; the reason text pins it to the start of a message (measured
 * with llhttp in undici 7.30: `hello`, a FastCGI record, a TLS alert, `HTXP/1.1`). Should a future
 * llhttp reword it, such bytes are ERR_BAD_RESPONSE, still a 502
 * (test/component/http-parse-codes-llhttp.test.ts says so). Where undici left the code unset and
 * the parser was not hooked (code ''), the reason text alone decides.
 */
function notHttp (code: string, message: string): boolean {
  return (code === 'HPE_INVALID_CONSTANT' || code === '') && message.includes('(Expected HTTP/')
}
