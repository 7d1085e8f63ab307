/**
 * The SCGI protocol adapter (SCGI 2008-06-23, client side). Thin by design, like lighttpd's
 * mod_scgi: the core builds the RFC 3875 environment, spools chunked bodies to a known length,
 * and owns timeouts, retries, pooling and balancing. One connection per request (the server ends a
 * response by closing), so there is no keep-alive and no multiplexing.
 */
import { ProxyError } from '../../core/errors.js'
import type { BackendClient, ClientContext, Endpoint, Exchange, ProtocolAdapter, ResponseHandler } from '../../core/types.js'
import { ScgiExchange } from './exchange.js'
import { parseScgiOptions, type ScgiOptions } from './options.js'

export class ScgiClient implements BackendClient {
  private readonly active = new Set<ScgiExchange>()
  private idle: Array<() => void> = []

  constructor (private readonly endpoint: Endpoint, private readonly opts: ScgiOptions, private readonly ctx: ClientContext) {}

  get inflight (): number {
    return this.active.size
  }

  dispatch (exchange: Exchange, handler: ResponseHandler): void {
    const x = new ScgiExchange(this.endpoint, this.opts, this.ctx, exchange, handler, (done) => {
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
    for (const x of [...this.active]) x.abort(err)
  }
}

export const scgiAdapter: ProtocolAdapter<ScgiOptions> = Object.freeze({
  name: 'scgi',
  capabilities: Object.freeze({
    keepAlive: false,
    multiplex: false,
    upgrade: false,
    cgiEnv: true,
    // SCGI §3: CONTENT_LENGTH is the first header, so the length must be known before sending.
    needsContentLength: true,
    perRequestProcess: false
  }),
  parseOptions: parseScgiOptions,
  createClient: (endpoint: Endpoint, opts: ScgiOptions, ctx: ClientContext) => new ScgiClient(endpoint, opts, ctx)
})
