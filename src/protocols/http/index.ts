/** The HTTP/1.1 protocol adapter. */
import type { ProtocolAdapter } from '../../core/types.js'
import { HttpClient } from './client.js'
import { parseHttpOptions, type HttpOptions } from './options.js'

export const httpAdapter: ProtocolAdapter<HttpOptions> = {
  name: 'http',
  capabilities: { keepAlive: true, multiplex: false, upgrade: true, cgiEnv: false, needsContentLength: false, perRequestProcess: false },
  parseOptions: parseHttpOptions,
  createClient: (endpoint, opts, ctx) => new HttpClient(endpoint, opts, ctx),
}

export type { HttpOptions }
