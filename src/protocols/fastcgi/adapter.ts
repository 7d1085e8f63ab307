/**
 * The FastCGI protocol adapter (FastCGI 1.0, web-server side). The core builds the RFC 3875
 * environment, spools bodies to a known length, owns timeouts, retries and balancing; this adapter
 * turns one exchange into records and the records back into a response, per endpoint.
 */
import type { BackendClient, ClientContext, Endpoint, ProtocolAdapter } from '../../core/types.js'
import { FastcgiClient } from './client.js'
import { parseFastcgiOptions, type FastcgiOptions } from './options.js'

/**
 * One FastCGI client (its connections, idle pool and queue) per backend and options, shared by
 * every pool that sends to that backend: the routes on one spawn, a route and its authorizer, the
 * old and new generation across a reload. php-cgi and php-fpm workers serve one connection at a
 * time, so an idle keep-alive connection holds a worker; with a client per route, each kept idle
 * connections the others could not use, and with `PHP_FCGI_CHILDREN: 2` two routes hung a third
 * request until an idle connection timed out (60 s). nginx likewise keeps one keep-alive cache per
 * upstream. Each request connects with its own pool's context (its route's connect timeout); the
 * client is closed when its last user closes it.
 */
const shared = new Map<string, { client: FastcgiClient, users: number }>()

function sharedClient (endpoint: Endpoint, opts: FastcgiOptions, ctx: ClientContext): BackendClient {
  const key = `${endpoint.id}\0${JSON.stringify(opts)}`
  let entry = shared.get(key)
  if (entry === undefined) {
    entry = { client: new FastcgiClient(endpoint, opts, ctx), users: 0 }
    shared.set(key, entry)
  }
  const s = entry
  s.users++
  let released = false
  /** This user is done with it; true when it was the last one (then the client really goes). */
  const last = (): boolean => {
    if (released) return false
    released = true
    if (--s.users > 0) return false
    if (shared.get(key) === s) shared.delete(key)
    return true
  }
  return {
    dispatch: (exchange, handler) => { s.client.dispatch(exchange, handler, ctx) },
    get inflight () { return s.client.inflight },
    // Another user's exchanges go on; this user's were finished or aborted by the core already.
    close: async () => { if (last()) await s.client.close() },
    destroy: (reason) => { if (last()) s.client.destroy(reason) },
  }
}

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
  createClient: sharedClient,
})
