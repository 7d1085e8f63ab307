/**
 * `createStatus(proxy, opts)`: the status page, its JSON, the live WebSocket and Prometheus
 * metrics as one handler an embedder mounts in front of `proxy.handler`:
 *
 *   const status = createStatus(proxy, { allow: ['127.0.0.1', '10.0.0.0/8'] })
 *   http.createServer((req, res) => { if (!status.handler(req, res)) proxy.handler(req, res) })
 *     .on('upgrade', (req, sock, head) => { if (!status.upgrade(req, sock, head)) proxy.upgrade(req, sock, head) })
 *
 * It is not a route. A backend's CGI local redirect (RFC 3875 §6.2.2) is re-dispatched through the
 * proxy's router only, so `Location: /server-status` from a script reaches a backend, never this
 * page (lighttpd had to special-case mod_status for the same reason).
 *
 * Access is decided on the socket peer; forwarding headers never grant it. They can only take it
 * away: when the peer is one of `trustedProxies` (the proxy's own list), the client it forwards
 * for, resolved as the proxy resolves it, must be allowed too — or a front proxy on loopback would
 * open the loopback-only page to all of its clients.
 * The Host must be an IP literal, `localhost` or a name of `hosts` (DNS rebinding: a page on an
 * attacker's name re-resolved to 127.0.0.1 passes the peer check, and only its Host tells).
 * Paths are compared on the router's normalised path, so no other spelling of the status path can
 * slip past this page to a catch-all backend; the live view also refuses cross-site upgrades.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { isIP } from 'node:net'
import type { Duplex } from 'node:stream'
import { normalizePath } from '../core/cgi/url-path.js'
import { ConfigError, type ErrorCode } from '../core/errors.js'
import { parseTarget } from '../core/runtime.js'
import { forwardedChain, plainAddress, TrustedProxies, type ForwardedHeader } from '../core/trust.js'
import { VERSION } from '../version.js'
import { routeLabelIssue, STATUS_ROUTES } from './route-labels.js'
import { LiveView, type LiveOptions } from './live.js'
import { createMetrics, type MetricsCarry } from './metrics.js'
import { collectStatus, type StatusSnapshot, type StatusTarget } from './model.js'
import { renderPage } from './page.js'
import { StderrTail, type StderrTailOptions } from './stderr-tail.js'

/** Defaults, mirrored in docs/reference/status.md. */
export const STATUS_DEFAULTS = {
  path: '/server-status',
  metricsPath: '/metrics',
  allow: ['127.0.0.0/8', '::1'],
  hosts: [] as readonly string[],
} as const

export { STATUS_ROUTES }

export interface StatusOptions {
  /** The HTML page; JSON with `?format=json` or `Accept: application/json`; live view at `<path>/live`. */
  path?: string
  /** Prometheus text; `false` turns metrics off. */
  metricsPath?: string | false
  /**
   * Addresses or CIDRs allowed to see status and metrics; others get 403. Default: loopback only.
   * `unix:` (nginx's `allow unix:`) allows every client of a unix-socket listener, which has no
   * peer address (without it they get 403).
   */
  allow?: string[]
  /**
   * Host names (the request's Host, or the authority of an absolute-form target) the status handler
   * answers; any other Host gets 403 on the page, JSON, live view and metrics. IP literals (v4, v6
   * in brackets) and `localhost` are always answered, with any port; each name listed here is
   * answered too (case-insensitive, a trailing dot ignored, any port); `'*'` answers every Host.
   * Default: none listed. Against DNS rebinding: a page on `rebind.attacker.example`, re-resolved
   * to 127.0.0.1 by a browser on an allowed host, reaches the page from an allowed peer, and only
   * its Host names the attacker's domain (Django's ALLOWED_HOSTS, Vite's `server.allowedHosts`).
   * A request without Host (HTTP/1.0, never a browser) is answered.
   */
  hosts?: string[]
  /**
   * The proxy's `trustedProxies` (and `forwardedHeader`). A request whose socket peer is one of
   * them is let in only when the peer AND the client it forwards for (resolved as the proxy does:
   * the header walked right to left past trusted hops) are both in `allow`. Without it every client
   * of a front proxy on an allowed address (nginx on 127.0.0.1) would see the page.
   */
  trustedProxies?: readonly string[]
  forwardedHeader?: ForwardedHeader
  /** Page title. */
  title?: string
  live?: LiveOptions | false
  stderrTail?: StderrTailOptions
  /**
   * The status of the proxy this one replaces (a config reload builds a new proxy whose route and
   * backend counters start at zero): its metric totals carry over, so no counter series goes down.
   * Its metrics stop counting from here on.
   */
  previous?: StatusHandler
}

