/** Route `options` of the SCGI adapter (`protocol: scgi`). */
import { ConfigError } from '../../core/errors.js'

export interface ScgiOptions {
  /**
   * Accept a response that starts with an HTTP status line (`HTTP/1.1 201 Created`) as well as a
   * CGI `Status:` field. The SCGI spec leaves the response format open and servers send either
   * (nginx accepts both). Default true.
   */
  readonly acceptStatusLine: boolean
}

export const SCGI_DEFAULTS: Readonly<ScgiOptions> = Object.freeze({ acceptStatusLine: true })

/** Validate `raw` (undefined/null = defaults); every problem is reported with its path under `at`. */
export function parseScgiOptions (raw: unknown, at: string): ScgiOptions {
  if (raw === undefined || raw === null) return { ...SCGI_DEFAULTS }
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError([{ path: at, message: 'SCGI options must be an object', found: raw, expected: 'an object' }])
  }
  const out = { ...SCGI_DEFAULTS }
  const issues = []
  for (const [key, value] of Object.entries(raw)) {
    if (key !== 'acceptStatusLine') {
      issues.push({ path: `${at}/${key}`, message: `unknown SCGI option "${key}"`, found: value, expected: 'acceptStatusLine' })
    } else if (typeof value !== 'boolean') {
      issues.push({ path: `${at}/${key}`, message: 'must be a boolean', found: value, expected: 'a boolean' })
    } else {
      out.acceptStatusLine = value
    }
  }
  if (issues.length > 0) throw new ConfigError(issues)
  return out
}
