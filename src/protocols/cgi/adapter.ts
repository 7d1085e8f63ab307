/**
 * The CGI protocol adapter (RFC 3875 over pipes): one process per request, like lighttpd's mod_cgi,
 * which shares only the environment builder and the response-head parser with the gateway modules.
 * The core routes, admits (`maxConcurrent` + `queue` bound how many scripts run at once), times out
 * (aborting `exchange.signal`), spools chunked bodies and builds the environment; the spawn layer
 * starts each process (`ClientContext.processes`) with a clean environment, only fds 0-2, its own
 * process group and the spawn's identity. Nothing here starts a process any other way.
 */
import { ProxyError } from '../../core/errors.js'
import type { BackendClient, ClientContext, Endpoint, Exchange, ProtocolAdapter, ResponseHandler } from '../../core/types.js'
import { CgiExchange } from './exchange.js'
import { parseCgiOptions, type CgiOptions } from './options.js'

export class CgiClient implements BackendClient {
  private readonly active = new Set<CgiExchange>()
  private idle: Array<() => void> = []

  constructor (private readonly endpoint: Endpoint, private readonly opts: CgiOptions, private readonly ctx: ClientContext) {}

  get inflight (): number {
    return this.active.size
  }

  dispatch (exchange: Exchange, handler: ResponseHandler): void {
    const x = new CgiExchange(this.endpoint, this.opts, this.ctx, exchange, handler, (done) => {
      this.active.delete(done)
      if (this.active.size === 0) for (const fn of this.idle.splice(0)) fn()
    })
    this.active.add(x)
    x.start()
  }

  /** Nothing is pooled: closing waits for the exchanges in flight (their processes are the spawn's). */
  close (): Promise<void> {
    if (this.active.size === 0) return Promise.resolve()
    return new Promise((resolve) => this.idle.push(resolve))
  }

  destroy (reason?: Error): void {
    const err = reason instanceof ProxyError ? reason : new ProxyError('ERR_BACKEND_CLOSED', reason?.message ?? 'client destroyed', { cause: reason, backend: this.endpoint.id })
    for (const x of [...this.active]) x.destroy(err)
  }
}

export const cgiAdapter: ProtocolAdapter<CgiOptions> = Object.freeze({
  name: 'cgi',
  capabilities: Object.freeze({
    keepAlive: false,
    multiplex: false,
    upgrade: false,
    cgiEnv: true,
    // RFC 3875 §4.2: the server MUST remove transfer-codings and recalculate CONTENT_LENGTH.
    needsContentLength: true,
    perRequestProcess: true
  }),
  parseOptions: parseCgiOptions,
  createClient: (endpoint: Endpoint, opts: CgiOptions, ctx: ClientContext) => new CgiClient(endpoint, opts, ctx)
})
