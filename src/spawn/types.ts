/**
 * The spawn data model, in lighttpd's `gw_backend.h` shape:
 *
 *   SpawnManager ──> SpawnGroup (one per `spawns.<name>`) ──> Slot (one per socketName address / instance)
 *                                                              └──> SpawnedProcess (the live child in it)
 *
 * A spawn knows nothing about HTTP. It starts processes, hands each its own listening socket,
 * supervises them and reports the ready ones to the core through the `BackendSource` shape.
 *
 * Durations are plain milliseconds; the config layer converts "60s".
 */

/** Where a backend listens. `id` form matches the core: `127.0.0.1:9000`, `[::1]:9000`, `unix:/run/a.sock`. */
export type SpawnAddress =
  | { readonly kind: 'tcp', readonly host: string, readonly port: number }
  | { readonly kind: 'unix', readonly path: string }

/** How the listening socket reaches the program. */
export type Handoff =
  /** The manager binds and passes the socket as fd 0 (FastCGI spec §2.2, FCGI_LISTENSOCK_FILENO): php-cgi, fcgiwrap. */
  | 'fd0'
  /** The program binds its own address, given as HOST/PORT or SOCKET in its environment. */
  | 'self'
  /** sd_listen_fds(3): socket on fd 3, LISTEN_FDS=1, LISTEN_PID=<child pid>. */
  | 'systemd'

export interface RestartSpec {
  /** First delay before restarting a crashed process (systemd RestartSec default 100 ms). */
  initialDelay?: number
  /** Delay cap; each crash doubles the previous delay (PM2 caps at 15 s). */
  maxDelay?: number
  /** Uptime after which the backoff resets to `initialDelay` (PM2 EXP_BACKOFF_RESET_TIMER 30 s). */
  stableAfter?: number
  /** More than this many crash restarts inside `window` puts the spawn in FAILED (systemd StartLimitBurst 5). */
  maxStarts?: number
  /** The start-rate window (systemd StartLimitIntervalSec 10 s). */
  window?: number
}

export interface HealthCheckSpec {
  /** connect: open a connection to the process's socket. command: run `command`; exit 0 = healthy. */
  type: 'connect' | 'command'
  /** argv (or a whitespace-split string) for type command; it gets SPAWN_ADDRESS in its env. */
  command?: string | string[]
  /** Time between checks of one process. */
  interval?: number
  /** A check slower than this counts as failed. */
  timeout?: number
  /** Consecutive failures that make the manager restart the process. */
  failures?: number
}

/** Resource limits applied through prlimit(1) (issue 6). Sizes in bytes, cpu in seconds. */
export interface LimitsSpec {
  /** RLIMIT_AS, bytes: address space, reserved ranges included. */
  memory?: number
  /** RLIMIT_DATA, bytes: heap and private writable mappings (Linux ≥ 4.7). */
  data?: number
  /** RLIMIT_CPU, seconds of CPU time. */
  cpu?: number
  /** RLIMIT_NOFILE. */
  nofile?: number
  /** RLIMIT_NPROC (counts every process of the target uid). */
  processes?: number
}

/** One backend program, as operators write it under `spawns.<name>`. */
export interface SpawnSpec {
  /** Program and arguments: argv array, or a string split on whitespace (no shell, no quoting). Optional for pipe spawns (interpreter). */
  binPath?: string | string[]
  /** socket: long-lived processes behind a listening socket. pipe: CGI, one process per request via `pipeStarter()`. */
  socketType?: 'socket' | 'pipe'
  /** One or more addresses (`host:port`, `[v6]:port`, or a path = unix socket); one process group per name. */
  socketName?: string | string[]
  /** How the socket reaches the program; default fd0. */
  handoff?: Handoff
  /** Variables set in the child's environment (after `copyEnvironment`). */
  environment?: Record<string, string>
  /** Names copied from the host environment; nothing else leaks (lighttpd bin-copy-environment). */
  copyEnvironment?: string[]
  /**
   * Recycle a process after it was handed this many requests, make-before-break: its replacement
   * starts a tenth earlier and takes over at the limit; 0 = unlimited.
   */
  maxRequests?: number
  /** Processes kept per address even when idle; 0 = start on the first request. */
  minProcs?: number
  /** Upper bound of processes per address; more start while every process is busy. */
  maxProcs?: number
  /** In-flight requests per process before it counts as busy (lighttpd max-load-per-proc). */
  maxLoadPerProc?: number
  /** A process above minProcs idle this long is stopped; 0 = never shrink. */
  idleTimeout?: number
  /** Working directory; default the binary's directory (lighttpd) or the host's cwd. */
  cwd?: string
  /** First stop signal sent to the process group (then SIGTERM, then SIGKILL). */
  killSignal?: NodeJS.Signals
  /** Grace between stop signals, and bound on draining in-flight requests. */
  stopTimeout?: number
  /** A process not ready within this is killed and counted as a failed start. */
  startTimeout?: number
  restart?: RestartSpec
  healthCheck?: HealthCheckSpec
  /** Spawns that must be running before this one starts. */
  dependsOn?: string[]
  /** Target user (name or id) — issue 6; `group` is required with it. */
  user?: string | number
  group?: string | number
  /** Named tenant environment (identity + limits block) from `ManagerOptions.tenants`. */
  tenant?: string
  limits?: LimitsSpec
  /**
   * Supplementary groups of a user-switched child. none (default): no supplementary groups (Node's
   * setgroups(0)). user: the target user's groups (initgroups), through util-linux setpriv.
   */
  groups?: 'none' | 'user'
  /**
   * Run the user-switched child chrooted into this absolute directory (root-owned, not writable by
   * group/others), through util-linux unshare --root. binPath and cwd are then paths inside it;
   * socket spawns only.
   */
  chroot?: string
  /**
   * How a pipe spawn (CGI) starts its per-request processes. fork-server: through a small helper
   * that forks and execs them, so the proxy's big process never forks: the compiled one when npm
   * install built it, else the Perl one (see docs/design/spawn.md). direct: Node's own
   * child_process.spawn. auto (default): the fork server when either helper can run, else
   * direct. Socket spawns always start directly.
   */
  launcher?: 'auto' | 'fork-server' | 'direct'
}

