/**
 * The RFC 3875 (CGI/1.1) environment, shared by the FastCGI, SCGI and CGI adapters.
 *
 * Pure: no I/O. Request headers become HTTP_* (§4.1.18) with these defences:
 * - httpoxy (CVE-2016-5385/5386/5387/5388/1000109/1000110): never emit HTTP_PROXY, not even
 *   from operator params.
 * - Name collisions (CVE-2018-1283 class; httpd `http2env`, nginx `underscores_in_headers off`):
 *   a header whose name has anything but [A-Za-z0-9-] is dropped, so `X_Foo` cannot spoof
 *   `X-Foo` and `Content_Length` cannot become HTTP_CONTENT_LENGTH.
 * - Content-Type / Content-Length only as CONTENT_* (§4.1.2, §4.1.3), only with a body.
 * - Authorization / Proxy-Authorization are not passed (§9.2) unless the route opts in
 *   (Authorization only); hop-by-hop fields are dropped (§4.1.18 MAY).
 * - A value with NUL, CR or LF cannot be encoded for any CGI-family wire → ERR_BAD_HEADER_VALUE.
 * - No PATH_TRANSLATED (see buildCgiEnv): php-cgi would execute it.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { ProxyError } from '../errors.js'
import { connectionListed } from '../headers.js'
import type { ClientInfo, ScriptInfo } from '../types.js'

export interface CgiEnvInput {
  readonly method: string
  /** Request-target as received (`/a/b?x`, or absolute-form `http://h/a?x`). */
  readonly url: string
  /** Raw (percent-encoded) path part of the target. */
  readonly path: string
  /** Raw query without `?`, '' when none. */
  readonly query: string
  /** node:http `httpVersion`, e.g. '1.1'. */
  readonly httpVersion: string
  /** Parsed headers (lower-case names). Used when `rawHeaders` is absent. */
  readonly headers: IncomingHttpHeaders
  /** node:http `rawHeaders` (flat, as received): preferred, keeps duplicates apart for joining. */
  readonly rawHeaders?: readonly string[]
  readonly client: ClientInfo
  readonly script: ScriptInfo
  /** SERVER_SOFTWARE, e.g. `proxycore/0.1.0`. */
  readonly serverSoftware: string
  /** SERVER_NAME when the request carries no Host (HTTP/1.0). Default: the local address. */
  readonly defaultServerName?: string
  /** Body length after de-chunking; null = no body (then no CONTENT_* at all, §4.1.2). */
  readonly contentLength: number | null
  /** Pass HTTP_AUTHORIZATION to the script (httpd `CGIPassAuth`). Default false (§9.2). */
  readonly passAuthorization?: boolean
  /** Operator variables (route `params`), applied last; they can never set HTTP_PROXY. */
  readonly params?: Readonly<Record<string, string>>
  /** Told about each header not exported because of its name (for the log, AC-40). */
  readonly onDroppedHeader?: (name: string) => void
}

/** Request fields that never become HTTP_*: hop-by-hop (RFC 9110 §7.6.1) and the CONTENT_* pair. */
const NOT_EXPORTED = new Set([
  'proxy', // httpoxy
  'content-type', 'content-length',
  'proxy-authorization',
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'http2-settings'
])

const SAFE_NAME = /^[A-Za-z0-9-]+$/
const BAD_VALUE = /[\0\r\n]/
/** reg-name / IPv4 (RFC 3986 §3.2.2, restricted to what DNS names use), or an IPv6 literal. */
const HOST_NAME = /^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?\.?|\[[0-9A-Fa-f:.]+\])$/

/** `::ffff:127.0.0.1` → `127.0.0.1` (a dual-stack listener reports IPv4 peers mapped). */
export function plainAddress (addr: string): string {
  const m = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(addr)
  return m ? m[1] : addr
}

/** node:http `headers` as a flat raw list (the rawHeaders shape), duplicates kept apart. */
function flatHeaders (headers: IncomingHttpHeaders): string[] {
  const out: string[] = []
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue
    for (const v of Array.isArray(value) ? value : [value]) out.push(name, v)
  }
  return out
}

/**
 * `HTTP_` + the upper-cased name with `-` → `_` (§4.1.18), remembered: a server sees the same few
 * dozen header names over and over.
 */
const envNames = new Map<string, string>()
function envNameOf (lower: string): string {
  let n = envNames.get(lower)
  if (n === undefined) {
    n = 'HTTP_' + lower.toUpperCase().replace(/-/g, '_')
    if (envNames.size < 1024) envNames.set(lower, n)
  }
  return n
}

const UTF8 = new TextDecoder('utf-8', { fatal: true })

/**
 * node:http hands header values over as latin1 strings, one char per byte. Env values are Unicode
 * text, so valid UTF-8 is decoded here (the adapters encode it back as the same bytes). A byte that
 * is not part of a well-formed UTF-8 sequence (Unicode Table 3-7) becomes the lone low surrogate
 * U+DC00 + byte (Python's PEP 383 "surrogateescape"): the CGI-family encoders write it back as
 * that one byte (envBytes), so every header byte reaches the backend as it came, as nginx and
 * lighttpd pass them (RFC 9110 §5.5 obs-text). docs/protocols/cgi.md "Header bytes".
 */
