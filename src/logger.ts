/**
 * Default logger: pino, JSON lines on stderr. Level from PROXYCORE_LOG_LEVEL (default `info`).
 * Embedders pass their own (any object with debug/info/warn/error); pino is then never loaded, which
 * keeps an embedded proxy ~9 MiB lighter.
 */
import type { Logger } from './core/types.js'

export function defaultLogger (level = process.env.PROXYCORE_LOG_LEVEL ?? 'info'): Promise<Logger> {
  return import('pino').then(({ pino }): Logger => pino({ level, base: { name: 'proxycore' } }, pino.destination(2)))
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger: Logger = { debug () {}, info () {}, warn () {}, error () {} }
