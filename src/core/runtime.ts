/**
 * The running proxy: front-side checks, routing, the timeout sweep, error pages, local redirects
 * and graceful close. Built by `createProxy()` from a validated config.
 *
 * Timeouts use one coarse sweep over the exchanges in flight (lighttpd's one-second tick, finer when
 * a route asks for short timeouts) instead of a timer per request.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Duplex, Writable } from 'node:stream'
import { DISCARD_MAX_BYTES, DISCARD_MAX_MS, discardBody, lingerOnClose } from './body-pump.js'
import { ProxyError, statusFor, type ErrorCode } from './errors.js'
import { ProxyExchange } from './exchange.js'
import { checkRequestFraming, viaCarries } from './headers.js'
import type { ProxyEvents } from './events.js'
import type { CompiledRoute } from './route.js'
import { hostOnly, type Router } from './router.js'
import { forwardedChain, forwardedSecure, plainAddress, type TrustedProxies } from './trust.js'
import { UpgradeExchange, hasBody } from './upgrade.js'
import type { BodyScavenger } from './scavenge.js'
import { LiveSet } from '../live-set.js'
import type { ClientInfo, Logger } from './types.js'
import { incompleteUtf8Tail } from '../utf8.js'

export type { CompiledRoute } from './route.js'

const MAX_LOCAL_REDIRECTS = 10
/** close(): the least time backend clients get to close their idle connections, whatever is left of the grace. */
const CLOSE_FLOOR_MS = 1000
/** Bytes of one backend stderr line logged; the rest of a longer line is dropped (`…` says so). */
const STDERR_LINE_CAP = 4096
/** A refused socket's lingering close: closed after this long without a byte from the client (nginx lingering_timeout). */
const LINGER_IDLE_MS = 5000
/** Log lines of backend stderr per request. */
const STDERR_LINES = 100
/** The adapters' byte-cap marker (FastCGI stderrLimit, CGI maxStderr): handed on as a chunk of its own. */
const STDERR_TRUNCATED = /^\[stderr truncated after \d+ bytes\]$/
/** Held instead of a line's start while the rest of a line cut at STDERR_LINE_CAP is skipped. */
const STDERR_SKIPPING = Buffer.alloc(0)

/**
 * `held` (null, or a view from offset 0 of a buffer this function allocated) with `rest` appended,
 * at most STDERR_LINE_CAP bytes in all. Copied, never a view of the chunk (a larger read buffer
 * would be kept). The room doubles as a line grows: a line sent as 1-byte records costs a copy of
 * each byte, not of the whole line for each byte (64 KiB of 1-byte records in 4095-byte lines:
 * 71 ms with a concat per byte, 18-21 ms so, measured on the dist build).
 */
function stderrHold (held: Buffer | null, rest: Buffer): Buffer {
  const used = held === null ? 0 : held.length
  const len = used + rest.length
  let room = held === null ? null : Buffer.from(held.buffer, 0, held.buffer.byteLength)
  if (room === null || room.length < len) {
    const grown = Buffer.allocUnsafeSlow(Math.min(STDERR_LINE_CAP, Math.max(len, 2 * used, 64)))
    if (held !== null) held.copy(grown)
    room = grown
  }
  rest.copy(room, used)
  return room.subarray(0, len)
}

export interface Target { method: string, url: string, path: string, query: string, host: string }

interface UpgradeMatch { target: (Target & { authority?: string }) | null, bad: ProxyError | null, route: CompiledRoute | null }

export class ProxyRuntime {
  private id = 0
  /** Not a Set: see src/live-set.ts (a Set churned per request got every request graph promoted). */
  private readonly active = new LiveSet<ProxyExchange>()
  /** Open upgrades; close() is told when the last one ends (TunnelSet). */
  private readonly tunnels = new TunnelSet(() => this.checkDrained())
  private sweepTimer: NodeJS.Timeout | null = null
  private closing = false

  constructor (
    readonly router: Router<CompiledRoute>,
    readonly routes: readonly CompiledRoute[],
    readonly events: ProxyEvents,
    readonly log: Logger,
    readonly trust: TrustedProxies,
    private readonly sweepMs: number,
    /** Large bodies' garbage collected early (src/core/scavenge.ts), or null without a gc function. */
    readonly scavenger: BodyScavenger | null = null,
  ) {}

  nextId (): number { return ++this.id }
  now (): number { return Date.now() }