export function headerText (value: string): string {
  if (!/[\x80-\xff]/.test(value) || /[^\x00-\xff]/.test(value)) return value
  try {
    return UTF8.decode(Buffer.from(value, 'latin1'))
  } catch {
    return escapeBytes(value)
  }
}

/** `bytes` (one latin1 char per byte, not all UTF-8): well-formed UTF-8 decoded, every other byte escaped. */
function escapeBytes (bytes: string): string {
  let out = ''
  let i = 0
  while (i < bytes.length) {
    const b = bytes.charCodeAt(i)
    if (b < 0x80) { out += bytes[i++]; continue }
    // Unicode Table 3-7: the lead byte fixes the length and the second byte's range.
    const need = b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xf0 && b <= 0xf4 ? 3 : 0
    const lo = b === 0xe0 ? 0xa0 : b === 0xf0 ? 0x90 : 0x80
    const hi = b === 0xed ? 0x9f : b === 0xf4 ? 0x8f : 0xbf
    let cp = b & (0x7f >> (need + 1))
    let j = 1
    for (; j <= need && i + j < bytes.length; j++) {
      const c = bytes.charCodeAt(i + j)
      if (c < (j === 1 ? lo : 0x80) || c > (j === 1 ? hi : 0xbf)) break
      cp = (cp << 6) | (c & 0x3f)
    }
    if (need > 0 && j === need + 1) {
      out += String.fromCodePoint(cp)
      i += j
    } else {
      out += String.fromCharCode(0xdc00 + b)
      i++
    }
  }
  return out
}

function checkValue (name: string, value: string): void {
  if (BAD_VALUE.test(value)) throw new ProxyError('ERR_BAD_HEADER_VALUE', `NUL, CR or LF in ${name}`, { phase: 'request' })
}

/**
 * SERVER_NAME (§4.1.14): the host of an absolute-form target (RFC 9112 §3.2.2), else the Host
 * header, without the port, lower-cased; with neither, the route's serverName or the local address
 * (an IPv6 one in brackets). An invalid or repeated Host → ERR_BAD_REQUEST (RFC 9112 §3.2).
 */
function serverName (input: CgiEnvInput, hostField: string | undefined, hosts: number): string {
  let authority: string | undefined
  const abs = input.url.charCodeAt(0) === 0x2f ? null : /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(input.url)
  if (abs !== null) {
    authority = abs[1].replace(/^.*@/, '')
  } else {
    if (hosts > 1) throw new ProxyError('ERR_BAD_REQUEST', 'more than one Host header', { phase: 'request' })
    authority = hostField?.trim()
  }
  if (authority === undefined || authority === '') {
    if (input.defaultServerName !== undefined) return input.defaultServerName
    // §4.1.14: server-name = hostname | ipv4-address | "[" ipv6-address "]" (as a Host carries it).
    const local = plainAddress(input.client.localAddress)
    return local.includes(':') ? `[${local}]` : local
  }
  const host = authority.startsWith('[') ? authority.slice(0, authority.indexOf(']') + 1) : authority.replace(/:\d*$/, '')
  const port = authority.slice(host.length)
  if (!HOST_NAME.test(host) || !/^(?::\d*)?$/.test(port)) throw new ProxyError('ERR_BAD_REQUEST', 'invalid Host', { phase: 'request' })
  return host.toLowerCase()
}

