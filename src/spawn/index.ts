/** Public API of the spawn layer (no HTTP inside; the core sees it through BackendSource). */
export { SpawnManager, type SpawnSource } from './manager.js'
export { PipeStarter } from './pipe-starter.js'
export { SPAWN_DEFAULTS, MARKER_ENV, parseAddress, formatAddress } from './spec.js'
export { LOG_DEFAULTS } from './output.js'
export { RestartPolicy, realClock, type RestartDecision } from './backoff.js'
export type {
  Clock, ExitInfo, Handoff, HealthCheckSpec, LimitsSpec, LogOptions, ManagerOptions, ProcessState, ProcessStatus,
  RestartSpec, SpawnAddress, SpawnError, SpawnEvents, SpawnSpec, SpawnState, SpawnStatus, TenantSpec,
} from './types.js'
