/**
 * `spawns.<name>` as operators write it: the TypeBox mirror of src/spawn/types.ts `SpawnSpec`, with
 * durations and sizes as strings ("60s", "256MiB"). `toSpawnSpec()` (spawns.ts) converts to the
 * milliseconds/bytes the spawn manager takes. Defaults quoted here are the manager's SPAWN_DEFAULTS;
 * test/config/schema.test.ts checks they agree.
 */
import { Type, type Static } from '@sinclair/typebox'
import { Duration, Size, StrictRecord, StringOrList, VARIABLE_NAME_PATTERN, VARIABLE_VALUE_PATTERN } from './schema-parts.js'

const Identity = (description: string) => Type.Union([Type.String({ minLength: 1 }), Type.Integer({ minimum: 0 })], { description })

export const RestartSchema = Type.Object({
  initialDelay: Type.Optional(Duration('First delay before restarting a crashed process (systemd RestartSec).', '100ms')),
  maxDelay: Type.Optional(Duration('Cap of the doubling restart delay.', '15s')),
  stableAfter: Type.Optional(Duration('Uptime after which the delay resets to initialDelay.', '30s')),
  maxStarts: Type.Optional(Type.Integer({ minimum: 1, default: 5, description: 'More crash restarts than this inside `window` put the spawn in FAILED (systemd StartLimitBurst); a reload (SIGHUP) restarts a FAILED spawn, embedders call `spawns.clear(name)`.' })),
  window: Type.Optional(Duration('The start-rate window (systemd StartLimitIntervalSec). 0 turns the start limit off, as in systemd: a program that crashes at once is then restarted after each delay for ever, at once with maxDelay 0.', '10s')),
}, { additionalProperties: false, description: 'Crash restarts: exponential backoff plus a start-rate limit, so a broken backend cannot spin.' })

export const HealthCheckSchema = Type.Object({
  type: Type.Union([Type.Literal('connect'), Type.Literal('command')], { description: 'connect: open a connection to the process socket. command: run `command`, exit 0 = healthy (gets SPAWN_ADDRESS).' }),
  command: Type.Optional(StringOrList('argv (or a whitespace-split string) for type command.')),
  interval: Type.Optional(Duration('Time between checks of one process.', '10s')),
  timeout: Type.Optional(Duration('A check slower than this counts as failed.', '2s')),
  failures: Type.Optional(Type.Integer({ minimum: 1, default: 3, description: 'Consecutive failures that restart the process.' })),
}, { additionalProperties: false, description: 'Active health checks; failing processes are restarted.' })

export const LimitsSchema = Type.Object({
  memory: Type.Optional(Size('Address-space limit per process (RLIMIT_AS). Reserved, never-touched ranges count too, and Node reserves 0.75–12 GiB that way: use data for Node (docs/guides/multi-user.md).')),
  data: Type.Optional(Size('Writable memory per process: heap and private writable mappings (RLIMIT_DATA). Address space only reserved is not counted; Node 20/22 start in 128MiB, Node 24 needs 640MiB.')),
  cpu: Type.Optional(Duration('CPU time per process (RLIMIT_CPU), rounded up to whole seconds.')),
  nofile: Type.Optional(Type.Integer({ minimum: 1, description: 'Open files per process (RLIMIT_NOFILE).' })),
  processes: Type.Optional(Type.Integer({ minimum: 1, description: 'Processes of the target uid (RLIMIT_NPROC).' })),
}, { additionalProperties: false, description: 'Resource limits applied with prlimit(1).' })

