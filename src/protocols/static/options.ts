/** Route `options` of the static adapter (`protocol: static`). */
import { ConfigError, type ConfigIssue } from '../../core/errors.js'

export interface StaticOptions {
  /**
   * A `Cache-Control` value sent with every file (200, 206, 304), e.g. `public, max-age=3600`.
   * null (the default) sends none, as nginx does without `expires`.
   */
  readonly cacheControl: string | null
}

export const STATIC_DEFAULTS: Readonly<StaticOptions> = Object.freeze({ cacheControl: null })

/** Visible ASCII and spaces only: the value goes into a response header as it is. */
const HEADER_VALUE = /^[\x20-\x7e]+$/

/** Validate `raw` (undefined/null = defaults); every problem is reported with its path under `at`. */
export function parseStaticOptions (raw: unknown, at: string): StaticOptions {
  if (raw === undefined || raw === null) return { ...STATIC_DEFAULTS }
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError([{ path: at, message: 'static options must be an object', found: raw, expected: 'an object' }])
  }
  let cacheControl: string | null = null
  const issues: ConfigIssue[] = []
  for (const [key, value] of Object.entries(raw)) {
    if (key !== 'cacheControl') {
      issues.push({ path: `${at}/${key}`, message: `unknown static option "${key}"`, found: value, expected: 'cacheControl' })
    } else if (typeof value !== 'string' || !HEADER_VALUE.test(value) || value.trim() !== value) {
      issues.push({ path: `${at}/${key}`, message: 'must be a Cache-Control value: printable ASCII, no leading or trailing space', found: value, expected: 'e.g. "public, max-age=3600"' })
    } else {
      cacheControl = value
    }
  }
  if (issues.length > 0) throw new ConfigError(issues)
  return { cacheControl }
}
