/** Public API of the status module: page, JSON, live view, Prometheus metrics and access log. */
export { createStatus, STATUS_DEFAULTS, STATUS_ROUTES, type StatusHandler, type StatusOptions } from './handler.js'
export {
  collectStatus, STATUS_SCHEMA_VERSION,
  type BackendReport, type CollectOptions, type CrashReport, type ExitReport, type PendingRestartReport, type ProcessReport,
  type RouteReport, type SpawnReport, type SpawnStatusLike,
  type SpawnView, type StatusSnapshot, type StatusTarget,
} from './model.js'
export { createMetrics, type Metrics } from './metrics.js'
export { createAccessLog, type AccessLog, type AccessLogFormat, type AccessLogOptions } from './access-log.js'
export { StderrTail, type StderrTailOptions } from './stderr-tail.js'
export type { LiveOptions } from './live.js'
