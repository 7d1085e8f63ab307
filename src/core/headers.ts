/**
 * Header hygiene, both directions.
 *
 * Request: close the framing gaps Node's parser leaves open (RELIABILITY §2.6, rule 9), strip
 * hop-by-hop and Connection-listed fields FIRST, then add our own X-Forwarded-* / Forwarded / Via
 * (RFC 9110 §7.6.1; a client must not be able to make us strip what we add).
 * Response: strip hop-by-hop and Connection-listed fields, rewrite Location and Set-Cookie for
 * prefix-mapped routes, refuse statuses outside 100–599.
 */
import type { IncomingMessage } from 'node:http'
import { ProxyError } from './errors.js'
import { hostOnly } from './router.js'
import type { ClientInfo, RawHeaders } from './types.js'

/** RFC 9110 §7.6.1 + the fields it says intermediaries SHOULD remove. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'trailer',
])

/**
 * `name` is `lower` (a lower-case ASCII field name) in any case: what `name.toLowerCase() ===
 * lower` says, without making the lower-case copy (one string per field and pass on the hot path).
 * A name with a non-ASCII character is compared through toLowerCase itself (U+212A KELVIN SIGN
 * lowercases to `k`), so every answer is toLowerCase's.
 */
export function sameName (name: string, lower: string): boolean {
  const n = lower.length
  if (name.length !== n) return false
  for (let i = 0; i < n; i++) {
    const c = name.charCodeAt(i)
    const l = lower.charCodeAt(i)
    if (c === l || (c === l - 32 && l >= 97 && l <= 122)) continue
    return c > 127 ? name.toLowerCase() === lower : false
  }
  return true
}

/** `HOP_BY_HOP.has(name.toLowerCase())`, without the copy: only a name of one of their lengths is compared. */
export function isHopByHop (name: string): boolean {
  switch (name.length) {
    case 2: return sameName(name, 'te')
    case 7: return sameName(name, 'upgrade') || sameName(name, 'trailer')
    case 10: return sameName(name, 'connection') || sameName(name, 'keep-alive')
    case 16: return sameName(name, 'proxy-connection')
    case 17: return sameName(name, 'transfer-encoding')
    default: return false
  }
}

/** Fields a request may carry only once (RFC 9112 §3.2 for Host; lighttpd also 400s these). */
const SINGLETON_REQUEST = new Set(['host', 'authorization', 'proxy-authorization', 'content-type', 'content-length'])

/**
 * Whether node runs with `--insecure-http-parser` (on the command line or in NODE_OPTIONS): every
 * server made without `insecureHTTPParser: false` then parses requests leniently. createProxy
 * refuses to start (RELIABILITY: the llhttp lenient flags expose the backends to smuggling).
 */
export function insecureParserFlag (argv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): boolean {
  // NODE_OPTIONS may quote its arguments ("--import=…" "--insecure-http-parser"), as tools that
  // add their own options to a child's do.
  return argv.includes('--insecure-http-parser') || /(?:^|[\s"])--insecure-http-parser(?:$|[\s"])/.test(nodeOptions)
}

/** Header lines a request may have: node:http's own cap (2000 raw entries, 1000 lines) or the server's. */
export const MAX_HEADER_LINES = 1000

function headerLineCap (req: IncomingMessage): number {
  const m = (req.socket as { server?: { maxHeadersCount?: number | null } } | null)?.server?.maxHeadersCount
  return typeof m === 'number' && m > 0 ? Math.min(m, MAX_HEADER_LINES) : MAX_HEADER_LINES
}

/**
 * Reject what Node accepts but an intermediary must not forward. Returns null when fine.
 * Also tells whether the connection must be closed after the response.
 */
