/**
 * Default logger: pino, JSON lines on stderr. Level from PROXYCORE_LOG_LEVEL (default `info`).
 * Embedders pass their own (any object with debug/info/warn/error).
 */
import { pino } from 'pino'
import type { Logger } from './core/types.js'

export function defaultLogger (level = process.env.PROXYCORE_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { name: 'proxycore' } }, pino.destination(2))
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger: Logger = { debug () {}, info () {}, warn () {}, error () {} }
