/**
 * The CGI protocol adapter (RFC 3875 over pipes): one process per request, like lighttpd's mod_cgi,
 * which shares only the environment builder and the response-head parser with the gateway modules.
 * The core routes, admits (`maxConcurrent` + `queue` bound how many scripts run at once), times out
 * (aborting `exchange.signal`), spools chunked bodies and builds the environment; the spawn layer
 * starts each process (`ClientContext.processes`) with a clean environment, only fds 0-2, its own
 * process group and the spawn's identity. Nothing here starts a process any other way.
 */
import { OneShotClient } from '../../core/one-shot-client.js'
import type { ClientContext, Endpoint, ProtocolAdapter } from '../../core/types.js'
import { CgiExchange } from './exchange.js'
import { parseCgiOptions, type CgiOptions } from './options.js'

/** One process per exchange: the core's OneShotClient does the bookkeeping. */
export class CgiClient extends OneShotClient<CgiExchange> {
  constructor (endpoint: Endpoint, opts: CgiOptions, ctx: ClientContext) {
    super(endpoint, (ex, handler, done) => new CgiExchange(endpoint, opts, ctx, ex, handler, done), (x, err) => x.destroy(err))
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
