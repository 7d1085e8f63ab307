/** Route `options` of the CGI adapter (`protocol: cgi`). */
import { ConfigError, type ConfigIssue } from '../../core/errors.js'

export interface CgiOptions {
  /**
   * Treat scripts whose file name starts with `nph-` as non-parsed-header scripts (RFC 3875 §5):
   * their output starts with an HTTP status line, which is validated like any CGI head
   * (RELIABILITY §2.5). Off by default: NPH is opt-in per route, and an `nph-` script on a route
   * without it is parsed as a normal CGI (its status line is then a malformed head → 502).
   */
  readonly nph: boolean
  /**
   * Bytes of one request's stderr passed to the log (then one truncation marker). stderr is always
   * drained whatever this says, so a chatty script never blocks on a full pipe (RELIABILITY §2.13).
   */
  readonly maxStderr: number
  /**
   * Milliseconds a script may go on running once its response is complete by its Content-Length
   * (it still holds stdout open); then its process group is stopped like an aborted one. httpd and
   * lighttpd stop a CGI whose request has ended; without this a script could outlive any number of
   * responses, and `maxConcurrent` bounds responses, not processes.
   */
  readonly linger: number
}

export const CGI_DEFAULTS: Readonly<CgiOptions> = Object.freeze({ nph: false, maxStderr: 64 * 1024, linger: 5000 })

/** Validate `raw` (undefined/null = defaults); every problem is reported with its path under `at`. */
export function parseCgiOptions (raw: unknown, at: string): CgiOptions {
  if (raw === undefined || raw === null) return { ...CGI_DEFAULTS }
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError([{ path: at, message: 'CGI options must be an object', found: raw, expected: 'an object' }])
  }
  const out: { nph: boolean, maxStderr: number, linger: number } = { ...CGI_DEFAULTS }
  const issues: ConfigIssue[] = []
  for (const [key, value] of Object.entries(raw)) {
    const path = `${at}/${key}`
    if (key === 'nph') {
      if (typeof value === 'boolean') out.nph = value
      else issues.push({ path, message: 'must be a boolean', found: value, expected: 'a boolean' })
    } else if (key === 'maxStderr') {
      if (Number.isSafeInteger(value) && (value as number) >= 0) out.maxStderr = value as number
      else issues.push({ path, message: 'must be a whole number of bytes >= 0', found: value, expected: 'an integer >= 0' })
    } else if (key === 'linger') {
      if (Number.isSafeInteger(value) && (value as number) >= 0) out.linger = value as number
      else issues.push({ path, message: 'must be a whole number of milliseconds >= 0', found: value, expected: 'an integer >= 0' })
    } else {
      issues.push({ path, message: `unknown CGI option "${key}"`, found: value, expected: 'nph | maxStderr | linger' })
    }
  }
  if (issues.length > 0) throw new ConfigError(issues)
  return out
}
