/** Route `options` of the static adapter (`protocol: static`). */
import { ConfigError, type ConfigIssue } from '../../core/errors.js'

/** A content coding a precompressed sibling may carry: `br` → `<file>.br`, `gzip` → `<file>.gz`. */
export type PrecompressedEncoding = 'br' | 'gzip'

const ENCODINGS: readonly PrecompressedEncoding[] = ['br', 'gzip']

export interface StaticOptions {
  /**
   * A `Cache-Control` value sent with every file (200, 206, 304), e.g. `public, max-age=3600`.
   * null (the default) sends none, as nginx does without `expires`.
   */
  readonly cacheControl: string | null
  /**
   * Precompressed siblings served instead of the file when the client accepts their coding
   * (nginx `gzip_static`/`brotli_static`, Caddy `precompressed`), in the order the server prefers
   * them when the client weighs them equally. Empty (the default): never.
   */
  readonly precompressed: readonly PrecompressedEncoding[]
}

export const STATIC_DEFAULTS: Readonly<StaticOptions> = Object.freeze({ cacheControl: null, precompressed: Object.freeze([]) })

/** Visible ASCII and spaces only: the value goes into a response header as it is. */
const HEADER_VALUE = /^[\x20-\x7e]+$/

const KEYS = ['cacheControl', 'precompressed']

/** `true` (both, br first), `false`, or a non-empty list of `br` / `gzip`, each once; null when invalid. */
function parsePrecompressed (value: unknown): PrecompressedEncoding[] | null {
  if (value === true) return [...ENCODINGS]
  if (value === false) return []
  if (!Array.isArray(value) || value.length === 0) return null
  const out: PrecompressedEncoding[] = []
  for (const v of value) {
    if (typeof v !== 'string' || !(ENCODINGS as readonly string[]).includes(v) || out.includes(v as PrecompressedEncoding)) return null
    out.push(v as PrecompressedEncoding)
  }
  return out
}

/** Validate `raw` (undefined/null = defaults); every problem is reported with its path under `at`. */
export function parseStaticOptions (raw: unknown, at: string): StaticOptions {
  if (raw === undefined || raw === null) return { ...STATIC_DEFAULTS }
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError([{ path: at, message: 'static options must be an object', found: raw, expected: 'an object' }])
  }
  let cacheControl: string | null = null
  let precompressed: readonly PrecompressedEncoding[] = STATIC_DEFAULTS.precompressed
  const issues: ConfigIssue[] = []
  for (const [key, value] of Object.entries(raw)) {
    if (!KEYS.includes(key)) {
      issues.push({ path: `${at}/${key}`, message: `unknown static option "${key}"`, found: value, expected: KEYS.join(' | ') })
    } else if (key === 'precompressed') {
      const list = parsePrecompressed(value)
      if (list === null) {
        issues.push({ path: `${at}/${key}`, message: 'must be true, false, or a non-empty list of br and gzip, each at most once', found: value, expected: 'e.g. true or [br, gzip]' })
      } else {
        precompressed = list
      }
    } else if (typeof value !== 'string' || !HEADER_VALUE.test(value) || value.trim() !== value) {
      issues.push({ path: `${at}/${key}`, message: 'must be a Cache-Control value: printable ASCII, no leading or trailing space', found: value, expected: 'e.g. "public, max-age=3600"' })
    } else {
      cacheControl = value
    }
  }
  if (issues.length > 0) throw new ConfigError(issues)
  return { cacheControl, precompressed }
}