export function checkRequestFraming (req: IncomingMessage): ProxyError | null {
  // An embedder's server made with `insecureHTTPParser: true` (net.Server sets socket.server):
  // every request is refused, loudly, rather than forwarded from a parser that allows smuggling.
  if ((req.socket as { server?: { insecureHTTPParser?: boolean } }).server?.insecureHTTPParser === true) {
    return new ProxyError('ERR_INSECURE_PARSER', 'the server was created with insecureHTTPParser: true', { phase: 'route' })
  }
  const raw = req.rawHeaders
  // node:http keeps the first ~1000 header lines (fewer with server.maxHeadersCount) and drops the
  // rest without a word, Content-Length and Transfer-Encoding included: a request at the cap may
  // have lost its framing, so it is refused, never forwarded short of its body.
  if (raw.length >= 2 * headerLineCap(req)) {
    return new ProxyError('ERR_TOO_MANY_HEADERS', `${raw.length / 2} header lines`, { phase: 'route' })
  }
  let seen = 0
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase()
    if (!SINGLETON_REQUEST.has(name)) continue
    const bit = name === 'host' ? 1 : name === 'authorization' ? 2 : name === 'proxy-authorization' ? 4 : name === 'content-type' ? 8 : 16
    if (seen & bit) return new ProxyError('ERR_BAD_REQUEST', `duplicate ${name} header`, { phase: 'route' })
    seen |= bit
  }
  const te = req.headers['transfer-encoding']
  if (te !== undefined) {
    // RFC 9112 §6.1: both framings is the smuggling shape and "ought to be handled as an error".
    // node's strict parser 400s it itself; a server made with `insecureHTTPParser` (or a process
    // run with --insecure-http-parser) hands it over, and the client's Content-Length would then
    // reach the backend in front of a de-chunked body of another length.
    if (req.headers['content-length'] !== undefined) {
      return new ProxyError('ERR_BAD_REQUEST', 'both Transfer-Encoding and Content-Length', { phase: 'route' })
    }
    // RFC 9112 §6.1: Transfer-Encoding on HTTP/1.0 means faulty framing.
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) {
      return new ProxyError('ERR_BAD_REQUEST', 'Transfer-Encoding in an HTTP/1.0 request', { phase: 'route' })
    }
    if (te.trim().toLowerCase() !== 'chunked') {
      // RFC 9112 §6.3: chunked not the final coding, the body's length cannot be known: 400.
      const codings = te.split(',')
      if ((codings[codings.length - 1] ?? '').trim().toLowerCase() !== 'chunked') {
        return new ProxyError('ERR_BAD_REQUEST', `Transfer-Encoding ${JSON.stringify(te)} does not end with chunked`, { phase: 'route' })
      }
      // Node de-chunks `gzip, chunked` but leaves the gzip coding: nothing downstream can take it
      // (CGI cannot, RFC 3875 §4.2). RFC 9112 §6.1: a server that does not understand a transfer
      // coding SHOULD answer 501, as nginx does ("unknown Transfer-Encoding").
      return new ProxyError('ERR_UNSUPPORTED_TRANSFER_CODING', `Transfer-Encoding ${JSON.stringify(te)}`, { phase: 'route' })
    }
  }
  return null
}

/** Names listed in `Connection` (lower-case), excluding `close`/`keep-alive` semantics. */
export function connectionListed (value: string | string[] | undefined): Set<string> | null {
  if (value === undefined) return null
  // The common case lists no field name at all: no split, no Set (hot path, twice per request).
  if (typeof value === 'string' && value.length <= 10) {
    const v = value.toLowerCase()
    if (v === 'keep-alive' || v === 'close' || v === 'upgrade') return null
  }
  const text = Array.isArray(value) ? value.join(',') : value
  let out: Set<string> | null = null
  for (const part of text.split(',')) {
    const name = part.trim().toLowerCase()
    // Host is for every hop (RFC 9112 §3.2): a client listing it does not take it away from the
    // backend (an HTTP one got its own address instead and picked its default vhost; a CGI-family
    // one lost HTTP_HOST).
    if (name.length === 0 || name === 'host') continue
    if (out === null) out = new Set()
    out.add(name)
  }
  return out
}