  /**
   * Client sockets whose writes wait for the end of this loop iteration's I/O callbacks, so the
   * response bytes that several backend reads produced leave in one writev (ProxyExchange.onData).
   * One setImmediate per loop iteration, however many sockets.
   */
  private corkedSockets: Writable[] = []
  private readonly uncorkSockets = (): void => {
    const list = this.corkedSockets
    this.corkedSockets = []
    for (const s of list) s.uncork()
  }

  corkUntilImmediate (s: Writable): void {
    if (this.corkedSockets.length === 0) setImmediate(this.uncorkSockets)
    this.corkedSockets.push(s)
    s.cork()
  }

  /** node:http request handler; with `next`, an unmatched request falls through (middleware). */
  handle (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void {
    if (this.closingSockets.has(req.socket)) { res.shouldKeepAlive = false; return }
    const bad = checkRequestFraming(req)
    if (bad !== null) {
      this.closeAfter(req, res)
      this.refuse(req, res, bad, '')
      return
    }
    const target = parseTarget(req.method ?? 'GET', req.url ?? '/', req.headers.host)
    if (target === null) { this.refuse(req, res, new ProxyError('ERR_BAD_REQUEST', 'bad request-target or Host', { phase: 'route' }), ''); return }
    if (target.authority !== undefined) adoptAuthority(req, target.authority)
    let route: CompiledRoute | null
    try {
      route = this.router.match(target)
    } catch (err) {
      // A path no route can be chosen for is answered here, never passed to `next`: the next
      // handler might decode it into a path one of these routes guards.
      this.refuse(req, res, asProxyError(err), '')
      return
    }
    if (route === null) {
      if (next !== undefined) { next(); return }
      this.refuse(req, res, new ProxyError('ERR_NO_ROUTE', undefined, { phase: 'route' }), '')
      return
    }
    if (target.path === '*' && !route.adapter.capabilities.cgiEnv) { this.refuse(req, res, asteriskRefused(), route.name); return }
    if (this.closing) { this.refuse(req, res, new ProxyError('ERR_SHUTTING_DOWN', undefined, { phase: 'admit' }), route.name, 1); return }
    if (req.readableDidRead && declaresBody(req)) {
      // Middleware before proxy.handler read the body (express.json()): whatever is forwarded
      // would be an empty or short body under the client's length, blamed on the client (400) or
      // on the client going away. Said as what it is, and no backend is asked.
      this.refuse(req, res, new ProxyError('ERR_BODY_CONSUMED', `${req.method ?? ''} ${req.url ?? ''}: register proxy.handler before body parsers`, { phase: 'route' }), route.name)
      return
    }
    const peer = plainAddress(req.socket.remoteAddress)
    const ex = new ProxyExchange(this, route, req, res, withUpstream(route, target), this.clientOf(req, peer), peer, 0)
    try {
      ex.start()
    } catch (err) {
      this.sendError(res, asProxyError(err))
    }
  }

  /**
   * node:http 'checkContinue' listener: answer 413 to an over-limit `Expect: 100-continue` upload
   * without ever sending 100 (so the client never sends the body); otherwise proxy it, and send
   * 100 only when the body starts being read (nginx sends it when it starts reading the body). A
   * request answered without its body — no route, a missing script, a refusing authorizer, a
   * backend that cannot be reached — gets its final status with no 100 before it: the client
   * does not send the body, and node:http closes the connection after such an answer, so a body
   * the client sends anyway is never parsed as the next request.
   */
  checkContinue (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void {
    const target = parseTarget(req.method ?? 'GET', req.url ?? '/', req.headers.host)
    const route = target === null ? null : this.router.find(target)
    const cl = Number(req.headers['content-length'] ?? 0)
    if (route !== null && route.s.maxBodySize > 0 && cl > route.s.maxBodySize) {
      this.closeAfter(req, res)
      this.refuse(req, res, new ProxyError('ERR_BODY_TOO_LARGE', `${cl} bytes`, { phase: 'route' }), route.name)
      return
    }
    continueOnFirstRead(req, res, this.awaitingContinue)
    this.handle(req, res, next)
  }

  /**
   * Client connections answered with `connection: close` because the request's framing could not
   * be trusted: node:http has already parsed what followed it — which a front end may have sent
   * as that request's body — and emits it as the next request. RFC 9112 §9.6: a server that
   * sends `close` MUST NOT process further requests on the connection. Such a request is dropped
   * unanswered; the connection closes after the refusal is written.
   */
  private readonly closingSockets = new WeakSet<object>()

  private closeAfter (req: IncomingMessage, res: ServerResponse): void {
    res.shouldKeepAlive = false
    this.closingSockets.add(req.socket)
  }

  /** Requests whose 100 Continue is held until their body is first read (checkContinue). */
  private readonly awaitingContinue = new WeakSet<IncomingMessage>()

  /** The client holds its body back until a 100 not sent yet: its silence is not idleness. */
  holdsBodyForContinue (req: IncomingMessage): boolean {
    return this.awaitingContinue.has(req)
  }

  /**
   * node:http `shouldUpgradeCallback` (Node >= 22.21 / 24.9): true only for an upgrade that would
   * become an UpgradeExchange — a route whose protocol can carry one, and no request body. False
   * lets node:http emit the request as a plain 'request' (RFC 9110 §7.8: a server MAY ignore
   * Upgrade), which `handle` routes and answers as any request, its Upgrade and Connection-listed
   * fields dropped as hop-by-hop. node:http asks only for requests that carry Upgrade, so the
   * match kept for `upgrade` costs plain requests nothing.
   */
  shouldUpgrade (req: IncomingMessage): boolean {
    if (hasBody(req)) return false
    const m = this.upgradeMatch(req)
    if (m.route === null || m.target === null || !m.route.adapter.capabilities.upgrade || this.closing || m.target.path === '*') return false
    this.upgradeMatches.set(req, m)
    return true
  }

  /** The routing shouldUpgrade did, for `upgrade` to take instead of routing again. */
  private readonly upgradeMatches = new WeakMap<IncomingMessage, UpgradeMatch>()

  private upgradeMatch (req: IncomingMessage): UpgradeMatch {
    const target = parseTarget(req.method ?? 'GET', req.url ?? '/', req.headers.host)
    const bad = checkRequestFraming(req)
    return { target, bad, route: target === null || bad !== null ? null : this.router.find(target) }
  }

  /** node:http 'upgrade' listener. Unmatched or non-upgradable routes are refused. */
  upgrade (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const m = this.upgradeMatches.get(req) ?? this.upgradeMatch(req)
    const { target, bad, route } = m
    if (route === null || target === null || !route.adapter.capabilities.upgrade || this.closing || target.path === '*') {
      // A route whose protocol cannot carry an upgrade is a bad request for it, not a missing route.
      const code: ErrorCode = bad !== null ? bad.code : target === null ? 'ERR_BAD_REQUEST' : route === null ? 'ERR_NO_ROUTE' : this.closing ? 'ERR_SHUTTING_DOWN' : 'ERR_BAD_REQUEST'
      this.refuseSocket(req, socket, code, route?.name ?? '')
      return
    }
    // A loop (the request's Via names this proxy: src/core/headers.ts viaCarries) is refused here,
    // before the exchange is made: its request head is built in UpgradeExchange's constructor.
    const via = req.headers.via
    if (route.s.via !== '' && typeof via === 'string' && viaCarries(via, route.s.via)) {
      this.refuseSocket(req, socket, 'ERR_LOOP_DETECTED', route.name)
      return
    }
    if (target.authority !== undefined) adoptAuthority(req, target.authority)
    const peer = plainAddress(req.socket.remoteAddress)
    const ex = new UpgradeExchange(this, route, req, socket, head, withUpstream(route, target), this.clientOf(req, peer), peer)
    this.tunnels.add(ex)
    ex.start(() => this.tunnels.delete(ex))
  }

  /**
   * node:http 'connect' listener: CONNECT opens a tunnel to another host, what a forward proxy
   * does; a reverse proxy answers 501 (RFC 9110 §9.1, a method it does not implement). Without a
   * listener node:http closes the socket unanswered.
   */
  connect (req: IncomingMessage, socket: Duplex): void {
    this.refuseSocket(req, socket, 'ERR_CONNECT_METHOD', '')
  }

  /**
   * An error answer on a socket node:http handed over (an upgrade or a CONNECT refused before any
   * exchange): the body names the code, as sendError's; the request is reported. The socket then
   * waits for the client's FIN, what it still sends read and dropped (closing on unread bytes would
   * reset the connection and lose the answer), as nginx's lingering close: until LINGER_IDLE_MS pass
   * without a byte, at most DISCARD_MAX_MS in all. A client that never closed its side held it
   * forever.
   */
  private refuseSocket (req: IncomingMessage, socket: Duplex, code: ErrorCode, route: string): void {
    const status = statusFor(new ProxyError(code))
    const body = `${status} ${STATUS_CODES[status] ?? 'Error'}\n${code}\n`
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: ${body.length}\r\n\r\n${body}`)
    socket.on('error', () => {})
    const since = Date.now()
    let last = since
    socket.on('data', () => { last = Date.now() })
    socket.resume()
    let linger: NodeJS.Timeout
    const check = (): void => {
      const now = Date.now()
      const wait = Math.min(LINGER_IDLE_MS - (now - last), DISCARD_MAX_MS - (now - since))
      if (wait <= 0) { socket.destroy(); return }
      linger = setTimeout(check, wait)
      linger.unref()
    }
    check()
    socket.once('close', () => clearTimeout(linger))
    this.refused(req, route, status, code, 0)
  }

  private clientOf (req: IncomingMessage, peer: string): ClientInfo {
    const sock = req.socket as Duplex & { encrypted?: boolean, localAddress?: string, localPort?: number, remotePort?: number }
    let address = peer
    let secure = sock.encrypted === true
    if (!this.trust.empty && this.trust.has(peer)) {
      const h = req.headers
      const header = this.trust.header
      address = this.trust.resolve(peer, forwardedChain(h['x-forwarded-for'] as string | undefined, h.forwarded, header))
      secure = forwardedSecure(h['x-forwarded-proto'] as string | undefined, h.forwarded, header) ?? secure
    }
    return { address, port: sock.remotePort ?? 0, localAddress: plainAddress(sock.localAddress), localPort: sock.localPort ?? 0, secure }
  }

  // --- services for exchanges ------------------------------------------------------------

  track (ex: ProxyExchange): void {
    this.active.add(ex)
    if (this.sweepTimer === null) {
      this.sweepTimer = setInterval(() => this.sweep(), this.sweepMs)
      this.sweepTimer.unref()
    }
  }

  untrack (ex: ProxyExchange): void {
    this.active.delete(ex)
    if (this.active.size === 0 && this.sweepTimer !== null) {
      clearInterval(this.sweepTimer)
      this.sweepTimer = null
    }
    this.checkDrained()
  }

  private checkDrained (): void {
    if (this.closing && this.active.size === 0 && this.tunnels.size === 0) this.drained?.()
  }

  private sweep (): void {
    const now = this.now()
    for (const ex of this.active.values()) {
      if (ex.bodyWatch) ex.checkBodySent(now)
      if (ex.headDeadline !== 0 && now >= ex.headDeadline) ex.timedOut('ERR_HEADERS_TIMEOUT')
      else if (ex.idleDeadline !== 0 && now >= ex.idleDeadline) ex.timedOut('ERR_BODY_TIMEOUT')
      else if (ex.uploadWatch) ex.checkUpload(now)
      else if (ex.downloadWatch) ex.checkDownload(now)
    }
  }

  /** The single place an error becomes a response. Returns the body bytes sent, or -1: none could be. */
  sendError (res: ServerResponse, err: ProxyError, retryAfter?: number): number {
    if (res.headersSent || res.destroyed) { res.destroy(); return -1 }
    const status = statusFor(err)
    const body = `${status} ${STATUS_CODES[status] ?? 'Error'}\n${err.code}\n`
    const headers: Record<string, string | number> = {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    }
    if (status === 503 && retryAfter !== undefined) headers['retry-after'] = retryAfter
    if (err.code === 'ERR_BAD_REQUEST' || err.code === 'ERR_BODY_TOO_LARGE' || err.code === 'ERR_REQUEST_TIMEOUT') headers.connection = 'close'
    res.writeHead(status, headers)
    const head = res.req?.method === 'HEAD'
    res.end(head ? undefined : body)
    return head ? 0 : headers['content-length'] as number
  }

  /** An error page for a request no exchange took (refused before or instead of routing), logged. */
  private refuse (req: IncomingMessage, res: ServerResponse, err: ProxyError, route: string, retryAfter?: number): void {
    // A body nobody will read (no route, a 413 by Content-Length, shutting down): node:http would
    // read it to its end before the next request of the connection, however long (no request
    // timeout: gateway/server.ts), so a refused 1 GB POST was taken whole. It is dropped within the
    // exchange's bounds instead, and the socket lingers so the client reads the answer. Not with
    // `Expect: 100-continue`: no 100 was sent, the client holds its body back. Nor for a request
    // with no body (no Content-Length or 0, no Transfer-Encoding): node:http emits it before it
    // marks it complete, so `complete` alone set all this up for every refused GET, for nothing.
    const unread = declaresBody(req) && !req.complete && !req.readableDidRead && req.headers.expect === undefined
    if (unread) lingerOnClose(req)
    const bytes = this.sendError(res, err, retryAfter)
    if (unread) setImmediate(() => discardBody(req, DISCARD_MAX_BYTES, DISCARD_MAX_MS))
    this.refused(req, route, bytes < 0 ? 0 : res.statusCode, err.code, Math.max(bytes, 0))
  }

  /**
   * `request:end` for a request answered without an exchange, so the access log and metrics see
   * every response the proxy sends (nginx logs its 400s and 404s too). No backend, no head time.
   */
  private refused (req: IncomingMessage, route: string, status: number, code: ErrorCode, bytesOut: number): void {
    if (!this.events.wantsRequests) return
    this.events.requestEnd({
      id: this.nextId(),
      route,
      method: req.method ?? '',
      url: req.url ?? '',
      client: this.clientOf(req, plainAddress(req.socket.remoteAddress)).address,
      status,
      backend: '',
      headMs: -1,
      totalMs: 0,
      bytesOut,
      error: code,
      httpVersion: req.httpVersion,
      referer: req.headers.referer,
      userAgent: req.headers['user-agent'],
    })
  }

  /**
   * node:http 'clientError' listener: a request node's parser refused (bad syntax, a head over
   * `maxHeaderSize`, a head timeout) gets its status, as node's default listener would give it, and
   * a `request:end` with an empty method and URL, so the access log has it (nginx logs these too).
   */
  clientError (err: Error & { code?: string }, socket: Duplex): void {
    // A response already under way on this connection (pipelining) cannot be followed by another.
    const started = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage?.headersSent === true
    if (err.code === 'ECONNRESET' || !socket.writable || started) { socket.destroy(); return }
    const status = PARSER_STATUS[err.code ?? ''] ?? 400
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
    if (!this.events.wantsRequests) return
    const s = socket as Duplex & { remoteAddress?: string }
    this.events.requestEnd({
      id: this.nextId(), route: '', method: '', url: '', client: plainAddress(s.remoteAddress), status, backend: '', headMs: -1, totalMs: 0, bytesOut: 0,
      error: status === 408 ? 'ERR_REQUEST_TIMEOUT' : 'ERR_BAD_REQUEST',
    })
  }

  logError (ex: ProxyExchange, err: ProxyError): void {
    const level = err.status >= 500 ? 'error' : 'warn'
    this.log[level]({ code: err.code, route: ex.routeName, id: ex.id, adapter: ex.route.adapter.name, backend: err.backend, url: ex.url }, err.message)
  }

  /**
   * Backend stderr (a CGI script's pipe, FastCGI STDERR records), logged one entry per line however
   * the backend's writes or records cut it: a line in several writes is one entry, a write of three
   * lines is three. A trailing CR is dropped and blank lines are skipped (as nginx). The start of a
   * line whose newline has not come yet is held on the exchange (`stderrHeld`, null until stderr
   * arrives), at most STDERR_LINE_CAP bytes: a longer line is logged at the cap, with `…`, and the
   * rest of it is dropped up to its newline. `end`: no more of this attempt's stderr is to come
   * (the exchange or its attempt is over), so the held start is logged now.
   *
   * Bytes are capped by the adapter; lines here: a backend writing 1-byte FastCGI STDERR records
   * or short lines would otherwise make 64K log lines of one request (RELIABILITY: rate- and
   * size-limited). The adapters hand over whole UTF-8 characters, and a newline never falls inside
   * one: only the cap may, and it leaves such a character out.
   */
  stderr (ex: ProxyExchange, chunk: Buffer, end = false): void {
    if (ex.stderrLines > STDERR_LINES) return
    // The adapter's byte-cap marker: after whatever line it cut, a line of its own.
    if (chunk.length < 64 && chunk[0] === 0x5b && STDERR_TRUNCATED.test(chunk.toString('latin1'))) {
      this.stderrFlush(ex)
      this.stderrLine(ex, chunk)
      return
    }
    let from = 0
    for (let nl = chunk.indexOf(0x0a); nl !== -1 && ex.stderrLines <= STDERR_LINES; nl = chunk.indexOf(0x0a, from)) {
      const held = ex.stderrHeld
      if (held === STDERR_SKIPPING) {
        ex.stderrHeld = null
      } else if (held === null) {
        this.stderrLine(ex, chunk.subarray(from, nl))
      } else {
        ex.stderrHeld = null
        // Two bytes past the cap are enough to tell a cut line from one that ends with a CR.
        this.stderrLine(ex, Buffer.concat([held, chunk.subarray(from, Math.min(nl, from + STDERR_LINE_CAP + 2 - held.length))]))
      }
      from = nl + 1
    }
    if (ex.stderrLines > STDERR_LINES) { ex.stderrHeld = null; return }
    if (from < chunk.length && ex.stderrHeld !== STDERR_SKIPPING) {
      const held = ex.stderrHeld
      const rest = chunk.subarray(from, from + STDERR_LINE_CAP + 1 - (held?.length ?? 0))
      if ((held?.length ?? 0) + rest.length > STDERR_LINE_CAP) {
        // Past the cap with no newline yet: logged now, cut; the rest of the line is skipped.
        ex.stderrHeld = null
        this.stderrLine(ex, held === null ? rest : Buffer.concat([held, rest]), false)
        if (ex.stderrLines <= STDERR_LINES) ex.stderrHeld = STDERR_SKIPPING
      } else {
        ex.stderrHeld = stderrHold(held, rest)
      }
    }
    if (end) this.stderrFlush(ex)
  }

  /** The held start of a line is logged: the stream ended without its newline. */
  private stderrFlush (ex: ProxyExchange): void {
    const held = ex.stderrHeld
    ex.stderrHeld = null
    if (held !== null && held !== STDERR_SKIPPING) this.stderrLine(ex, held)
  }

  /**
   * One line to the log, capped: a complete one without its LF (a CR before it is dropped), or the
   * start of one (`complete` false: its end, CR or not, is still to come).
   */
  private stderrLine (ex: ProxyExchange, line: Buffer, complete = true): void {
    let len = line.length
    if (complete && len > 0 && line[len - 1] === 0x0d) len--
    if (len === 0) return
    const n = ++ex.stderrLines
    if (n > STDERR_LINES) {
      ex.stderrHeld = null
      if (n === STDERR_LINES + 1) this.log.warn({ route: ex.routeName, id: ex.id, stream: 'stderr' }, `[stderr: more than ${STDERR_LINES} lines, the rest of this request's is dropped]`)
      return
    }
    // The cap may fall inside a UTF-8 character: it is left out rather than shown as U+FFFD.
    const text = len > STDERR_LINE_CAP ? `${line.toString('utf8', 0, STDERR_LINE_CAP - incompleteUtf8Tail(line.subarray(0, STDERR_LINE_CAP)))}…` : line.toString('utf8', 0, len)
    this.log.warn({ route: ex.routeName, id: ex.id, stream: 'stderr' }, text)
  }

  /** RFC 3875 §6.2.2 local redirect: the server re-processes `location` as a new GET. */
  redirect (from: ProxyExchange, location: string): void {
    const res = from.res
    // Logged as a failed exchange is (nginx: "rewrite or internal redirection cycle"): the script
    // is at fault, and the access log alone said only 500.
    if (from.redirects + 1 > MAX_LOCAL_REDIRECTS) {
      const err = new ProxyError('ERR_REDIRECT_LOOP', `more than ${MAX_LOCAL_REDIRECTS} local redirects, the last to ${location}`)
      this.logError(from, err)
      this.refuse(from.req, res, err, from.routeName)
      return
    }
    const target = location.startsWith('/') ? parseTarget('GET', location, from.req.headers.host) : null
    const route = target === null ? null : this.router.find(target)
    // Only inside the same route: a backend may not reach another tenant's route (or anything but
    // the router: the status page is never a route).
    if (route === null || target === null || route !== from.route) {
      const err = new ProxyError('ERR_NO_ROUTE', `local redirect to ${location} leaves the route`, { phase: 'route' })
      this.logError(from, err)
      this.refuse(from.req, res, err, from.routeName)
      return
    }
    const origin = from.redirectedFrom ?? { url: from.url, path: from.path, query: from.query }
    const ex = new ProxyExchange(this, route, from.req, res, withUpstream(route, target), from.client, from.peer, from.redirects + 1, origin)
    ex.start()
  }

  // --- close ----------------------------------------------------------------------------------

  private drained: (() => void) | null = null

  /**
   * Stop admitting; let in-flight exchanges and open tunnels (WebSockets: a reload must not drop
   * them) finish for up to `graceMs`, the sweep's timeouts still running; then end whatever is left
   * — a 503 or a cut connection, tunnels destroyed — and release every backend connection. Resolves
   * soon after `graceMs` whatever the backends do: the gateway's drainTimeout bounds a stop.
   */
  close (graceMs = 30_000): Promise<void> {
    // Once: a second call (a test's teardown after the test closed) shares the first one's drain.
    this.closed ??= this.shutDown(graceMs)
    return this.closed
  }

  private closed: Promise<void> | null = null

  private async shutDown (graceMs: number): Promise<void> {
    const deadline = this.now() + graceMs
    this.closing = true
    for (const r of this.routes) r.admission.rejectAll(new ProxyError('ERR_SHUTTING_DOWN', undefined, { phase: 'admit' }))
    if (this.active.size > 0 || this.tunnels.size > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, graceMs)
        t.unref()
        this.drained = () => { clearTimeout(t); resolve() }
      })
      this.drained = null
    }
    const cut = this.active.size > 0 || this.tunnels.size > 0
    for (const tunnel of [...this.tunnels]) tunnel.destroy()
    for (const ex of this.active.values()) ex.shutDown()
    if (this.sweepTimer !== null) { clearInterval(this.sweepTimer); this.sweepTimer = null }
    this.scavenger?.stop()
    const pools = this.routes.flatMap((r) => r.authorizer !== null ? [r.pool, r.authorizer.pool] : [r.pool])
    if (cut) {
      // A graceful pool close waits for the requests on its connections, and a backend that never
      // answers would hold it forever: the grace is over, so the connections go now.
      const reason = new ProxyError('ERR_SHUTTING_DOWN', 'drain timeout')
      for (const p of pools) p.destroy(reason)
      return
    }
    // The clients are taken before close() lets go of them: an adapter whose close() never settles
    // (a bug, or a backend that never lets a connection end) has them destroyed when the grace is
    // over (CLOSE_FLOOR_MS at least, for idle connections to close cleanly), and close() resolves.
    const closing = pools.map((p) => ({ pool: p, clients: p.backends.map((b) => b.client), done: false }))
    let timer: NodeJS.Timeout | null = null
    await Promise.race([
      Promise.allSettled(closing.map((c) => c.pool.close().finally(() => { c.done = true }))),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, Math.max(CLOSE_FLOOR_MS, deadline - this.now())) }),
    ])
    if (timer !== null) clearTimeout(timer)
    const reason = new ProxyError('ERR_SHUTTING_DOWN', 'drain timeout')
    for (const c of closing) {
      if (c.done) continue
      this.log.warn({ pool: c.pool.name, adapter: this.routes.find((r) => r.pool === c.pool)?.adapter.name }, `the backend clients of pool ${c.pool.name} were still closing when the drain ended: destroyed`)
      for (const client of c.clients) client.destroy(reason)
    }
  }

  get inflight (): number { return this.active.size }
}

