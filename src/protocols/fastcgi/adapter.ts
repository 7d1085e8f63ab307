/**
 * The FastCGI protocol adapter (FastCGI 1.0, web-server side). The core builds the RFC 3875
 * environment, spools bodies to a known length, owns timeouts, retries and balancing; this adapter
 * turns one exchange into records and the records back into a response, per endpoint.
 */
import type { ClientContext, Endpoint, ProtocolAdapter } from '../../core/types.js'
import { FastcgiClient } from './client.js'
import { parseFastcgiOptions, type FastcgiOptions } from './options.js'

export const fastcgiAdapter: ProtocolAdapter<FastcgiOptions> = Object.freeze({
  name: 'fastcgi',
  capabilities: Object.freeze({
    keepAlive: true,
    multiplex: true,
    upgrade: false,
    cgiEnv: true,
    // FastCGI 1.0 §6.2: the application reads CONTENT_LENGTH bytes of FCGI_STDIN.
    needsContentLength: true,
    perRequestProcess: false,
  }),
  parseOptions: parseFastcgiOptions,
  createClient: (endpoint: Endpoint, opts: FastcgiOptions, ctx: ClientContext) => new FastcgiClient(endpoint, opts, ctx),
})
