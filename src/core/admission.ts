/**
 * Admission: a per-route cap on concurrent exchanges with a bounded FIFO wait queue (lighttpd 1.5's
 * backlog, peruser's ProcessorWaitTimeout). Over the queue, or waiting longer than queueTimeout, the
 * request is dropped with 503 + Retry-After and counted.
 */
import { ProxyError } from './errors.js'

/** What waits for a slot: an exchange or an upgrade. */
export interface Entrant {
  /** Read only when it has to queue (an exchange's signal is made on demand). */
  readonly signal: AbortSignal
  /** It ended while it waited: a slot granted then is handed back. */
  readonly ended: boolean
  admitted (): void
  refused (err: ProxyError): void
}

/** Where drops are counted (the route's stats, which the status page and metrics read). */
export interface DropCounter { dropped: number }

interface Waiter {
  resolve: () => void
  reject: (err: ProxyError) => void
  timer: NodeJS.Timeout | null
  signal: AbortSignal
  onAbort: () => void
}

export class Admission {
  active = 0
  private readonly queue: Waiter[] = []

  constructor (
    /** 0 = unlimited. */
    readonly maxConcurrent: number,
    readonly maxQueue: number,
    /** ms; 0 = wait as long as the client does. */
    readonly queueTimeout: number,
    private readonly drops: DropCounter = { dropped: 0 },
  ) {}

  get queued (): number { return this.queue.length }

  /** Requests refused for a full queue or a queue timeout. */
  get dropped (): number { return this.drops.dropped }

  /**
   * Admit `x` now if a slot is free (no promise, no closure), else queue it; `x.refused` gets
   * ERR_QUEUE_FULL, ERR_QUEUE_TIMEOUT (both counted as drops) or the client's abort.
   */
  enter (x: Entrant): void {
    if (this.tryAcquire()) { x.admitted(); return }
    this.acquire(x.signal).then(() => {
      if (x.ended) { this.release(); return }
      x.admitted()
    }, (err: ProxyError) => { x.refused(err) })
  }

  /** Take a slot now if one is free (the fast path: no promise). */
  tryAcquire (): boolean {
    if (this.maxConcurrent === 0 || (this.active < this.maxConcurrent && this.queue.length === 0)) {
      this.active++
      return true
    }
    return false
  }

  /** Wait for a slot; rejects with ERR_QUEUE_FULL / ERR_QUEUE_TIMEOUT, or on abort. */
  acquire (signal: AbortSignal): Promise<void> {
    if (this.queue.length >= this.maxQueue) {
      this.drops.dropped++
      return Promise.reject(new ProxyError('ERR_QUEUE_FULL', undefined, { phase: 'admit' }))
    }
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        timer: null,
        signal,
        onAbort: () => {
          this.remove(w)
          reject(new ProxyError('ERR_CLIENT_ABORTED', undefined, { phase: 'admit' }))
        },
      }
      if (this.queueTimeout > 0) {
        w.timer = setTimeout(() => {
          this.remove(w)
          this.drops.dropped++
          reject(new ProxyError('ERR_QUEUE_TIMEOUT', undefined, { phase: 'admit' }))
        }, this.queueTimeout)
      }
      signal.addEventListener('abort', w.onAbort, { once: true })
      this.queue.push(w)
    })
  }

  release (): void {
    const next = this.queue.shift()
    if (next === undefined) { this.active--; return }
    // The slot passes straight to the next waiter: `active` is unchanged.
    this.cleanup(next)
    next.resolve()
  }

  private remove (w: Waiter): void {
    const i = this.queue.indexOf(w)
    if (i >= 0) this.queue.splice(i, 1)
    this.cleanup(w)
  }

  private cleanup (w: Waiter): void {
    if (w.timer) clearTimeout(w.timer)
    w.signal.removeEventListener('abort', w.onAbort)
  }

  /** Fail every waiter (proxy closing). */
  rejectAll (err: ProxyError): void {
    for (const w of this.queue.splice(0)) { this.cleanup(w); w.reject(err) }
  }
}