export interface StatusHandler {
  /** Returns true when the request was for status (and was answered); false: pass it on. */
  handler (req: IncomingMessage, res: ServerResponse): boolean
  /** node:http 'upgrade' for the live view; false when the upgrade is not for status. */
  upgrade (req: IncomingMessage, socket: Duplex, head: Buffer): boolean
  /** The current snapshot (what the JSON endpoint serves). */
  snapshot (): StatusSnapshot
  /** Stop timers, close live clients, stop listening to the proxy. */
  close (): Promise<void>
}

/** The `allow` entry for every peer of a unix-socket listener (nginx: `allow unix:`). */
export const UNIX_PEERS = 'unix:'

/** How a status hands its metric totals to the one that replaces it (`previous`); not public API. */
const handOvers = new WeakMap<StatusHandler, () => MetricsCarry | undefined>()

/**
 * Throws ConfigError (ERR_CONFIG) for paths `proxycore check` refuses in the file: `path` or
 * `metricsPath` not a path the router can match, or a `metricsPath` that would hide the status page
 * or its live view (compared normalised and without a trailing `/`, as requests are). The issue
 * paths are the option names (`/path`, `/metricsPath`); the file's are `/status/...`. Also for a
 * route of `proxy` named like one of STATUS_ROUTES (`metrics` only with metrics on), or whose name
 * has a lone surrogate, at `/routes/<index>/name`, as `proxycore check` reports it in a file.
 */