/** A Set that reports every delete (the upgrade path deletes a tunnel when it ends): close() waits for it to empty. */
class TunnelSet extends Set<UpgradeExchange> {
  constructor (private readonly onDelete: () => void) { super() }

  override delete (x: UpgradeExchange): boolean {
    const had = super.delete(x)
    if (had) this.onDelete()
    return had
  }
}

/**
 * Split the request-target. Absolute-form (`GET http://h/x`) routes on its authority and ignores the
 * Host header (RFC 9112 §3.2.2). Returns null for targets a proxy must not forward, among them any
 * target with a `#`: a fragment is not part of a request-target (RFC 9112 §3.2, RFC 9110 §7.1) and
 * a client must not send one; kept, it would end up in QUERY_STRING or in the path.
 */
export function parseTarget (method: string, url: string, hostHeader: string | undefined): (Target & { authority?: string }) | null {
  if (url.includes('#')) return null
  let path = url
  let host = hostHeader ?? ''
  let authority: string | undefined
  if (url.charCodeAt(0) !== 47 /* / */) {
    if (url === '*' && method === 'OPTIONS') return VALID_HOST.test(host) ? { method, url, path: '*', query: '', host: hostOnly(host) } : null
    const m = /^https?:\/\/([^/?#]*)([^#]*)$/i.exec(url)
    if (m === null) return null
    host = authority = m[1]
    path = m[2] === '' ? '/' : m[2]
    if (path.charCodeAt(0) !== 47) path = `/${path}`
  }
  // RFC 9112 §3.2: 400 for an invalid Host; userinfo (`a.example:1@b.example`) is not a host.
  if (!VALID_HOST.test(host)) return null
  const name = hostOnly(host)
  // RFC 9110 §4.2.1: an http URI with an empty host is invalid (`http:///x`, `Host: :80`); only a
  // Host left empty as a whole stands for a target without authority (RFC 9112 §3.2).
  if (name === '' && (authority !== undefined || host !== '')) return null
  const q = path.indexOf('?')
  const p = q < 0 ? path : path.slice(0, q)
  const query = q < 0 ? '' : path.slice(q + 1)
  const t = { method, url: path, path: p, query, host: name }
  return authority === undefined ? t : { ...t, authority }
}

/** uri-host [ ":" port ] (RFC 3986 §3.2.2: IP-literal or reg-name), possibly empty (HTTP/1.0). */
const VALID_HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?$/

/**
 * Absolute-form (`GET http://a.example/x`): the Host header is ignored (RFC 9112 §3.2.2), so it is
 * replaced by the target's authority, and the route, the backend's Host, X-Forwarded-Host and the
 * CGI environment all name the same host (lighttpd does the same).
 */
function adoptAuthority (req: IncomingMessage, authority: string): void {
  req.headers.host = authority
  const raw = req.rawHeaders
  let found = false
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === 4 && raw[i].toLowerCase() === 'host') { raw[i + 1] = authority; found = true }
  }
  if (!found) raw.push('Host', authority)
}

