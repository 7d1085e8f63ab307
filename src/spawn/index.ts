/** Public API of the spawn layer (no HTTP inside; the core sees it through BackendSource). */
export { SpawnManager, type SpawnSource } from './manager.js'
export { PipeStarter, type PipeRequest } from './pipe-starter.js'
export { ForkServer, ForkChild, type PipeChild } from './fork-server.js'
export { SPAWN_DEFAULTS, MARKER_ENV, parseAddress, formatAddress } from './spec.js'
export { LOG_DEFAULTS } from './output.js'
export { IDENTITY_CODES, type Identity } from './identity.js'
export { SAFE_PATH, CHILD_UMASK, type CgroupSupport } from './launcher.js'
export { RestartPolicy, realClock, type RestartDecision } from './backoff.js'
export type {
  Clock, ExitInfo, Handoff, HealthCheckSpec, LimitsSpec, LogOptions, ManagerOptions, ProcessState, ProcessStatusState, ProcessStatus,
  RestartSpec, SpawnAddress, SpawnError, SpawnEvents, SpawnSpec, SpawnState, SpawnStatus, TenantSpec,
} from './types.js'
