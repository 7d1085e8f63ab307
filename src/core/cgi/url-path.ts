/**
 * Decoding and normalising a raw URL path before it is split into SCRIPT_NAME and PATH_INFO.
 *
 * The rules, and the attacks they answer:
 * - Decode exactly once (CVE-2021-41773 / CVE-2021-42013: `.%2e`, `%%32%65`, double encoding).
 *   `%252e` decodes to the literal segment `%2e`, which then simply does not exist.
 * - Malformed percent-encoding, NUL, CR, LF and backslash after decoding → 400 (RFC 3875 §9.8;
 *   lighttpd 'URL-encoding, %00'; AC-31, AC-48).
 * - `..` after decoding → 400 in the script walk: never resolved, so nothing can climb out of the
 *   docroot. The router resolves it (`normalizePath`) to choose the route, never climbing above `/`.
 * - `//` and `/./` collapse (RFC 3875 §8.1 asks servers to define this; we follow lighttpd).
 * - An encoded `/` (`%2F`) → 404 (RFC 3875 §4.1.5 MAY reject; it would split a segment in two).
 */
import { ProxyError } from '../errors.js'

export interface DecodedPath {
  /** Decoded, non-empty segments, `.` removed. */
  readonly segments: string[]
  /** The raw path ended in `/` (after at least one segment): PATH_INFO keeps it (RFC 3875 §4.1.5). */
  readonly trailingSlash: boolean
}

const HEX = /^[0-9A-Fa-f]{2}$/

/** Decode one raw segment's percent-encoding, bytes as UTF-8 (invalid UTF-8 → 400). */
function decodeSegment (raw: string): string {
  if (!raw.includes('%')) return raw
  const bytes: number[] = []
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i)
    if (c === 0x25) {
      const hex = raw.slice(i + 1, i + 3)
      if (!HEX.test(hex)) throw new ProxyError('ERR_BAD_REQUEST', 'malformed percent-encoding in path', { phase: 'route' })
      bytes.push(parseInt(hex, 16))
      i += 2
    } else if (c < 0x80) {
      bytes.push(c)
    } else {
      bytes.push(...Buffer.from(raw[i], 'utf8'))
    }
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes))
  } catch {
    throw new ProxyError('ERR_BAD_REQUEST', 'path is not valid UTF-8 after decoding', { phase: 'route' })
  }
}

const FORBIDDEN_CHARS = /[\0\r\n\\]/

/**
 * Decode and normalise a raw (still percent-encoded) absolute path.
 * Throws ProxyError ERR_BAD_REQUEST (400) or ERR_SCRIPT_NOT_FOUND (404, encoded slash).
 */
export function decodePath (rawPath: string): DecodedPath {
  const { segments } = walk(rawPath, false)
  return { segments, trailingSlash: segments.length > 0 && rawPath.endsWith('/') }
}

/**
 * The one path every route is matched on (nginx and lighttpd normalise before matching locations):
 * decoded once, `//` merged, `.` and `..` resolved as RFC 3986 §5.2.4 does (a trailing dot-segment
 * leaves a trailing `/`). Decoding follows `decodePath`, so a CGI route's script walk sees exactly
 * the segments its route was chosen on; that walk still refuses `..` (400) rather than resolve it.
 * An encoded slash (`%2F`) is a separator here, as in nginx's location matching; a CGI route's
 * script walk still refuses it (404). Throws ProxyError ERR_BAD_REQUEST (400: bad encoding, a
 * forbidden byte, a climb above `/`).
 * A target that is not a path (`OPTIONS *`) is returned as is.
 */
export function normalizePath (rawPath: string): string {
  if (rawPath.charCodeAt(0) !== 47 /* / */ || !NEEDS_WORK.test(rawPath)) return rawPath
  const { segments, dirEnd } = walk(rawPath, true)
  if (segments.length === 0) return '/'
  return '/' + segments.join('/') + (dirEnd ? '/' : '')
}

/** A path without these is already normal: most requests skip the walk. */
const NEEDS_WORK = /[%\\\0\r\n]|\/\/|\/\./

/**
 * Split, decode and check every segment. `resolveDots` false: `..` is refused (the script walk);
 * true: it removes the segment before it, and climbing above the root is refused (the router).
 */
function walk (rawPath: string, resolveDots: boolean): { segments: string[], dirEnd: boolean } {
  if (!rawPath.startsWith('/')) throw new ProxyError('ERR_BAD_REQUEST', 'path must start with /', { phase: 'route' })
  const segments: string[] = []
  let dirEnd = false
  const add = (seg: string): void => {
    dirEnd = true
    if (seg === '' || seg === '.') return
    if (seg === '..') {
      if (!resolveDots) throw new ProxyError('ERR_BAD_REQUEST', 'dot-dot segment in path', { phase: 'route' })
      if (segments.pop() === undefined) throw new ProxyError('ERR_BAD_REQUEST', 'path climbs above /', { phase: 'route' })
      return
    }
    segments.push(seg)
    dirEnd = false
  }
  for (const part of rawPath.split('/')) {
    if (part === '') { dirEnd = true; continue }
    const seg = decodeSegment(part)
    if (FORBIDDEN_CHARS.test(seg)) throw new ProxyError('ERR_BAD_REQUEST', 'forbidden byte (NUL, CR, LF or backslash) in path', { phase: 'route' })
    if (!seg.includes('/')) { add(seg); continue }
    // The script walk refuses an encoded slash; the router, like nginx matching locations on the
    // decoded URI, takes it as the separator it decodes to (`/admin%2Fx` is under `/admin/`).
    if (!resolveDots) throw new ProxyError('ERR_SCRIPT_NOT_FOUND', 'encoded slash in path', { phase: 'route' })
    for (const sub of seg.split('/')) add(sub)
  }
  return { segments, dirEnd }
}

/** PATH_INFO for the segments after the script: '' when none, '/' for a lone trailing slash. */
export function pathInfoOf (rest: readonly string[], trailingSlash: boolean): string {
  if (rest.length === 0) return trailingSlash ? '/' : ''
  return '/' + rest.join('/') + (trailingSlash ? '/' : '')
}

/** Normalise a route prefix: leading `/`, no trailing `/` ('' for the root). */
export function normalizePrefix (prefix: string): string {
  const trimmed = prefix.replace(/\/+$/, '')
  if (trimmed === '') return ''
  return trimmed.startsWith('/') ? trimmed : '/' + trimmed
}

/**
 * Split decoded segments at a route prefix (compared segment-wise, so `/app` does not match
 * `/application`). Returns the segments after the prefix, or null when the path is outside it.
 */
export function stripPrefix (segments: readonly string[], prefix: string): string[] | null {
  const want = normalizePrefix(prefix).split('/').filter((s) => s !== '')
  if (want.length > segments.length) return null
  for (let i = 0; i < want.length; i++) if (want[i] !== segments[i]) return null
  return segments.slice(want.length)
}

/** Percent-encode a decoded path (`normalizePath`'s result) again, segment by segment (RFC 3986 §3.3 pchar). */
export function encodePath (path: string): string {
  return path.split('/').map((s) => encodeURIComponent(s).replace(/%(?:24|26|2B|2C|3B|3D|3A|40)/g, decodeURIComponent)).join('/')
}
