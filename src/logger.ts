/**
 * Default logger: pino, JSON lines on stderr. Level from PROXYCORE_LOG_LEVEL (default `info`; an
 * unknown level is an error naming the valid ones).
 * Embedders pass their own (any object with debug/info/warn/error); pino is then never loaded, which
 * keeps an embedded proxy ~9 MiB lighter.
 */
import type { Logger } from './core/types.js'

/** pino's levels, as `logLevel` and PROXYCORE_LOG_LEVEL accept them. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

function envLevel (): string {
  const v = process.env.PROXYCORE_LOG_LEVEL
  return v === undefined || v === '' ? 'info' : v
}

export function defaultLogger (level = envLevel()): Promise<Logger> {
  // pino's own error for an unknown level is a stack trace about "custom levels".
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    const from = level === process.env.PROXYCORE_LOG_LEVEL ? 'PROXYCORE_LOG_LEVEL=' : 'log level '
    return Promise.reject(new Error(`${from}${JSON.stringify(level)} is not a log level (expected ${LOG_LEVELS.join(' | ')})`))
  }
  return import('pino').then(({ pino }): Logger => pino({ level, base: { name: 'proxycore' } }, pino.destination(2)))
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger: Logger = { debug () {}, info () {}, warn () {}, error () {} }