export function createStatus (proxy: StatusTarget, opts: StatusOptions = {}): StatusHandler {
  const path = statusPath('/path', opts.path ?? STATUS_DEFAULTS.path, 'a path like /server-status')
  const livePath = `${path}/live`
  const rawMetrics = opts.metricsPath ?? STATUS_DEFAULTS.metricsPath
  const metricsPath = rawMetrics === false ? null : statusPath('/metricsPath', rawMetrics, 'a path like /proxycore-metrics, or false')
  if (metricsPath === path || metricsPath === livePath) {
    throw new ConfigError([{
      path: '/metricsPath',
      message: `metricsPath ${JSON.stringify(rawMetrics)} would hide the status ${metricsPath === path ? 'page' : 'live view'} at ${metricsPath}`,
      found: rawMetrics,
      expected: `a path other than ${path} and ${livePath}, or false`,
    }])
  }
  // A route named like one of this handler's labels would share its access log lines and series;
  // one with a lone surrogate is U+FFFD in the UTF-8 page and metrics (two such, one label).
  // `proxycore check` says the same of a file (src/config/check.ts).
  const nameIssues = proxy.routes.flatMap((r, i) => routeLabelIssue(r.name, i, { metrics: metricsPath !== null }) ?? [])
  if (nameIssues.length > 0) throw new ConfigError(nameIssues)
  const allowList: readonly string[] = opts.allow ?? STATUS_DEFAULTS.allow
  const allow = new TrustedProxies(allowList.filter((a) => a !== UNIX_PEERS))
  const allowUnix = allowList.includes(UNIX_PEERS)
  const hostAllowed = hostCheck(opts.hosts ?? STATUS_DEFAULTS.hosts)
  let trust: TrustedProxies
  try {
    trust = new TrustedProxies(opts.trustedProxies ?? [], opts.forwardedHeader ?? 'x-forwarded-for')
  } catch (err) {
    throw new ConfigError([{ path: '/trustedProxies', message: (err as Error).message, found: opts.trustedProxies, expected: 'IP addresses or CIDRs' }])
  }
  const startedAt = Date.now()
  const software = `proxycore/${VERSION}`
  const tail = new StderrTail(opts.stderrTail)
  if (proxy.spawns) tail.attach(proxy.spawns)
  const snapshot = (): StatusSnapshot => collectStatus(proxy, { software, startedAt, stderr: tail })
  const carried = opts.previous === undefined ? undefined : handOvers.get(opts.previous)?.()
  const metrics = metricsPath === null ? null : createMetrics(proxy, snapshot, carried)
  const live = opts.live === false ? null : new LiveView(proxy, snapshot, opts.live)

  const allowed = (req: IncomingMessage): boolean => {
    const peer = req.socket.remoteAddress
    // A unix-socket listener's peers have no address: only `unix:` lets them in.
    if (peer === undefined) return allowUnix
    const address = plainAddress(peer)
    if (!allow.has(address)) return false
    if (trust.empty || !trust.has(address)) return true
    // A trusted front proxy: the client it forwards for must be allowed too (itself when it forwards none).
    const h = req.headers
    return allow.has(trust.resolve(address, forwardedChain(h['x-forwarded-for'] as string | undefined, h.forwarded, trust.header)))
  }

  /**
   * The client as the proxy logs it: the socket peer, or behind one of `trustedProxies` the client
   * it forwards for (the header walked right to left past trusted hops). '' for a unix-socket peer.
   */
  const clientOf = (req: IncomingMessage): string => {
    const peer = plainAddress(req.socket.remoteAddress)
    if (peer === '' || trust.empty || !trust.has(peer)) return peer
    const h = req.headers
    return trust.resolve(peer, forwardedChain(h['x-forwarded-for'] as string | undefined, h.forwarded, trust.header))
  }

  /**
   * A `request:end` on the proxy's events for a request this handler answered, so the access log
   * (and every other listener: metrics, diagnostics_channel) sees it like any other request. Its
   * `id` is 0: no proxy exchange carried it.
   */
  const ended = (req: IncomingMessage, route: string, client: string, startedAt: number, status: number, bytesOut: number, error: ErrorCode | null): void => {
    if (!proxy.events.wantsRequests) return
    proxy.events.requestEnd({
      id: 0,
      route,
      method: req.method ?? '',
      url: req.url ?? '',
      client,
      status,
      backend: '',
      headMs: -1,
      totalMs: Date.now() - startedAt,
      bytesOut,
      error,
      httpVersion: req.httpVersion,
      referer: req.headers.referer,
      userAgent: req.headers['user-agent'],
    })
  }

  const handler = (req: IncomingMessage, res: ServerResponse): boolean => {
    const t = targetOf(req)
    if (t === null) return false
    const p = t.path
    const isPage = p === path
    const isMetrics = metricsPath !== null && p === metricsPath
    if (!isPage && !isMetrics && p !== livePath) return false
    const startedAt = Date.now()
    // Logged once the response is over (or the client went away): read what it needs now, the
    // socket's address is gone after a close.
    const client = clientOf(req)
    let bytes = 0
    let error: ErrorCode | null = null
    res.once('close', () => {
      const done = res.writableFinished
      ended(req, isMetrics ? STATUS_ROUTES.metrics : STATUS_ROUTES.page, client, startedAt,
        done ? res.statusCode : 499, done ? bytes : 0, done ? error : 'ERR_CLIENT_ABORTED')
    })
    const answer = (status: number, type: string, body: string, extra?: Record<string, string>, code: ErrorCode | null = null): void => {
      error = code
      bytes = send(res, status, type, body, extra)
    }
    if (!allowed(req)) { answer(403, 'text/plain; charset=utf-8', '403 Forbidden\n'); return true }
    if (!hostAllowed(t.host)) { answer(403, 'text/plain; charset=utf-8', '403 Forbidden\nHost not in status.hosts\n'); return true }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      answer(405, 'text/plain; charset=utf-8', '405 Method Not Allowed\n', { allow: 'GET, HEAD' })
      return true
    }
    if (p === livePath) { answer(426, 'text/plain; charset=utf-8', '426 Upgrade Required\n', { upgrade: 'websocket' }); return true }
    if (isMetrics && metrics !== null) {
      metrics.render().then(
        (text) => answer(200, metrics.registry.contentType, text),
        (err: unknown) => answer(500, 'text/plain; charset=utf-8', `500 metrics failed: ${String(err)}\n`, undefined, 'ERR_INTERNAL'),
      )
      return true
    }
    const format = formatOf(t.query)
    if (format === undefined) {
      answer(400, 'text/plain; charset=utf-8', '400 Bad Request\nERR_BAD_REQUEST\nformat must be json or html\n', undefined, 'ERR_BAD_REQUEST')
      return true
    }
    const s = snapshot()
    if (format === 'json' || (format === null && wantsJson(req.headers.accept))) {
      answer(200, 'application/json; charset=utf-8', JSON.stringify(s, null, 2) + '\n', { vary: 'Accept' })
      return true
    }
    const page = renderPage(s, { ...(opts.title !== undefined ? { title: opts.title } : {}), live: live !== null })
    answer(200, 'text/html; charset=utf-8', page.html, { vary: 'Accept', 'content-security-policy': page.csp })
    return true
  }

  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): boolean => {
    const t = targetOf(req)
    if (t === null || t.path !== livePath) return false
    const startedAt = Date.now()
    const client = clientOf(req)
    const refuse = (status: number, text: string, extra = ''): void => {
      socket.end(`HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n${extra}\r\n`)
      ended(req, STATUS_ROUTES.page, client, startedAt, status, 0, null)
    }
    if (!allowed(req) || !hostAllowed(t.host) || crossSite(req, t.host)) refuse(403, 'Forbidden')
    else if (live === null) refuse(404, 'Not Found')
    else if (live.full) refuse(503, 'Service Unavailable', 'retry-after: 5\r\n')
    else {
      // Logged when the view ends, as the proxy logs a tunnel: 101, and what it sent after the handshake.
      const written = (): number => (socket as Duplex & { bytesWritten?: number }).bytesWritten ?? 0
      let opened: number | null = null
      socket.once('close', () => {
        if (opened !== null) ended(req, STATUS_ROUTES.page, client, startedAt, 101, Math.max(0, written() - opened), null)
        // Refused by ws before the 101 (it wrote its answer): 405 for a method other than GET, 400
        // for a malformed handshake. Nothing written: the client went away first.
        else if (written() > 0) ended(req, STATUS_ROUTES.page, client, startedAt, req.method !== 'GET' ? 405 : 400, 0, 'ERR_BAD_REQUEST')
        else ended(req, STATUS_ROUTES.page, client, startedAt, 499, 0, 'ERR_CLIENT_ABORTED')
      })
      live.accept(req, socket, head, () => { opened = written() })
    }
    return true
  }

  const self: StatusHandler = {
    handler,
    upgrade,
    snapshot,
    async close () {
      tail.detach()
      metrics?.close()
      await live?.close()
    },
  }
  // Metrics turned off here: whatever this status was handed passes on unchanged.
  handOvers.set(self, () => metrics?.handOver() ?? carried)
  return self
}