export interface ForwardOptions {
  /** 'preserve' keeps the client's Host; 'backend' lets the client library use the backend address; any other string is sent as is. */
  host: string
  xForwarded: boolean
  /** Add an RFC 7239 Forwarded element. */
  forwarded: boolean
  /**
   * Add `Via: <protocol> <via>`, and refuse a request whose Via already names `via` (a loop,
   * 508 ERR_LOOP_DETECTED); '' = no Via and no check. createProxy gives an `http` route without
   * its own a random pseudonym per proxy instance (src/proxy.ts).
   */
  via: string
  /**
   * The peer is a trusted proxy: keep its X-Forwarded-Proto/Host instead of replacing them, its
   * X-Real-IP, X-Forwarded-Port/-Prefix/-Server instead of dropping them (with xForwarded), and
   * its Forwarded elements ahead of ours instead of dropping them (with forwarded).
   */
  peerTrusted: boolean
}

/**
 * Headers for an HTTP backend from the client's raw headers: drop hop-by-hop, Connection-listed,
 * Expect (the proxy answers 100-continue itself), names with an underscore, the X-Forwarded-*
 * we set and, from an untrusted peer, the forwarding fields a front proxy would have set; then add
 * ours.
 */
export function forwardRequestHeaders (req: IncomingMessage, client: ClientInfo, peer: string, opts: ForwardOptions, keepUpgrade: boolean): RawHeaders {
  const raw = req.rawHeaders
  const listed = connectionListed(req.headers.connection)
  const out: string[] = []
  let xff: string | null = null
  let fwd: string | null = null
  let via: string | null = null
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]
    // nginx `underscores_in_headers off`: WSGI, Rack, PHP and CGI-style backends fold `_` and `-`
    // into one HTTP_X_FORWARDED_HOST, so `X_Forwarded_Host` would undo the replacement below.
    if (name.includes('_')) continue
    if (isHopByHop(name)) continue
    if (listed !== null && listed.has(name.toLowerCase())) continue
    switch (forwardingField(name)) {
      case 'expect': continue
      case 'host':
        if (opts.host === 'preserve') out.push(name, raw[i + 1])
        continue
      case 'x-forwarded-for':
        if (opts.xForwarded) { xff = xff === null ? raw[i + 1] : `${xff}, ${raw[i + 1]}`; continue }
        break
      case 'x-forwarded-proto':
      case 'x-forwarded-host':
      // Not set by proxycore, but read by backends as a front proxy's (nginx's X-Real-IP, Traefik's
      // X-Forwarded-Port/-Server, Spring's and Symfony's X-Forwarded-Prefix): from an untrusted
      // peer they are the client's own words, dropped (Traefik drops its own from such a peer).
      case 'x-real-ip':
      case 'x-forwarded-port':
      case 'x-forwarded-prefix':
      case 'x-forwarded-server':
        if (opts.xForwarded && !opts.peerTrusted) continue
        break
      case 'forwarded':
        // An untrusted peer's elements are dropped, ours alone is sent: their `proto=` and `host=`
        // would stand before ours, and a backend reading the first element (Spring) would take a
        // client's word, as X-Forwarded-Proto/Host would be taken were they not replaced.
        if (opts.forwarded) {
          if (opts.peerTrusted) fwd = fwd === null ? raw[i + 1] : `${fwd}, ${raw[i + 1]}`
          continue
        }
        break
      case 'via':
        if (opts.via !== '') {
          // Our own pseudonym in it: the request went round through this proxy (a route whose
          // backend leads back here). Refused before a backend connection is opened, or each
          // round opens one more until timeouts.headers. An upgrade's loop is refused before its
          // exchange is made (runtime.ts upgrade): its headers are built in a constructor.
          if (!keepUpgrade && viaCarries(raw[i + 1], opts.via)) throw new ProxyError('ERR_LOOP_DETECTED', `Via names this proxy (${opts.via})`, { phase: 'route' })
          via = via === null ? raw[i + 1] : `${via}, ${raw[i + 1]}`
          continue
        }
        break
    }
    out.push(name, raw[i + 1])
  }
  if (opts.host !== 'preserve' && opts.host !== 'backend') out.push('host', opts.host)
  if (keepUpgrade) {
    const upgrade = req.headers.upgrade
    if (upgrade !== undefined) out.push('connection', 'upgrade', 'upgrade', upgrade)
  }
  if (opts.xForwarded) {
    const node = peer === '' ? UNIX_PEER : peer
    out.push('x-forwarded-for', xff === null ? node : `${xff}, ${node}`)
    if (!opts.peerTrusted || req.headers['x-forwarded-proto'] === undefined) out.push('x-forwarded-proto', client.secure ? 'https' : 'http')
    if ((!opts.peerTrusted || req.headers['x-forwarded-host'] === undefined) && req.headers.host !== undefined) out.push('x-forwarded-host', req.headers.host)
  }
  if (opts.forwarded) {
    const element = `for=${forwardedNode(peer)};proto=${client.secure ? 'https' : 'http'}${req.headers.host ? `;host=${quoteIfNeeded(req.headers.host)}` : ''}`
    out.push('forwarded', fwd === null ? element : `${fwd}, ${element}`)
  }
  if (opts.via !== '') {
    const element = `${req.httpVersion} ${opts.via}`
    out.push('via', via === null ? element : `${via}, ${element}`)
  }
  return out
}