/** The target the backend sees: the route's prefix stripped for HTTP backends that map it to `/`. */
function withUpstream (route: CompiledRoute, t: Target): Target {
  if (route.adapter.capabilities.cgiEnv) return t
  const url = route.upstreamUrl(t.url)
  if (url === t.url) return t
  const q = url.indexOf('?')
  return { ...t, url, path: q < 0 ? url : url.slice(0, q) }
}

/**
 * Send `res` its 100 Continue when `req`'s body is first asked for: IncomingMessage's _read runs
 * on the first read(), resume(), 'data' or 'readable' listener and pipe, whoever the reader is
 * (undici, a FastCGI or SCGI pump, the spool, a CGI's stdin). Also when body bytes (or the end of
 * an empty body) arrive first: a client that did not wait for the 100 loses nothing by it, and
 * node:http would otherwise close its keep-alive connection. Never once the final response head
 * went out: a 100 after it would be a protocol error.
 */
function continueOnFirstRead (req: IncomingMessage, res: ServerResponse, awaiting: WeakSet<IncomingMessage>): void {
  const r = req as IncomingMessage & { _read: (n: number) => void, push: (chunk: unknown, encoding?: BufferEncoding) => boolean }
  awaiting.add(req)
  const send = (): void => {
    // Back to the prototype's methods: the hooks run once.
    delete (r as Partial<typeof r>)._read
    delete (r as Partial<typeof r>).push
    awaiting.delete(req)
    if (!res.headersSent && !res.writableEnded && !res.destroyed) res.writeContinue()
  }
  r._read = function (this: IncomingMessage, n: number): void { send(); this._read(n) }
  r.push = function (this: IncomingMessage, chunk: unknown, encoding?: BufferEncoding): boolean { send(); return this.push(chunk, encoding) }
}

/** Node's codes for a request its parser refused with something other than 400 (as its default listener answers). */
const PARSER_STATUS: Record<string, number> = { HPE_HEADER_OVERFLOW: 431, ERR_HTTP_REQUEST_TIMEOUT: 408 }

/**
 * `OPTIONS *` (RFC 9110 §9.3.7) asks about the server, not a resource: it has no origin-form an
 * HTTP backend could be sent (undici refuses it), so it is a 400 with a stable code here, as nginx
 * answers it, where it was a 502 ERR_BAD_RESPONSE that blamed the backend.
 */
function asteriskRefused (): ProxyError {
  return new ProxyError('ERR_BAD_REQUEST', 'OPTIONS * is not forwarded to an HTTP backend', { phase: 'route' })
}

function asProxyError (err: unknown): ProxyError {
  return err instanceof ProxyError ? err : new ProxyError('ERR_INTERNAL', String(err), { cause: err })
}

/** The request says a body follows: a non-zero Content-Length, or Transfer-Encoding. */
function declaresBody (req: IncomingMessage): boolean {
  const cl = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0')
}