/** Build the RFC 3875 meta-variables for one request. Throws ProxyError (400-class) on bad input. */
export function buildCgiEnv (input: CgiEnvInput): Record<string, string> {
  // One pass over the raw headers for what the fixed variables need: names lower-cased once,
  // the Host count, the first Content-Type, the Connection tokens (hop-by-hop for this message).
  const raw = input.rawHeaders ?? flatHeaders(input.headers)
  const count = raw.length >> 1
  const names = new Array<string>(count)
  let host: string | undefined
  let hosts = 0
  let contentType: string | undefined
  let connection: string[] | undefined
  for (let i = 0; i < count; i++) {
    const name = raw[2 * i].toLowerCase()
    names[i] = name
    if (name === 'host') {
      if (hosts++ === 0) host = raw[2 * i + 1]
    } else if (name === 'content-type') {
      contentType ??= raw[2 * i + 1]
    } else if (name === 'connection') {
      (connection ??= []).push(raw[2 * i + 1])
    }
  }
  // The same rule as for an HTTP backend (headers.ts): Host is never hop-by-hop.
  const hop = connectionListed(connection?.length === 1 ? connection[0] : connection)
  const env: Record<string, string> = {}
  const { client, script } = input
  const secure = client.secure

  env.GATEWAY_INTERFACE = 'CGI/1.1' // §4.1.4
  // §4.1.16; HTTP/2 front ends are presented as HTTP/1.1 (lighttpd does the same).
  env.SERVER_PROTOCOL = input.httpVersion === '1.0' ? 'HTTP/1.0' : 'HTTP/1.1'
  env.SERVER_SOFTWARE = input.serverSoftware
  env.SERVER_NAME = serverName(input, host, hosts)
  env.SERVER_PORT = String(client.localPort) // §4.1.15: set even for the default port
  env.SERVER_ADDR = plainAddress(client.localAddress)
  env.REMOTE_ADDR = plainAddress(client.address) // §4.1.8
  env.REMOTE_HOST = env.REMOTE_ADDR // §4.1.9: no DNS lookups
  env.REMOTE_PORT = String(client.port)
  env.REQUEST_METHOD = input.method // §4.1.12: case-sensitive, as received
  env.REQUEST_URI = input.url.startsWith('/') ? input.url : input.path + (input.query !== '' ? '?' + input.query : '')
  env.QUERY_STRING = input.query // §4.1.7: MUST be set, raw, '' when absent
  env.SCRIPT_NAME = script.name // §4.1.13: MUST be set, may be ''
  env.SCRIPT_FILENAME = script.filename
  // §4.1.5: decoded. No PATH_TRANSLATED (§4.1.6 SHOULD, a documented deviation, as nginx's
  // fastcgi_params): php-cgi with cgi.fix_pathinfo=0 runs PATH_TRANSLATED instead of
  // SCRIPT_FILENAME, so `/index.php/uploads/evil.jpg` would run the upload past the route's
  // extension rule, and `/index.php/.env` would print the file. DOCUMENT_ROOT + PATH_INFO is
  // what it would have been.
  if (script.pathInfo !== '') env.PATH_INFO = script.pathInfo
  if (script.docroot !== '') env.DOCUMENT_ROOT = script.docroot
  env.REQUEST_SCHEME = secure ? 'https' : 'http'
  if (secure) env.HTTPS = 'on'
  // A value not taken from a header field (those pass checkValue) may carry a NUL: the check at
  // the end walks the whole environment only when one of them, or an operator value, does. The
  // walk on every request cost ~1.2 µs and ~0.6 KB (a for-in over this many keys).
  let mayHaveNul = env.SERVER_SOFTWARE.includes('\0') || env.SERVER_NAME.includes('\0') || env.SERVER_PORT.includes('\0') ||
    env.SERVER_ADDR.includes('\0') || env.REMOTE_ADDR.includes('\0') || env.REMOTE_PORT.includes('\0') ||
    env.REQUEST_METHOD.includes('\0') || env.REQUEST_URI.includes('\0') || env.QUERY_STRING.includes('\0') ||
    env.SCRIPT_NAME.includes('\0') || env.SCRIPT_FILENAME.includes('\0') || script.pathInfo.includes('\0') ||
    script.docroot.includes('\0')

  if (input.contentLength !== null) {
    env.CONTENT_LENGTH = String(input.contentLength) // §4.1.2: iff there is a body
    mayHaveNul ||= env.CONTENT_LENGTH.includes('\0')
    if (contentType !== undefined) {
      checkValue('Content-Type', contentType)
      env.CONTENT_TYPE = headerText(contentType) // §4.1.3
    }
  }

  // §4.1.18: same-name fields become one value with the same semantics. Every name set above is
  // fixed and none starts with HTTP_, so an HTTP_* key present here came from an earlier field.
  for (let i = 0; i < count; i++) {
    const name = names[i]
    if (!SAFE_NAME.test(name)) {
      input.onDroppedHeader?.(name)
      continue
    }
    if (NOT_EXPORTED.has(name) || hop?.has(name) === true) continue
    if (name === 'authorization' && input.passAuthorization !== true) continue
    const value = raw[2 * i + 1]
    checkValue(name, value)
    const key = envNameOf(name)
    const prev = env[key]
    env[key] = prev === undefined ? headerText(value) : prev + (name === 'cookie' ? '; ' : ', ') + headerText(value)
  }

  // §4.1: names are case-insensitive; an operator variable replaces any case variant. Every key
  // set so far is upper case, except earlier operator variables (remembered by their upper case).
  let operatorNames: Map<string, string> | null = null
  for (const [name, value] of Object.entries(input.params ?? {})) {
    const upper = name.toUpperCase()
    if (upper === 'HTTP_PROXY') continue // httpoxy, whatever the config says
    if (upper in env) delete env[upper]
    const earlier = operatorNames?.get(upper)
    if (earlier !== undefined) delete env[earlier]
    ;(operatorNames ??= new Map()).set(upper, name)
    env[name] = value
    mayHaveNul ||= value.includes('\0')
  }
  if (mayHaveNul) {
    for (const name in env) {
      if (env[name].includes('\0')) throw new ProxyError('ERR_BAD_HEADER_VALUE', `NUL in ${name}`, { phase: 'request' })
    }
  }
  return env
}
