/**
 * Balancers pick one backend among the routable ones. They see a stable ordered list (the pool's)
 * so that `hash` and `sticky` keep a key on the same backend while the set of healthy backends
 * stays the same, and move only the keys of a backend that went down.
 */
export type BalanceMode = 'least-connection' | 'round-robin' | 'hash' | 'sticky'

export interface Pickable {
  /** Exchanges in flight on this backend (counted by the core). */
  inflight: number
}

export interface BalanceKey {
  /** Request URL (hash mode). */
  url: string
  /** Client address (sticky mode). */
  client: string
}

export type Balancer<B extends Pickable> = (list: readonly B[], usable: (b: B) => boolean, key: BalanceKey) => B | null

export function createBalancer<B extends Pickable> (mode: BalanceMode): Balancer<B> {
  switch (mode) {
    case 'round-robin': return roundRobin<B>()
    case 'hash': return hashed<B>((k) => k.url)
    case 'sticky': return hashed<B>((k) => k.client)
    case 'least-connection': return leastConnection<B>()
  }
}

function roundRobin<B extends Pickable> (): Balancer<B> {
  let next = 0
  return (list, usable) => {
    const n = list.length
    for (let i = 0; i < n; i++) {
      const b = list[(next + i) % n]
      if (usable(b)) { next = (next + i + 1) % n; return b }
    }
    return null
  }
}

/** Fewest in-flight exchanges; ties broken round-robin so equal backends share the load. */
function leastConnection<B extends Pickable> (): Balancer<B> {
  let offset = 0
  return (list, usable) => {
    const n = list.length
    let best: B | null = null
    let bestIdx = 0
    for (let i = 0; i < n; i++) {
      const idx = (offset + i) % n
      const b = list[idx]
      if (!usable(b)) continue
      if (best === null || b.inflight < best.inflight) { best = b; bestIdx = idx }
    }
    if (best !== null) offset = (bestIdx + 1) % n
    return best
  }
}

/** Same key, same backend; a down backend's keys walk forward to the next usable one. */
function hashed<B extends Pickable> (keyOf: (k: BalanceKey) => string): Balancer<B> {
  return (list, usable, key) => {
    const n = list.length
    if (n === 0) return null
    const start = fnv1a(keyOf(key)) % n
    for (let i = 0; i < n; i++) {
      const b = list[(start + i) % n]
      if (usable(b)) return b
    }
    return null
  }
}

/** FNV-1a 32-bit: fast, well spread, no allocation. */
export function fnv1a (s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}
