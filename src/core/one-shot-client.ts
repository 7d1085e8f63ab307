/**
 * A BackendClient for protocols that reuse nothing — one connection (SCGI, uwsgi) or one process
 * (CGI) per exchange. It only keeps the exchanges in flight: `close()` waits for them, `destroy()`
 * ends them. Pooling, retries and timeouts stay in the core.
 */
import { ProxyError } from './errors.js'
import { LiveSet, SLOT } from '../live-set.js'
import type { BackendClient, Endpoint, Exchange, ResponseHandler } from './types.js'

/** One in-flight exchange (a LiveSet member, so X itself needs no slot). */
interface Entry<X> { x: X, [SLOT]: number }

export class OneShotClient<X extends { start (): void }> implements BackendClient {
  /** Not a Set: see src/live-set.ts. */
  private readonly active = new LiveSet<Entry<X>>()
  private idle: Array<() => void> = []

  constructor (
    protected readonly endpoint: Endpoint,
    /** Build the per-exchange object; it calls `done(itself)` exactly once when it is over. */
    private readonly make: (exchange: Exchange, handler: ResponseHandler, done: (x: X) => void) => X,
    /** End one in-flight exchange now (destroy its socket, kill its process). */
    private readonly stop: (x: X, err: ProxyError) => void,
  ) {}

  get inflight (): number { return this.active.size }

  dispatch (exchange: Exchange, handler: ResponseHandler): void {
    const entry: Entry<X> = { x: null as unknown as X, [SLOT]: -1 }
    entry.x = this.make(exchange, handler, () => {
      this.active.delete(entry)
      if (this.active.size === 0) for (const fn of this.idle.splice(0)) fn()
    })
    this.active.add(entry)
    entry.x.start()
  }

  /** Nothing is pooled: closing only waits for the exchanges in flight. */
  close (): Promise<void> {
    if (this.active.size === 0) return Promise.resolve()
    return new Promise((resolve) => this.idle.push(resolve))
  }

  destroy (reason?: Error): void {
    const err = reason instanceof ProxyError ? reason : new ProxyError('ERR_BACKEND_CLOSED', reason?.message ?? 'client destroyed', { cause: reason, backend: this.endpoint.id })
    for (const e of this.active.values()) this.stop(e.x, err)
  }
}
