/**
 * Precompressed siblings (nginx `gzip_static` / `brotli_static`, Caddy `precompressed`): which
 * codings a client's Accept-Encoding lets the static adapter send, and how a sibling is named.
 * The sibling itself is opened by the adapter with the checks of the file it stands for
 * (adapter.ts, StaticExchange.openSibling).
 */
import { lstatSync, type Stats } from 'node:fs'
import { lazy } from '../../lazy.js'
import type { PrecompressedEncoding } from './options.js'

/** The sibling's suffix: `app.js` → `app.js.br` / `app.js.gz`. */
export const SIBLING_SUFFIX: Readonly<Record<PrecompressedEncoding, string>> = Object.freeze({ br: '.br', gzip: '.gz' })

/** The part of the `negotiator` package used here (it ships no types). */
interface NegotiatorLike { encodings (available: string[], options?: { preferred?: string[] }): string[] }
type NegotiatorClass = new (request: { headers: Record<string, string | undefined> }) => NegotiatorLike

// CommonJS (express's and Koa's content negotiation), required on first use (src/lazy.ts).
const Negotiator = lazy<NegotiatorClass>('negotiator')

/**
 * The precompressed codings to try, best first, for a request's Accept-Encoding: those the client
 * accepts (named, or through `*`) with a weight above 0 and not below the one identity gets
 * (`negotiator`'s rules: identity not named takes the lowest weight the header gives), by weight,
 * then in the configured order. `x-gzip` is gzip (RFC 9110 §8.4.1.3). No header, an empty one, or
 * one the parser refuses: none (identity), as nginx and Caddy do, though RFC 9110 §12.5.3 would
 * allow any coding without a header.
 */
export function acceptedEncodings (header: string | undefined, offered: readonly PrecompressedEncoding[]): PrecompressedEncoding[] {
  if (header === undefined || offered.length === 0 || header.trim() === '') return []
  const order = [...offered, 'identity']
  let ranked: string[]
  try {
    const Neg = Negotiator()
    ranked = new Neg({ headers: { 'accept-encoding': header.replace(X_GZIP, '$1gzip') } }).encodings(order, { preferred: order })
  } catch {
    return []
  }
  const out: PrecompressedEncoding[] = []
  for (const enc of ranked) {
    if (enc === 'identity') break
    out.push(enc as PrecompressedEncoding)
  }
  return out
}

/** `x-gzip` as a whole coding name (RFC 9110 §8.4.1.3: a recipient should treat it as gzip). */
const X_GZIP = /(?<=^|,)([ \t]*)x-gzip(?=[ \t]*(?:[;,]|$))/gi

/**
 * The sibling's own entry (lstat: a symlink is seen as one), or null when there is none or it
 * cannot be looked at (ENOENT, ENOTDIR, EACCES...): then the file itself is sent.
 */
export function siblingEntry (path: string): Stats | null {
  try {
    return lstatSync(path, { throwIfNoEntry: false }) ?? null
  } catch {
    return null
  }
}

/** The ETag of a coded representation: the sibling's own tag with the coding appended (`W/"1c-18f0-br"`). */
export function codedTag (tag: string, enc: PrecompressedEncoding): string {
  return tag.endsWith('"') ? `${tag.slice(0, -1)}-${enc === 'gzip' ? 'gz' : 'br'}"` : tag
}
