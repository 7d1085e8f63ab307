/**
 * The set of things in flight (exchanges, backend requests, connections): add and delete in O(1)
 * without a hash table.
 *
 * Why not a `Set`: a long-lived `Set` or `Map` whose entries come and go once per request makes V8
 * rehash its table every few dozen inserts, and the table it leaves behind keeps its entries and a
 * pointer to its successor (so live iterators can follow). Once one such obsolete table has been
 * promoted to the old generation, the scavenger treats it as a root until the next full collection:
 * it keeps the next table alive, which keeps the next, and every request graph in any of them
 * survives and gets promoted. Measured on the HTTP path under 32-connection load: ~2.9 KB promoted
 * per request with the `Set` (mark-compacts every ~0.8 s, 15 % of the time in GC pauses), ~30 B
 * without it, the same as a bare node:http proxy. docs/design/architecture.md has the numbers.
 *
 * This one is a dense array: each member records its index under `SLOT`; delete moves the last
 * member into the hole and pops, so no stale reference is ever left behind. A member belongs to one
 * LiveSet at a time.
 */
export const SLOT: unique symbol = Symbol('proxycore.liveSlot')

export interface Slotted { [SLOT]: number }

export class LiveSet<T extends Slotted> {
  private readonly items: T[] = []

  get size (): number { return this.items.length }

  add (x: T): void {
    if (this.has(x)) return
    x[SLOT] = this.items.length
    this.items.push(x)
  }

  has (x: T): boolean {
    const i = x[SLOT]
    return i >= 0 && i < this.items.length && this.items[i] === x
  }

  delete (x: T): boolean {
    if (!this.has(x)) return false
    const i = x[SLOT]
    const last = this.items.pop() as T
    if (last !== x) {
      this.items[i] = last
      last[SLOT] = i
    }
    x[SLOT] = -1
    return true
  }

  /** The members themselves, not a copy: nothing may be added or deleted while walking it. */
  view (): readonly T[] { return this.items }

  /** A copy: callers may add or delete members while they walk it. */
  values (): T[] { return this.items.slice() }

  clear (): void {
    for (const x of this.items) x[SLOT] = -1
    this.items.length = 0
  }
}

/**
 * A lookup table for keys that come and go once per request (tokens, ids), on a null-prototype
 * object instead of a `Map`, for the same reason as LiveSet: V8's dictionary-mode objects rehash
 * without leaving a chain of old tables behind.
 */
export class KeyTable<V> {
  private readonly table: Record<string, V> = Object.create(null) as Record<string, V>
  private count = 0

  get size (): number { return this.count }

  get (key: string | number): V | undefined { return this.table[key] }

  set (key: string | number, value: V): void {
    if (this.table[key] === undefined) this.count++
    this.table[key] = value
  }

  delete (key: string | number): boolean {
    if (this.table[key] === undefined) return false
    delete this.table[key]
    this.count--
    return true
  }

  /** A copy of the values. */
  values (): V[] { return Object.values(this.table) }
}
