/**
 * A BackendClient for protocols that reuse nothing — one connection (SCGI, uwsgi) or one process
 * (CGI) per exchange. It only keeps the exchanges in flight: `close()` waits for them, `destroy()`
 * ends them. Pooling, retries and timeouts stay in the core.
 */
import { ProxyError } from './errors.js'
import type { BackendClient, Endpoint, Exchange, ResponseHandler } from './types.js'

export class OneShotClient<X extends { start (): void }> implements BackendClient {
  private readonly active = new Set<X>()
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
    const x = this.make(exchange, handler, (done) => {
      this.active.delete(done)
      if (this.active.size === 0) for (const fn of this.idle.splice(0)) fn()
    })
    this.active.add(x)
    x.start()
  }

  /** Nothing is pooled: closing only waits for the exchanges in flight. */
  close (): Promise<void> {
    if (this.active.size === 0) return Promise.resolve()
    return new Promise((resolve) => this.idle.push(resolve))
  }

  destroy (reason?: Error): void {
    const err = reason instanceof ProxyError ? reason : new ProxyError('ERR_BACKEND_CLOSED', reason?.message ?? 'client destroyed', { cause: reason, backend: this.endpoint.id })
    for (const x of [...this.active]) this.stop(x, err)
  }
}
