/**
 * proxycore — public API. Everything not exported here is internal.
 */
import { registerAdapter } from './core/registry.js'
import { httpAdapter } from './protocols/http/index.js'
import { fastcgiAdapter } from './protocols/fastcgi/index.js'
import { scgiAdapter } from './protocols/scgi/index.js'
import { cgiAdapter } from './protocols/cgi/index.js'
import { staticAdapter } from './protocols/static/index.js'

// Built-in adapters register here, never from the core (the core imports no protocol).
registerAdapter(httpAdapter)
registerAdapter(fastcgiAdapter)
registerAdapter(scgiAdapter)
registerAdapter(cgiAdapter)
registerAdapter(staticAdapter)

export { createProxy, type CreateProxyOptions, type Proxy } from './proxy.js'
export type { GcFunction } from './core/scavenge.js'
export { registerAdapter, getAdapter } from './core/registry.js'
export { ProxyError, ConfigError, ERRORS, statusFor, type ErrorCode, type ErrorPhase, type ConfigIssue } from './core/errors.js'
export { ProxyEvents, channels, type RequestStartEvent, type RequestEndEvent, type BackendStateEvent } from './core/events.js'
export { CgiResponseParser, type CgiHead, type CgiPushResult, type CgiResponseParserOptions } from './core/cgi/response-head.js'
export { CgiBodyFramer, deliverCgiHead } from './core/cgi/response-body.js'
export { buildCgiEnv, type CgiEnvInput } from './core/cgi/env.js'
export { envBytes } from './utf8.js'
export { fromSocketError, toProxyError } from './core/errors.js'
export { OneShotClient } from './core/one-shot-client.js'
export { isAborted, watchAbort, unwatchAbort } from './core/abort.js'
export {
  createStatus, STATUS_DEFAULTS, STATUS_ROUTES, collectStatus, STATUS_SCHEMA_VERSION, createMetrics, createAccessLog, StderrTail,
  type StatusHandler, type StatusOptions, type StatusSnapshot, type StatusTarget, type SpawnView, type RouteReport,
  type BackendReport, type SpawnReport, type ProcessReport, type Metrics, type AccessLog, type AccessLogOptions,
  type AccessLogFormat, type LiveOptions, type StderrTailOptions,
} from './status/index.js'
export { SpawnManager, PipeStarter, SPAWN_DEFAULTS, IDENTITY_CODES } from './spawn/index.js'
export type { SpawnSpec, SpawnStatus, ProcessStatus, SpawnState, ProcessState, ProcessStatusState, ManagerOptions } from './spawn/index.js'
export { loadConfig, loadConfigOrThrow, type LoadOptions, type LoadResult } from './config/load.js'
export { parseEndpoint } from './core/endpoint.js'
export { silentLogger } from './logger.js'
export { VERSION } from './version.js'
export { httpAdapter, fastcgiAdapter, scgiAdapter, cgiAdapter, staticAdapter }
export type {
  AdapterCapabilities, BackendClient, BackendSource, ClientContext, ClientInfo, Endpoint, Exchange, FlowControl,
  Logger, ProcessStarter, ProtocolAdapter, RawHeaders, ResponseHandler, ScriptInfo, SourceEndpoint, UpgradeHandler,
} from './core/types.js'
