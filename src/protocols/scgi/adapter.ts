/**
 * The SCGI protocol adapter (SCGI 2008-06-23, client side). Thin by design, like lighttpd's
 * mod_scgi: the core builds the RFC 3875 environment, spools chunked bodies to a known length,
 * and owns timeouts, retries, pooling and balancing. One connection per request (the server ends a
 * response by closing), so there is no keep-alive and no multiplexing.
 */
import { OneShotClient } from '../../core/one-shot-client.js'
import type { ClientContext, Endpoint, ProtocolAdapter } from '../../core/types.js'
import { ScgiExchange, scgiParserOptions } from './exchange.js'
import { parseScgiOptions, type ScgiOptions } from './options.js'

/** One connection per exchange: the core's OneShotClient does the bookkeeping. */
export class ScgiClient extends OneShotClient<ScgiExchange> {
  constructor (endpoint: Endpoint, opts: ScgiOptions, ctx: ClientContext) {
    const parserOptions = scgiParserOptions(ctx, opts)
    super(endpoint, (ex, handler, done) => new ScgiExchange(endpoint, opts, ctx, ex, handler, done, parserOptions), (x, err) => x.abort(err))
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
