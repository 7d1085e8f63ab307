/**
 * The CLI's logger: JSON lines on stderr (for journald, log shippers and tests that parse the bound
 * address), or pino-pretty's readable lines when stderr is a terminal. Writes are synchronous so
 * the last lines before an exit are never lost.
 */
import { createRequire } from 'node:module'
import type { Logger as Pino } from 'pino'

const require = createRequire(import.meta.url)
// CommonJS, so through `require` (src/lazy.ts says why).
const { pino } = require('pino') as typeof import('pino')

export function cliLogger (level: string): Pino {
  const opts = { level, base: { name: 'proxycore' } }
  if (process.stderr.isTTY === true && process.env.PROXYCORE_LOG_FORMAT !== 'json') {
    // Loaded only for a terminal: a service's stderr is a pipe or a journal, where it is dead weight.
    const pretty = require('pino-pretty') as typeof import('pino-pretty')
    return pino(opts, pretty({ colorize: true, destination: 2, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' }))
  }
  return pino(opts, pino.destination({ dest: 2, sync: true }))
}
