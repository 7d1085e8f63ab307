/**
 * The admission and backend counters the status page shows for a proxy's first route, and a wait
 * for all of them to come back to 0 (every slot, queue place and backend request given back).
 */
import type { Proxy } from '../../src/index.js'
import { collectStatus } from '../../src/status/model.js'
import { waitFor } from './leaks.js'

export function counters (proxy: Proxy): { inflight: number, active: number, queued: number, backendInflight: number } {
  const s = collectStatus(proxy as never)
  const r = s.routes[0]
  return { inflight: s.inflight, active: r.active, queued: r.queued, backendInflight: r.backends.reduce((n, b) => n + b.inflight, 0) }
}

export const ZERO = { inflight: 0, active: 0, queued: 0, backendInflight: 0 }

/** True once every counter is 0 (within 10 s). */
export async function settled (proxy: Proxy): Promise<boolean> {
  return waitFor(() => { const c = counters(proxy); return c.inflight === 0 && c.active === 0 && c.queued === 0 && c.backendInflight === 0 }, 10_000)
}