/**
 * The path and query the status paths are compared on: the router's (`normalizePath` of the path,
 * or of the path of an absolute-form target), as nginx matches locations on the normalised URI.
 * On the raw URL, `//server-status`, `/%73erver-status`, `/server-status/../server-status` or
 * `GET http://h/server-status` would pass this page by and reach a catch-all backend as
 * `/server-status` — where a backend's own loopback-only status page (php-fpm, mod_status behind
 * the proxy) sees the proxy's 127.0.0.1. null: a target the router refuses too (it answers 400).
 */
function targetOf (req: IncomingMessage): { path: string, query: string, host: string | undefined } | null {
  const url = req.url ?? '/'
  let path = url
  let query = ''
  let host = req.headers.host
  if (url.charCodeAt(0) === 47 /* / */) {
    // Origin form, nearly every request (this runs before each one in `serve`): no full parse;
    // normalizePath returns an already normal path as it is.
    const q = url.indexOf('?')
    if (q >= 0) { path = url.slice(0, q); query = url.slice(q + 1) }
  } else {
    const t = parseTarget(req.method ?? 'GET', url, host)
    if (t === null) return null
    path = t.path
    query = t.query
    host = t.authority ?? host
  }
  try { path = trimSlash(normalizePath(path)) } catch { return null }
  return { path, query, host }
}

/**
 * The `hosts` check: (host header or authority) => answered. IP literals and `localhost` always
 * are (a browser sends them only for a page loaded from that address: no rebinding), listed names
 * case-insensitively without a trailing dot, any port; `*` every Host. A Host that is no
 * `name[:port]` or `[v6][:port]` (`a:b:c`, a bare `::1`) is refused unless `*`. undefined (HTTP/1.0
 * without Host, never a browser): answered. Throws ConfigError at `/hosts/<i>` for an entry that is
 * no host name (a port, a scheme, a space).
 */
