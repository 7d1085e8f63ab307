/**
 * Durations (`250ms`, `60s`, `5m`, `1h`, or a number of milliseconds) and sizes (`512`, `64KiB`,
 * `256MiB`, `1GiB`, `10MB`), as operators write them in nginx/systemd configs.
 */
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/
const SIZE = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?$/i

const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const SIZE_BYTES: Record<string, number> = {
  b: 1, k: 1024, kib: 1024, kb: 1000, m: 1024 ** 2, mib: 1024 ** 2, mb: 1000 ** 2,
  g: 1024 ** 3, gib: 1024 ** 3, gb: 1000 ** 3, t: 1024 ** 4, tib: 1024 ** 4, tb: 1000 ** 4,
}

export const DURATION_PATTERN = '^\\d+(\\.\\d+)?\\s*(ms|s|m|h|d)?$'
export const SIZE_PATTERN = '^\\d+(\\.\\d+)?\\s*([bB]|[kKmMgGtT]([iI]?[bB])?)?$'

/**
 * The longest duration a timer can wait: Node.js sets a `setTimeout` above 2^31-1 ms (24.8 days)
 * to 1 ms, so `drainTimeout: 30d` would have cut every in-flight request at once.
 */
export const MAX_DURATION_MS = 2_147_483_647

/**
 * Milliseconds; null when not a duration. A bare number (or numeric string) is milliseconds.
 * Longer than MAX_DURATION_MS (`30d`, `1e308`) is MAX_DURATION_MS: "practically forever" stays that.
 */
export function parseDuration (v: number | string): number | null {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? Math.min(v, MAX_DURATION_MS) : null
  const m = DURATION.exec(v.trim())
  if (m === null) return null
  return Math.min(Math.round(Number(m[1]) * DURATION_MS[m[2] ?? 'ms']), MAX_DURATION_MS)
}

/** Bytes; null when not a size. */
export function parseSize (v: number | string): number | null {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? Math.floor(v) : null
  const m = SIZE.exec(v.trim())
  if (m === null) return null
  return Math.floor(Number(m[1]) * SIZE_BYTES[(m[2] ?? 'b').toLowerCase()])
}
