/**
 * proxycore — public API. Everything not exported here is internal.
 */
import { registerAdapter } from './core/registry.js'
import { httpAdapter } from './protocols/http/index.js'
import { fastcgiAdapter } from './protocols/fastcgi/index.js'
import { scgiAdapter } from './protocols/scgi/index.js'
import { cgiAdapter } from './protocols/cgi/index.js'

// Built-in adapters register here, never from the core (the core imports no protocol).
registerAdapter(httpAdapter)
registerAdapter(fastcgiAdapter)
registerAdapter(scgiAdapter)
registerAdapter(cgiAdapter)

export { createProxy, type CreateProxyOptions, type Proxy } from './proxy.js'
export { registerAdapter, getAdapter } from './core/registry.js'
export { ProxyError, ConfigError, ERRORS, statusFor, type ErrorCode, type ErrorPhase, type ConfigIssue } from './core/errors.js'
export { ProxyEvents, channels, type RequestStartEvent, type RequestEndEvent, type BackendStateEvent } from './core/events.js'
export { CgiResponseParser, type CgiHead } from './core/cgi/response-head.js'
export { buildCgiEnv } from './core/cgi/env.js'
export { parseEndpoint } from './core/endpoint.js'
export { silentLogger } from './logger.js'
export { VERSION } from './version.js'
export { httpAdapter, fastcgiAdapter, scgiAdapter, cgiAdapter }
export type {
  AdapterCapabilities, BackendClient, BackendSource, ClientContext, ClientInfo, Endpoint, Exchange, FlowControl,
  Logger, ProcessStarter, ProtocolAdapter, RawHeaders, ResponseHandler, ScriptInfo, SourceEndpoint, UpgradeHandler,
} from './core/types.js'