function hostCheck (hosts: readonly unknown[]): (host: string | undefined) => boolean {
  if (!Array.isArray(hosts)) throw new ConfigError([{ path: '/hosts', message: 'hosts must be a list of host names', found: hosts, expected: "host names, or ['*']" }])
  const names = new Set<string>()
  let any = false
  hosts.forEach((h: unknown, i) => {
    if (h === '*') { any = true; return }
    // As the schema's pattern: a name, or an IPv6 literal in brackets (IP literals are answered anyway).
    if (typeof h !== 'string' || !/^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])$/.test(h) || (h.startsWith('[') && isIP(h.slice(1, -1)) !== 6)) {
      throw new ConfigError([{ path: `/hosts/${i}`, message: 'hosts entry is not a host name (no scheme, port or path)', found: h, expected: "a host name like status.example, or '*'" }])
    }
    names.add(h.toLowerCase().replace(/\.$/, ''))
  })
  return (host) => {
    if (any || host === undefined) return true
    const m = /^(?:\[([^\]]*)\]|([^:[\]]*))(?::\d*)?$/.exec(host)
    if (m === null) return false
    if (m[1] !== undefined) return isIP(m[1]) === 6
    const name = m[2].toLowerCase().replace(/\.$/, '')
    return name !== '' && (isIP(name) === 4 || name === 'localhost' || names.has(name))
  }
}

/**
 * Cross-site WebSocket hijacking: a page from any site, opened in a browser on an allowed host, can
 * open `ws://127.0.0.1/…/live`, and the peer check alone would hand it every snapshot. Browsers send
 * the page's Origin (RFC 6455 §4.1, §10.2); unless its host[:port] is the request's own Host the
 * upgrade is refused. No Origin: not a browser, nothing to hijack.
 */
function crossSite (req: IncomingMessage, host: string | undefined): boolean {
  // Sec-WebSocket-Origin: protocol version 8 (hybi-10), which ws still accepts.
  const origin = req.headers.origin ?? (req.headers['sec-websocket-origin'] as string | undefined)
  if (origin === undefined) return false
  if (host === undefined) return true
  let u: URL
  try { u = new URL(origin) } catch { return true } // `null` (sandboxed, file:) and garbage
  const h = host.toLowerCase()
  const defaultPort = u.protocol === 'https:' ? ':443' : u.protocol === 'http:' ? ':80' : null
  // URL drops the scheme's default port; a Host header may spell it out.
  return u.host !== (defaultPort !== null && h.endsWith(defaultPort) ? h.slice(0, -defaultPort.length) : h)
}

/** An option path as requests are compared to it (normalised, no trailing `/`); ERR_CONFIG when the router could never match it. */
function statusPath (at: string, raw: unknown, expected: string): string {
  let why: string | null = null
  let p = ''
  if (typeof raw !== 'string' || !raw.startsWith('/')) why = 'must be a string starting with /'
  else {
    try { p = trimSlash(normalizePath(raw)) } catch (err) { why = `not a path the router can match: ${(err as Error).message}` }
  }
  if (why !== null) throw new ConfigError([{ path: at, message: `${at.slice(1)} ${why}`, found: raw, expected }])
  return p
}

function trimSlash (p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p
}

/**
 * The `format` query parameter: `json` or `html` (any case), null when absent, undefined when it is
 * anything else — a typo, `xml`, `prometheus` (that is the metrics path), an empty value, or two
 * different values. Those get a 400 rather than a page the caller did not ask for and cannot parse.
 */
function formatOf (query: string): 'json' | 'html' | null | undefined {
  if (query === '') return null
  const values = new URLSearchParams(query).getAll('format')
  if (values.length === 0) return null
  const first = values[0].toLowerCase()
  if (first !== 'json' && first !== 'html') return undefined
  return values.every((v) => v.toLowerCase() === first) ? first : undefined
}

/** Without `?format`: JSON when the client prefers it to HTML (curl -H 'Accept: application/json'). */
function wantsJson (accept: string | undefined): boolean {
  if (accept === undefined) return false
  const a = accept.toLowerCase()
  return a.includes('application/json') && !a.includes('text/html')
}

/** Answer with `body` (none for HEAD); returns the body bytes written, as the access log counts them. */
function send (res: ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}): number {
  const headers: Record<string, string | number> = {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...extra,
  }
  res.writeHead(status, headers)
  if (res.req?.method === 'HEAD') { res.end(); return 0 }
  res.end(body)
  return headers['content-length'] as number
}