/**
 * Whether a Via field value has an element whose received-by is `pseudonym` (RFC 9110 §7.6.3:
 * `received-protocol RWS received-by [ RWS comment ]`, comma-separated), compared as a host name,
 * in any case. Only the second word of an element counts: `1.1 edge-1` does, `1.1 edge-10` and
 * `1.1 other (edge-1)` do not. One pass over the value, no copy of it: a client's long Via costs
 * its length once.
 */
export function viaCarries (value: string, pseudonym: string): boolean {
  const n = value.length
  const want = pseudonym.toLowerCase()
  let i = 0
  while (i < n) {
    // The element's start: skip OWS and empty list elements.
    while (i < n && (value[i] === ' ' || value[i] === '\t' || value[i] === ',')) i++
    // received-protocol
    while (i < n && value[i] !== ' ' && value[i] !== '\t' && value[i] !== ',') i++
    while (i < n && (value[i] === ' ' || value[i] === '\t')) i++
    // received-by
    const from = i
    while (i < n && value[i] !== ' ' && value[i] !== '\t' && value[i] !== ',') i++
    if (i - from === want.length && value.slice(from, i).toLowerCase() === want) return true
    // The rest of the element (a comment) up to the next comma.
    while (i < n && value[i] !== ',') i++
  }
  return false
}

/**
 * The lower-case name of a request field forwardRequestHeaders treats apart (Expect, Host, and the
 * ones the proxy adds itself), or null for any other: found by length, no lower-case copy.
 */
function forwardingField (name: string): string | null {
  switch (name.length) {
    case 3: return sameName(name, 'via') ? 'via' : null
    case 4: return sameName(name, 'host') ? 'host' : null
    case 6: return sameName(name, 'expect') ? 'expect' : null
    case 9: return sameName(name, 'forwarded') ? 'forwarded' : sameName(name, 'x-real-ip') ? 'x-real-ip' : null
    case 15: return sameName(name, 'x-forwarded-for') ? 'x-forwarded-for' : null
    case 16: return sameName(name, 'x-forwarded-host') ? 'x-forwarded-host' : sameName(name, 'x-forwarded-port') ? 'x-forwarded-port' : null
    case 17: return sameName(name, 'x-forwarded-proto') ? 'x-forwarded-proto' : null
    case 18: return sameName(name, 'x-forwarded-prefix') ? 'x-forwarded-prefix' : sameName(name, 'x-forwarded-server') ? 'x-forwarded-server' : null
    default: return null
  }
}

/**
 * The X-Forwarded-For entry for a client of a unix-socket listener, which has no address (`peer`
 * ''): what nginx writes there (`$remote_addr` is `unix:`). Left empty, the entry the proxy appends
 * was missing (`X-Forwarded-For: 1.2.3.4, `), and a backend that drops empty list elements (Rails'
 * `split(/[,\s]+/)`) took the client's own `1.2.3.4` for the address the proxy saw.
 */
const UNIX_PEER = 'unix:'

