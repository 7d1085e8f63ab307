/**
 * Per-route counters the status page and metrics read. Increments only on the hot path; latency
 * goes into fixed log-spaced buckets (no per-request allocation) from which p50/p99 are estimated.
 */

/** Upper bounds in ms of the latency buckets (the last one is open-ended). */
export const LATENCY_BUCKETS_MS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000] as const

export class RouteStats {
  requests = 0
  errors = 0
  dropped = 0
  readonly latency = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0)
  latencySumMs = 0

  observe (ms: number): void {
    this.latencySumMs += ms
    let i = 0
    while (i < LATENCY_BUCKETS_MS.length && ms > LATENCY_BUCKETS_MS[i]) i++
    this.latency[i]++
  }

  /** Bucket upper bound below which `q` (0..1) of the observations fall; 0 when none. */
  quantile (q: number): number {
    let total = 0
    for (const n of this.latency) total += n
    if (total === 0) return 0
    const want = Math.ceil(total * q)
    let seen = 0
    for (let i = 0; i < this.latency.length; i++) {
      seen += this.latency[i]
      if (seen >= want) return i < LATENCY_BUCKETS_MS.length ? LATENCY_BUCKETS_MS[i] : Infinity
    }
    return Infinity
  }
}
