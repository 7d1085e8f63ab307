/**
 * The CLI's logger: JSON lines on stderr (for journald, log shippers and tests that parse the bound
 * address), or pino-pretty's readable lines when stderr is a terminal. Writes are synchronous so
 * the last lines before an exit are never lost.
 *
 * Messages carry bytes others chose: a backend's stderr, a spawned program's output, a bad
 * response head quoted in an error. JSON escapes them by construction; the readable format shows
 * each message as one line, with control characters (CR, LF, ESC, NUL, DEL, the C1 range; not tab)
 * written as `\xHH`, the way nginx escapes its access log (CVE-2009-4487). So a CGI script printing
 * `\n[12:00:00.000] ERROR: ...` cannot forge a line, and `\x1b]0;...` cannot retitle or clear the
 * operator's terminal. (pino-pretty itself keeps LF and silently drops the other controls.) The
 * other fields are printed as JSON values, escaped already.
 */
import { createRequire } from 'node:module'
import type { Logger as Pino } from 'pino'

const require = createRequire(import.meta.url)
// CommonJS, so through `require` (src/lazy.ts says why).
const { pino } = require('pino') as typeof import('pino')

const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f]/g

/** Control characters but tab as `\xHH` (lower-case hex, as the status page's stderr tail). */
function escapeControls (s: string): string {
  return s.replace(CONTROL, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'))
}

/** pino-pretty's `messageFormat`: the message, escaped; none when the record has none. */
function message (log: Record<string, unknown>, key: string): string {
  const m = log[key]
  return typeof m === 'string' || typeof m === 'number' || typeof m === 'boolean' ? escapeControls(String(m)) : ''
}

export function cliLogger (level: string): Pino {
  const opts = { level, base: { name: 'proxycore' } }
  if (process.stderr.isTTY === true && process.env.PROXYCORE_LOG_FORMAT !== 'json') {
    // Loaded only for a terminal: a service's stderr is a pipe or a journal, where it is dead weight.
    const pretty = require('pino-pretty') as typeof import('pino-pretty')
    return pino(opts, pretty({ colorize: true, destination: 2, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name', messageFormat: message }))
  }
  return pino(opts, pino.destination({ dest: 2, sync: true }))
}
