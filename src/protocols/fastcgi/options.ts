/**
 * FastCGI route options (`route.options` when `protocol: fastcgi`). The defaults table is the one
 * source docs/protocols/fastcgi.md is checked against (test/fastcgi/options.test.ts).
 */
import { ConfigError, type ConfigIssue } from '../../core/errors.js'

export interface FastcgiOptions {
  /** Set FCGI_KEEP_CONN and reuse connections between requests (FastCGI 1.0 §5.1). */
  keepConn: boolean
  /** Cap on connections to one backend; null = what the backend reports (FCGI_MAX_CONNS), else unbounded. */
  maxConnections: number | null
  /** Multiplex requests over one connection when the backend reports FCGI_MPXS_CONNS=1. */
  multiplex: boolean
  /** Close a kept-alive connection after this many ms without a request. */
  idleTimeout: number
  /** Ask the backend for FCGI_MAX_CONNS / FCGI_MAX_REQS / FCGI_MPXS_CONNS before the first request. */
  discovery: boolean
  /** How long to wait for the FCGI_GET_VALUES answer, ms; no answer = no multiplexing, no known limit. */
  discoveryTimeout: number
  /** FCGI_STDERR bytes handed to the core per request; the rest is read and dropped. */
  stderrLimit: number
  /**
   * ms a multiplexed connection waits for the END_REQUEST of a request sent FCGI_ABORT_REQUEST;
   * past it the connection takes no new request and closes once only aborted requests remain.
   */
  abortTimeout: number
}

export const FASTCGI_DEFAULTS: Readonly<FastcgiOptions> = Object.freeze({
  keepConn: true,
  maxConnections: null,
  multiplex: true,
  idleTimeout: 60_000,
  discovery: true,
  discoveryTimeout: 500,
  stderrLimit: 65_536,
  abortTimeout: 5_000,
})

type Check = (v: unknown) => string | null

const bool: Check = (v) => typeof v === 'boolean' ? null : 'a boolean'
const int = (min: number, max: number): Check => (v) =>
  Number.isInteger(v) && (v as number) >= min && (v as number) <= max ? null : `an integer from ${min} to ${max}`

const CHECKS: Record<keyof FastcgiOptions, Check> = {
  keepConn: bool,
  maxConnections: (v) => v === null ? null : int(1, 65_535)(v) === null ? null : 'null or an integer from 1 to 65535',
  multiplex: bool,
  idleTimeout: int(1, 86_400_000),
  discovery: bool,
  discoveryTimeout: int(1, 60_000),
  stderrLimit: int(0, 1 << 30),
  abortTimeout: int(1, 3_600_000),
}

/** Validate `raw` (undefined = all defaults); every problem is reported with its path under `at`. */
export function parseFastcgiOptions (raw: unknown, at: string): FastcgiOptions {
  if (raw === undefined || raw === null) return { ...FASTCGI_DEFAULTS }
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError([{ path: at, message: 'FastCGI options must be an object', found: raw, expected: 'an object' }])
  }
  const issues: ConfigIssue[] = []
  const out: FastcgiOptions = { ...FASTCGI_DEFAULTS }
  for (const [key, value] of Object.entries(raw)) {
    const path = `${at}/${key}`
    if (!Object.hasOwn(CHECKS, key)) {
      issues.push({ path, message: `unknown FastCGI option "${key}"`, found: value, expected: Object.keys(CHECKS).join(', ') })
      continue
    }
    const name = key as keyof FastcgiOptions
    const expected = CHECKS[name](value)
    if (expected !== null) {
      issues.push({ path, message: `must be ${expected}`, found: value, expected })
      continue
    }
    ;(out as unknown as Record<string, unknown>)[name] = value
  }
  if (out.multiplex && !out.keepConn && Object.hasOwn(raw, 'multiplex')) {
    issues.push({ path: `${at}/multiplex`, message: 'multiplexing needs keepConn: true', found: true, expected: 'false when keepConn is false' })
  }
  if (issues.length > 0) throw new ConfigError(issues)
  return out
}