/** A process's life, like lighttpd's PROC_STATE_*. */
export type ProcessState =
  /** Forked; waiting until exec succeeded and the socket is connectable. Not routable. */
  | 'starting'
  /** Serving: listed by `source().list()`. */
  | 'ready'
  /** Out of `list()` (recycled, scaled down, unhealthy or closing); waits for in-flight to reach 0. */
  | 'draining'
  /** Stop signals sent to its process group; waiting for every member to exit. */
  | 'stopping'
  /** Reaped, group empty. Terminal. */
  | 'exited'

/**
 * A process's state as `status()` reports it: its `ProcessState`, except that a ready process
 * recycling keeps out of `list()` is not shown as `ready` (it is up, but takes no requests).
 */
export type ProcessStatusState =
  | ProcessState
  /** A recycle's successor, up before its predecessor reached maxRequests; out of `list()` until the swap. */
  | 'standby'
  /** At maxRequests while its successor still boots: out of `list()`, not stopped until the successor is ready. */
  | 'held'

/** A spawn's life (all its addresses together). */
export type SpawnState =
  /** Nothing runs and nothing is wanted yet (minProcs 0 before the first request, or scaled to zero). */
  | 'idle'
  /** Held until every `dependsOn` spawn is running; `reason` names the one it waits for. */
  | 'waiting'
  /** Processes are starting; none is ready yet. */
  | 'starting'
  /** At least one process is ready. */
  | 'running'
  /**
   * A process crashed (or failed its start or health check) and none is ready: its process group
   * is still being stopped, or its restart waits out the backoff delay.
   */
  | 'backoff'
  /**
   * Start-rate limit hit (or a permanent error); nothing starts until `clear()`. `ensure()`
   * rejects while nothing is ready (a failed recycle leaves the old processes serving).
   */
  | 'failed'
  /** `close()` is draining and stopping it. */
  | 'stopping'
  /** Closed. Terminal. */
  | 'stopped'

export interface ExitInfo {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  /** Epoch ms (clock.now()). */
  readonly at: number
}

export interface ProcessStatus {
  /** Endpoint id as the core sees it (`name#seq`). */
  readonly id: string
  readonly pid: number | null
  /** `ready` only while in `list()`; `standby`/`held` for ready processes recycling keeps out of it. */
  readonly state: ProcessStatusState
  /** `host:port`, `[v6]:port` or `unix:/path`. */
  readonly address: string
  /** Requests handed to this process. */
  readonly requests: number
  readonly inflight: number
  /** ms since spawn. */
  readonly uptime: number
  /** Crash restarts of this process's slot so far. */
  readonly restarts: number
  /** How the previous process in this slot ended. */
  readonly lastExit: ExitInfo | null
  /** From /proc: user+system CPU ms and resident set bytes (null when unreadable). */
  readonly cpuMs: number | null
  readonly rssBytes: number | null
}

/**
 * The last crash of a spawn's processes (an unexpected exit, a failed start or health check), kept
 * after the process is reaped: while its restart waits out the backoff, and in FAILED, it is what
 * tells why.
 */
export interface CrashInfo extends ExitInfo {
  /** Endpoint id (`name#seq`) of the process that crashed. */
  readonly id: string
  /** null when it never ran (exec failed). */
  readonly pid: number | null
  /** Why its start failed (exec error, not connectable within startTimeout); null for a crash. */
  readonly error: string | null
}

