/**
 * The embedding contract:
 *
 *   const proxy = await createProxy(config)          // same shape as the operator file
 *   http.createServer(proxy.handler).on('upgrade', proxy.upgrade).listen(8080)
 *   await proxy.close()                               // drains, stops every spawned process
 *
 * `handler` also works as Express/Connect middleware `(req, res, next)`: an unmatched request falls
 * through to `next()`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { compileProxy, type CompileInput } from './core/compile.js'
import { ProxyEvents } from './core/events.js'
import type { CompiledRoute } from './core/route.js'
import type { ProxyRuntime } from './core/runtime.js'
import type { BackendSource, Logger, ProcessStarter, ProtocolAdapter } from './core/types.js'
import { defaultLogger } from './logger.js'
import { VERSION } from './version.js'

export interface CreateProxyOptions extends CompileInput {
  /** Extra protocol adapters for this proxy only (see `registerAdapter` for global ones). */
  adapters?: ProtocolAdapter[]
  /** Backend sources by name, for routes with `spawn: name` (embedders bringing their own). */
  sources?: Record<string, BackendSource>
  /** Per-request process starters by name, for `cgi` routes with `spawn: name`. */
  processStarters?: Record<string, ProcessStarter>
  logger?: Logger
}

export interface Proxy {
  /** `(req, res)` for node:http, or `(req, res, next)` as middleware. */
  readonly handler: (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => void
  /** node:http 'checkContinue' listener: 413 without 100 for over-limit uploads (optional). */
  readonly checkContinue: (req: IncomingMessage, res: ServerResponse) => void
  /** node:http 'upgrade' listener (WebSocket and any Upgrade). */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void
  /** Typed events; the same events go to diagnostics_channel `proxycore:*`. */
  readonly events: ProxyEvents
  /** Compiled routes with their pools and counters (read-only view for status pages). */
  readonly routes: readonly CompiledRoute[]
  /** Exchanges in flight. */
  readonly inflight: number
  /** Stop admitting, finish in-flight exchanges (up to `graceMs`), release every connection. */
  close (graceMs?: number): Promise<void>
}

export async function createProxy (config: CreateProxyOptions): Promise<Proxy> {
  const events = new ProxyEvents()
  const runtime: ProxyRuntime = compileProxy(config, {
    ...(config.adapters !== undefined ? { adapters: config.adapters } : {}),
    sources: new Map(Object.entries(config.sources ?? {})),
    processStarters: new Map(Object.entries(config.processStarters ?? {})),
    log: config.logger ?? defaultLogger(),
    events,
    serverSoftware: `proxycore/${VERSION}`,
  })
  return {
    handler: (req, res, next) => runtime.handle(req, res, next),
    upgrade: (req, socket, head) => runtime.upgrade(req, socket, head),
    checkContinue: (req, res) => runtime.checkContinue(req, res),
    events,
    routes: runtime.routes,
    get inflight () { return runtime.inflight },
    close: (graceMs) => runtime.close(graceMs),
  }
}