export const SpawnSchema = Type.Object({
  binPath: Type.Optional(StringOrList('Program and arguments: argv list, or a string split on whitespace (no shell). Required for socket spawns; for pipe spawns an optional interpreter, e.g. "/usr/bin/perl -wT".')),
  socketType: Type.Optional(Type.Union([Type.Literal('socket'), Type.Literal('pipe')], { default: 'socket', description: 'socket: long-lived processes behind a listening socket (http, fastcgi, scgi). pipe: one process per request (cgi routes only).' })),
  socketName: Type.Optional(StringOrList('Listening address(es): host:port, [v6]:port, or a path / unix:/path = unix socket. One process group per address. Port 0 lets the OS pick.')),
  handoff: Type.Optional(Type.Union([Type.Literal('fd0'), Type.Literal('self'), Type.Literal('systemd')], { default: 'fd0', description: 'fd0: the socket is passed as stdin (FastCGI FCGI_LISTENSOCK_FILENO: php-cgi, fcgiwrap). self: the program binds HOST/PORT or SOCKET from its environment; a unix socket must then lie in a directory only root and the spawn user can write, sticky or not, with no directory above it writable by others, and, with `user`, on a path other users cannot search (ERR_SPAWN_SOCKET_DIR_UNSAFE), and must end up owned by the spawn user (ERR_SPAWN_SOCKET_NOT_OWNED). systemd: fd 3 with LISTEN_FDS/LISTEN_PID.' })),
  environment: Type.Optional(StrictRecord(Type.String({ pattern: VARIABLE_NAME_PATTERN }), Type.String({ pattern: VARIABLE_VALUE_PATTERN }), 'Variables set for the program (after copyEnvironment); no NUL anywhere, no `=` in a name.')),
  copyEnvironment: Type.Optional(Type.Array(Type.String(), { description: 'Names copied from proxycore\'s environment; nothing else leaks (e.g. [PATH]).' })),
  maxRequests: Type.Optional(Type.Integer({ minimum: 0, default: 0, description: 'Recycle a process after this many requests, without dropping any; 0 = never.' })),
  minProcs: Type.Optional(Type.Integer({ minimum: 0, default: 1, description: 'Processes kept per address even when idle; 0 = start on the first request.' })),
  maxProcs: Type.Optional(Type.Integer({ minimum: 1, default: 1, description: 'Upper bound of processes per address; more start while all are busy.' })),
  maxLoadPerProc: Type.Optional(Type.Integer({ minimum: 1, default: 1, description: 'In-flight requests per process before it counts as busy.' })),
  idleTimeout: Type.Optional(Duration('A process above minProcs idle this long is stopped; 0 = never shrink.', '60s')),
  cwd: Type.Optional(Type.String({ description: 'Working directory. In a config file: relative to that file, and by default the directory of the file that defines the spawn (with chroot: the directory of the binary inside the root). Through the API (SpawnManager): by default the directory of an absolute binPath, else the working directory of proxycore.' })),
  killSignal: Type.Optional(Type.String({ pattern: '^SIG[A-Z0-9]+$', default: 'SIGTERM', description: 'First stop signal sent to the process group (then SIGTERM, then SIGKILL).' })),
  stopTimeout: Type.Optional(Duration('Grace between stop signals, and the bound on draining in-flight requests.', '10s')),
  startTimeout: Type.Optional(Duration('A process not accepting connections within this is killed and counted as a failed start.', '10s')),
  restart: Type.Optional(RestartSchema),
  healthCheck: Type.Optional(HealthCheckSchema),
  dependsOn: Type.Optional(Type.Array(Type.String(), { description: 'Socket spawns that must be running before this one starts.' })),
  user: Type.Optional(Identity('Run as this user (name or uid); needs `group`, and proxycore running as root.')),
  group: Type.Optional(Identity('Run with this group (name or gid).')),
  tenant: Type.Optional(Type.String({ description: 'Name of a `tenants` entry giving user, group and limits.' })),
  limits: Type.Optional(LimitsSchema),
  chroot: Type.Optional(Type.String({ pattern: '^/', description: 'Run the user-switched process chrooted here (absolute, root-owned, not writable by group/others). binPath and cwd are then paths inside this root (cwd default: the binary\'s directory there); socketName stays a host path. Socket spawns only.' })),
  groups: Type.Optional(Type.Union([Type.Literal('none'), Type.Literal('user')], { default: 'none', description: 'Supplementary groups of a user-switched process: none, or the target user\'s own groups (needs util-linux setpriv).' })),
  launcher: Type.Optional(Type.Union([Type.Literal('auto'), Type.Literal('fork-server'), Type.Literal('direct')], { default: 'auto', description: 'How a pipe (CGI) spawn starts its per-request processes. fork-server: a small helper forks and execs them, so the proxy process never forks (forking it costs 1-2 ms of proxy CPU per request); the compiled helper (vfork) when npm install could build it with a C compiler, else a Perl one (x64, arm64, riscv64 or loong64). direct: Node\'s own spawn(). auto: fork-server when either helper can run, else direct. Socket spawns always start directly.' })),
}, { additionalProperties: false, description: 'One backend program and how to run it (lighttpd mod_spawn).' })

export const TenantSchema = Type.Object({
  user: Identity('User (name or uid) of every spawn naming this tenant.'),
  group: Identity('Group (name or gid).'),
  limits: Type.Optional(LimitsSchema),
}, { additionalProperties: false, description: 'A shared identity + limits block for spawns.' })

export const IdentityPolicySchema = Type.Object({
  minUid: Type.Optional(Type.Integer({ minimum: 1, default: 1000, description: 'Lowest uid a spawn may run as (suexec AP_UID_MIN); uid 0 is always refused.' })),
  minGid: Type.Optional(Type.Integer({ minimum: 1, default: 1000, description: 'Lowest gid a spawn may run as (suexec AP_GID_MIN); gid 0 is always refused.' })),
  allowedRoots: Type.Optional(Type.Array(Type.String({ pattern: '^/' }), { minItems: 1, description: 'Absolute directories: the program of a user-switched spawn must resolve (realpath) inside one of them.' })),
}, { additionalProperties: false, description: 'Policy for spawns with user/group (suEXEC): id floors and allowed program roots.' })

export type SpawnConfig = Static<typeof SpawnSchema>
export type TenantConfig = Static<typeof TenantSchema>
export type LimitsConfig = Static<typeof LimitsSchema>
export type IdentityPolicyConfig = Static<typeof IdentityPolicySchema>