/**
 * RFC 7239 §6: IPv6 nodes are quoted and bracketed; a peer without an address (a unix-socket
 * listener's) is `unknown` (§6.3): `for=` with an empty value is not valid syntax.
 */
function forwardedNode (addr: string): string {
  if (addr === '') return 'unknown'
  return addr.includes(':') ? `"[${addr}]"` : addr
}

function quoteIfNeeded (v: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`
}

export interface ResponseRewrite {
  /** Client-facing prefix of a prefix-mapped route (`/app/`), or null. */
  prefix: string | null
  /** Backend-side prefix the client prefix maps onto (`/`). */
  upstreamPrefix: string
  /** Host:port the backend may use in absolute Location URLs (its own address, or the Host sent). */
  backendAuthorities: readonly string[]
  /** Domain the client used (for Set-Cookie Domain rewrite). */
  clientHost: string
  via: string
}

/**
 * Response headers for the client: drop hop-by-hop and Connection-listed fields (a 101 keeps
 * Connection/Upgrade, as nginx does; a 426 keeps Upgrade), rewrite Location and Set-Cookie for prefix-mapped routes.
 * With `cgiLocation`, a CGI-family head, an empty Location throws ERR_BAD_RESPONSE_HEADER:
 * RFC 3875 §6.3.2 wants a local path or an absolute URI, and php-cgi's `header('Location: ')`
 * sends an empty one with a 302. An HTTP backend's passes: RFC 9110 §10.2.2 makes it a
 * URI-reference, and the empty one is valid (nginx passes it). Checked in this one walk.
 */
export function filterResponseHeaders (raw: RawHeaders, status: number, rw: ResponseRewrite | null, httpVersion: string, cgiLocation = false): RawHeaders {
  // No lower-case copy of a name unless `Connection` listed field names (rare): the names looked
  // for are found by their length first (sameName, isHopByHop).
  let listed: Set<string> | null = null
  for (let i = 0; i < raw.length; i += 2) {
    if (sameName(raw[i], 'connection')) {
      const l = connectionListed(raw[i + 1])
      if (l !== null) { listed ??= new Set(); for (const n of l) listed.add(n) }
    }
  }
  const out: string[] = []
  let via: string | null = null
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]
    // RFC 9110 §15.5.22: a 426 MUST carry Upgrade (the protocols to switch to), as nginx passes it;
    // only a 101 switches, so it opens no tunnel anywhere. Any other status loses it.
    if (status !== 101 && !(status === 426 && sameName(name, 'upgrade'))) {
      if (isHopByHop(name)) continue
      if (listed !== null && listed.has(name.toLowerCase())) continue
    }
    // RFC 9110 §8.6: a 204 MUST NOT carry Content-Length, and node:http would send the backend's.
    if (status === 204 && sameName(name, 'content-length')) continue
    let value = raw[i + 1]
    if (sameName(name, 'location')) {
      if (cgiLocation && value.trim() === '') throw new ProxyError('ERR_BAD_RESPONSE_HEADER', 'empty Location (RFC 3875 §6.3.2: a local path or an absolute URI)', { phase: 'head' })
      if (rw !== null) value = rewriteLocation(value, rw)
    } else if (rw !== null) {
      if (sameName(name, 'content-location')) value = rewriteLocation(value, rw)
      else if (sameName(name, 'set-cookie')) value = rewriteCookie(value, rw)
      else if (rw.via !== '' && sameName(name, 'via')) { via = via === null ? value : `${via}, ${value}`; continue }
    }
    out.push(name, value)
  }
  if (rw !== null && rw.via !== '') out.push('via', via === null ? `${httpVersion} ${rw.via}` : `${via}, ${httpVersion} ${rw.via}`)
  return out
}

function rewriteLocation (value: string, rw: ResponseRewrite): string {
  if (rw.prefix === null) return value
  let path = value
  if (!value.startsWith('/')) {
    // Absolute URL pointing at the backend itself: make it relative to the client's view.
    const m = /^https?:\/\/([^/?#]+)(.*)$/i.exec(value)
    if (m === null || !rw.backendAuthorities.includes(m[1].toLowerCase())) return value
    path = m[2] === '' ? '/' : m[2]
  } else if (value.startsWith('//')) {
    return value
  }
  if (!path.startsWith(rw.upstreamPrefix)) return value
  return rw.prefix + path.slice(rw.upstreamPrefix.length)
}

function rewriteCookie (value: string, rw: ResponseRewrite): string {
  if (rw.prefix === null) return value
  return value.replace(/;\s*path=([^;]*)/i, (whole, p: string) => {
    const path = p.trim()
    if (!path.startsWith(rw.upstreamPrefix)) return whole
    return `; Path=${rw.prefix}${path.slice(rw.upstreamPrefix.length)}`
  }).replace(/;\s*domain=([^;]*)/i, (whole, d: string) => {
    const domain = d.trim().replace(/^\./, '').toLowerCase()
    // The authority's host part (`[::1]:3000` is `[::1]`, not `[`).
    return rw.backendAuthorities.some((a) => hostOnly(a) === domain) ? `; Domain=${rw.clientHost}` : whole
  })
}

/**
 * Fields a trailer section must not carry across the proxy (RFC 9110 §6.5.1: framing, routing,
 * request modifiers, authentication, response control data, how to process the content). A client
 * that merged one into the head (`Set-Cookie`, `Location`, `Content-Type`, `Content-Length`) would
 * take the backend's trailer for a header the head never had.
 */
const NOT_IN_TRAILERS = new Set([
  'content-length', 'host', 'cache-control', 'expect', 'max-forwards', 'pragma', 'range',
  'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since', 'if-range',
  'authorization', 'proxy-authorization', 'www-authenticate', 'proxy-authenticate', 'set-cookie', 'cookie',
  'age', 'expires', 'date', 'location', 'retry-after', 'vary', 'warning',
  'content-encoding', 'content-type', 'content-range',
])

/**
 * Trailer fields for the client: drop the hop-by-hop fields, the fields the response head's
 * `Connection` named (RFC 9110 §7.6.1: "any header or trailer field(s)"), and the fields that may
 * not be trailers at all (NOT_IN_TRAILERS). Duplicates are kept in order.
 */
export function filterTrailers (raw: RawHeaders, head: RawHeaders): RawHeaders {
  let listed: Set<string> | null = null
  for (let i = 0; i < head.length; i += 2) {
    if (head[i].length === 10 && head[i].toLowerCase() === 'connection') {
      const l = connectionListed(head[i + 1])
      if (l !== null) { listed ??= new Set(); for (const n of l) listed.add(n) }
    }
  }
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i].toLowerCase()
    if (HOP_BY_HOP.has(lower) || NOT_IN_TRAILERS.has(lower) || (listed !== null && listed.has(lower))) continue
    out.push(raw[i], raw[i + 1])
  }
  return out
}

/**
 * The reason phrase to send for an HTTP backend's, or null when the response must be refused.
 * undici decodes the phrase as UTF-8 (header values it keeps as bytes); node:http writes it as
 * latin1 and throws ERR_INVALID_CHAR for anything but HTAB, SP, VCHAR and obs-text, keeping the bad
 * phrase as `statusMessage` so that the error page after it throws too (the client hangs).
 * - Control characters (RFC 9112 §4 allows none): null, a 502 as for a CGI Status line.
 * - obs-text: the backend's own bytes again (UTF-8 → latin1 is exact for what decoded cleanly);
 *   bytes that were not UTF-8 are gone (U+FFFD), so the phrase is dropped: node sends its own.
 */
export function reasonPhrase (text: string): string | null {
  if (/^[\t\x20-\x7e]*$/.test(text)) return text
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(text)) return null
  if (text.includes('\ufffd')) return ''
  return Buffer.from(text, 'utf8').toString('latin1')
}

/** RFC 9110 §15: status codes are three digits, 100–599. A backend sending 999 gets a 502. */
export function validStatus (status: number): boolean {
  return Number.isInteger(status) && status >= 100 && status <= 599
}
