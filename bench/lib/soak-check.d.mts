// Types for bench/lib/soak-check.mjs (the soak's verdict), for test/bench/soak.test.ts.
export interface SoakSample {
  t: number
  alive: boolean
  rssKiB: number
  fds: number
  zombies: number
  counts: Record<string, number>
  expected: Record<string, number>
  pending: boolean
  peers?: Record<string, number>
  peersExpected?: Record<string, number>
  inflight?: number
  final?: boolean
}
export interface SoakResult {
  kind: 'normal' | 'fault'
  fault?: string
  adapter: string
  method?: string
  url?: string
  start: number
  end: number
  status: number | null
  code?: string | null
  shaOk?: boolean
  closed?: boolean
  bytes?: number
  restoredMs?: number | null
  error?: string | null
}
export interface Violation { check: string, message: string }
export interface SoakSummary {
  samples: number
  samplesAfterWarmup: number
  samplesExcludedPendingRestart: number
  rssGrowthKiB: number | null
  fdDrift: number | null
  normal: { total: number, ok: number, failed: number, casualties: number }
  casualties: Record<string, number>
  faults: Record<string, { total: number, ok: number, wrong: number }>
  byAdapter: Record<string, { normal: number, faults: number }>
  [k: string]: unknown
}
export interface EvaluateOptions {
  warmupMs?: number
  rssLimitKiB?: number
  fdTolerance?: number
  kills?: Array<{ adapter: string, at: number }>
  uncaught?: string[]
  proxyExit?: { code: number | null, signal: string | null } | null
}
export const DEFAULTS: { rssLimitKiB: number, fdTolerance: number }
export const FAULTS: Record<string, { expect: string, ok: (r: SoakResult) => boolean }>
export function isCasualty (r: SoakResult, kills: Array<{ adapter: string, at: number }>): boolean
export function evaluate (samples: SoakSample[], results: SoakResult[], opts?: EvaluateOptions): { ok: boolean, violations: Violation[], summary: SoakSummary }
