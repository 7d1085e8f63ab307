/**
 * Body scavenging: bounds the memory a large body leaves behind as garbage.
 *
 * Every body chunk a proxy forwards sits in its own fresh Buffer of up to 64 KiB: node:http copies
 * each request-body chunk out of its read buffer, and every read from a backend socket or pipe
 * allocates one. Once the chunk has been written on, it is garbage, but its bytes live outside
 * V8's heap, and V8 collects young ArrayBuffers early only when their bytes reach twice its
 * *default* maximum semi-space: 32 MB on x64, whatever `--max-semi-space-size` says. Streaming a
 * body at loopback speed allocates almost nothing else, so the process grew by about that much
 * for every large body (docs/design/architecture.md, "Memory", has the smaps trace).
 *
 * A proxy knows better than V8 when those bytes became garbage. While a large body is in flight a
 * short tick reads the client socket's byte counters (no per-chunk work) and, every `everyBytes`
 * moved, asks V8 for a young-generation collection. It needs V8's `gc` function: the one
 * `node --expose-gc` puts on globalThis, or the `gc` option of createProxy (`proxycore serve` hands
 * it the one gcFromV8 takes). Without one, V8 keeps its own schedule.
 */

import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

/** V8's gc() as `--expose-gc` exposes it: `type: 'minor'` is a scavenge of the young generation. */
export type GcFunction = (options: { type: 'minor' }) => unknown

/**
 * V8's gc() without `--expose-gc` on the command line and without putting it on globalThis: a
 * context made while the flag is set gets the function. The flag is process-wide for that moment,
 * so this is for programs that own their process (`proxycore serve`), not for the library.
 */
export function gcFromV8 (): GcFunction {
  setFlagsFromString('--expose-gc')
  try {
    return runInNewContext('gc') as GcFunction
  } finally {
    setFlagsFromString('--no-expose-gc')
  }
}

/** A client socket: both counters only grow. */
export interface ByteCounter { readonly bytesRead: number, readonly bytesWritten: number }

/** Bodies at least this large (uploads of unknown length too) are watched. */
export const SCAVENGE_MIN_BODY = 1024 * 1024
const EVERY_BYTES = 8 * 1024 * 1024
const TICK_MS = 10

interface Watched { counter: ByteCounter, moved: number }

const moved = (c: ByteCounter): number => c.bytesRead + c.bytesWritten

export class BodyScavenger {
  /** Few at a time (large bodies only), so a plain array. */
  private readonly watched: Watched[] = []
  private timer: NodeJS.Timeout | null = null
  private unscavenged = 0
  /** Scavenges requested so far. */
  requested = 0
  /** The gc function threw once: never call it again. */
  disabled = false

  constructor (
    private readonly gc: GcFunction,
    private readonly everyBytes = EVERY_BYTES,
    private readonly tickMs = TICK_MS,
  ) {}

  /** The gc function of a process started with --expose-gc, or null. */
  static exposedGc (): GcFunction | null {
    const gc = (globalThis as { gc?: unknown }).gc
    return typeof gc === 'function' ? gc as GcFunction : null
  }

  get watching (): number { return this.watched.length }

  watch (counter: ByteCounter): void {
    if (this.disabled || this.watched.some((w) => w.counter === counter)) return
    this.watched.push({ counter, moved: moved(counter) })
    if (this.timer === null) {
      this.timer = setInterval(this.tick, this.tickMs)
      this.timer.unref()
    }
  }

  /** The body is done: what its socket moved since the last tick counts, then it is forgotten. */
  unwatch (counter: ByteCounter): void {
    const i = this.watched.findIndex((w) => w.counter === counter)
    if (i < 0) return
    const w = this.watched[i]
    this.unscavenged += moved(w.counter) - w.moved
    this.watched.splice(i, 1)
    if (this.watched.length === 0) this.stop()
    this.scavengeIfDue()
  }

  stop (): void {
    if (this.timer !== null) { clearInterval(this.timer); this.timer = null }
  }

  /** True while the tick runs (some body is watched). */
  get running (): boolean { return this.timer !== null }

  /** What the watched sockets moved since the last tick counts. Public for tests. */
  readonly tick = (): void => {
    for (const w of this.watched) {
      const now = moved(w.counter)
      this.unscavenged += now - w.moved
      w.moved = now
    }
    this.scavengeIfDue()
  }

  private scavengeIfDue (): void {
    if (this.unscavenged < this.everyBytes) return
    // Everything allocated so far that is garbage goes with it: start counting again from zero.
    this.unscavenged = 0
    this.requested++
    try {
      this.gc({ type: 'minor' })
    } catch {
      // An embedder's gc that throws must not take the proxy down: collection goes back to V8.
      this.disabled = true
      this.watched.length = 0
      this.stop()
    }
  }
}