/** A slot whose next start waits out the restart backoff. */
export interface PendingRestart {
  /** The slot's configured address (its next process may be given another, see group.ts). */
  readonly address: string
  /**
   * restart: the slot has no process (a crash or failed start). successor: a recycle's successor
   * failed to start and is retried; its predecessor serves on meanwhile.
   */
  readonly kind: 'restart' | 'successor'
  /** Crash restarts of this slot so far, the one waiting included. */
  readonly restarts: number
  /** How the slot's last process ended. */
  readonly lastExit: ExitInfo | null
  /** Epoch ms (clock.now()) the next start is due. */
  readonly at: number
}

export interface SpawnStatus {
  readonly name: string
  readonly state: SpawnState
  /** Why it is waiting or failed (e.g. `start-limit-hit`, `waiting for db`). */
  readonly reason: string | null
  readonly processes: readonly ProcessStatus[]
  /** Per-request (pipe) children alive now. */
  readonly pipeChildren: number
  /**
   * How a pipe spawn starts its children (`spawns.<name>.launcher` as resolved); null for socket
   * spawns. Optional: a manager of the embedder's may leave it out.
   */
  readonly launcher?: 'fork-server' | 'direct' | null
  /** The fork server's helper: compiled (built at npm install) or Perl; null when none is used. */
  readonly forkServer?: 'compiled' | 'perl' | null
  /** Output bytes dropped because the log sink was over its cap. */
  readonly droppedOutputBytes: number
  /** Upper bound of processes over all addresses (maxProcs × addresses); absent for pipe spawns. */
  readonly maxProcs?: number
  /** Recycle limit per process; 0 = unlimited. Absent for pipe spawns. */
  readonly maxRequests?: number
  /**
   * Processes wanted now: one per active slot (minProcs, or more scaled up on load), whatever
   * its process is doing (starting, ready, crashed and waiting for its restart). A recycle's
   * successor takes its predecessor's place and is not counted. Absent for pipe spawns.
   */
  readonly wanted?: number
  /** Crash restarts over all its slots (kept through FAILED and clear()). Absent for pipe spawns. */
  readonly restarts?: number
  /** The last crash; null when none. Absent for pipe spawns. */
  readonly lastCrash?: CrashInfo | null
  /** Slots waiting out a restart backoff, soonest first. Absent for pipe spawns. */
  readonly pendingRestarts?: readonly PendingRestart[]
}

/** Timers and time, injectable so tests of backoff finish in milliseconds. */
export interface Clock {
  now (): number
  setTimeout (fn: () => void, ms: number): unknown
  clearTimeout (handle: unknown): void
}

export interface LogOptions {
  /** Directory for `<name>.log` files; without it output only goes to 'stderr' events. */
  dir?: string
  /** Rotate when a file would grow past this many bytes (default 10 MiB). */
  maxSize?: number
  /** Rotated files kept: `<name>.log.1` … `.N` (default 3). */
  keep?: number
  /** Bytes queued for the file beyond which output is dropped and counted (default 1 MiB). */
  maxBuffered?: number
}

export interface ManagerOptions {
  clock?: Clock
  /** Directory for pid files; enables cleanup of processes orphaned by a previous host (see docs). */
  runDir?: string
  log?: LogOptions
  /** Issue 6: uid/gid floors for user switching (suexec AP_UID_MIN; default 1000). */
  minUid?: number
  minGid?: number
  /** Issue 6: binaries of user-switched spawns must lie under one of these roots. */
  allowedRoots?: string[]
  /** Issue 6: named identity + limits blocks shared by spawns (`spawn.tenant`). */
  tenants?: Record<string, TenantSpec>
}

export interface TenantSpec {
  user: string | number
  group: string | number
  limits?: LimitsSpec
}

export interface SpawnEvents {
  spawn: [{ spawn: string, id: string, pid: number, address: string }]
  ready: [{ spawn: string, id: string, pid: number, address: string }]
  exit: [{ spawn: string, id: string, pid: number, code: number | null, signal: NodeJS.Signals | null, expected: boolean }]
  restart: [{ spawn: string, slot: number, delay: number, restarts: number }]
  failed: [{ spawn: string, reason: string }]
  /**
   * A slot's remembered port was taken by another socket while its process was down: the new
   * process listens at `address` (a fresh kernel port) instead of `wanted`.
   */
  'address-changed': [{ spawn: string, id: string, wanted: string, address: string, reason: string }]
  recycle: [{ spawn: string, id: string, requests: number }]
  stderr: [{ spawn: string, pid: number, stream: 'stdout' | 'stderr', chunk: Buffer }]
  /** A process's stdout or stderr pipe ended (or was cut off): no more 'stderr' events for it. */
  'output-end': [{ spawn: string, pid: number, stream: 'stdout' | 'stderr' }]
}

/** An Error with a stable `code` (the core maps ERR_SPAWN_* to 503). */
export interface SpawnError extends Error {
  code: string
}

export function spawnError (code: string, message: string, cause?: unknown): SpawnError {
  const err = new Error(message, cause === undefined ? undefined : { cause }) as SpawnError
  err.code = code
  return err
}
