/**
 * Spec normalisation: the one defaults table for spawns, address parsing, and the clean child
 * environment. Everything downstream works on `ResolvedSpec` and never looks at optional fields.
 */
import { basename, dirname, isAbsolute, resolve } from 'node:path'
import type { Handoff, HealthCheckSpec, LimitsSpec, SpawnAddress, SpawnSpec } from './types.js'
import { spawnError } from './types.js'

/** Defaults, modelled on RELIABILITY.md §4.8 (systemd, PM2, supervisord, lighttpd). */
export const SPAWN_DEFAULTS = {
  socketType: 'socket',
  handoff: 'fd0',
  launcher: 'auto',
  maxRequests: 0,
  minProcs: 1,
  maxProcs: 1,
  maxLoadPerProc: 1,
  idleTimeout: 60_000,
  killSignal: 'SIGTERM',
  stopTimeout: 10_000,
  startTimeout: 10_000,
  restart: { initialDelay: 100, maxDelay: 15_000, stableAfter: 30_000, maxStarts: 5, window: 10_000 },
  healthCheck: { interval: 10_000, timeout: 2_000, failures: 3 },
} as const

export interface ResolvedSpec {
  readonly name: string
  readonly argv: string[]
  readonly socketType: 'socket' | 'pipe'
  readonly addresses: SpawnAddress[]
  readonly handoff: Handoff
  readonly environment: Record<string, string>
  readonly copyEnvironment: string[]
  readonly maxRequests: number
  readonly minProcs: number
  readonly maxProcs: number
  readonly maxLoadPerProc: number
  readonly idleTimeout: number
  readonly cwd: string | undefined
  readonly killSignal: NodeJS.Signals
  readonly stopTimeout: number
  readonly startTimeout: number
  readonly restart: Required<NonNullable<SpawnSpec['restart']>>
  readonly healthCheck: (Required<Omit<HealthCheckSpec, 'command'>> & { command: string[] }) | null
  readonly dependsOn: string[]
  readonly user: string | number | undefined
  readonly group: string | number | undefined
  readonly tenant: string | undefined
  readonly limits: LimitsSpec | undefined
  readonly groups: 'none' | 'user'
  readonly chroot: string | undefined
  readonly launcher: 'auto' | 'fork-server' | 'direct'
}

export function splitArgv (v: string | string[] | undefined): string[] {
  if (v === undefined) return []
  return Array.isArray(v) ? [...v] : v.split(/\s+/).filter((s) => s !== '')
}

/**
 * A unix path as the host binds, probes and connects to it: a relative one from the host's working
 * directory, made absolute here, since a `handoff: self` program got it as SOCKET and resolved it
 * from its own cwd (the binary's directory by default): it bound elsewhere and never became ready.
 */
function unixPath (path: string): SpawnAddress {
  return { kind: 'unix', path: path === '' || isAbsolute(path) ? path : resolve(path) }
}

/** `host:port`, `[v6]:port`, or a path (unix socket). `unix:` prefix accepted. */
export function parseAddress (raw: string): SpawnAddress {
  if (raw.startsWith('unix:')) return unixPath(raw.slice(5))
  if (raw.startsWith('/') || raw.startsWith('.')) return unixPath(raw)
  const v6 = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(raw)
  const v4 = /^([^:[\]]+):(\d+)$/.exec(raw)
  const m = v6 ?? v4
  if (m === null) throw spawnError('ERR_SPAWN_BAD_ADDRESS', `socketName ${JSON.stringify(raw)}: expected host:port, [v6]:port or a path`)
  const port = Number(m[2])
  if (port > 65535) throw spawnError('ERR_SPAWN_BAD_ADDRESS', `socketName ${JSON.stringify(raw)}: port out of range`)
  return { kind: 'tcp', host: m[1], port }
}

/** Display form shared with the core's Endpoint ids. */
export function formatAddress (a: SpawnAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`
}

function nonNegative (name: string, field: string, v: number): number {
  if (!Number.isFinite(v) || v < 0) throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${name}.${field}: expected a number >= 0, found ${String(v)}`)
  return v
}

/**
 * A field given as `undefined` takes its default (as in the rest of the spec, where `??` applies):
 * spreading `{ maxStarts: undefined }` over the defaults used to switch the start limit off, and
 * an undefined `initialDelay` made every backoff delay NaN (an immediate restart).
 */
function pick<K extends string> (name: string, section: string, defaults: Record<K, number>, given: Partial<Record<K, number>> | undefined, min: Partial<Record<K, number>>): Record<K, number> {
  const out = { ...defaults }
  for (const key of Object.keys(defaults) as K[]) {
    const v = given?.[key]
    if (v === undefined) continue
    const floor = min[key] ?? 0
    if (typeof v !== 'number' || !Number.isFinite(v) || v < floor) {
      throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${name}.${section}.${key}: expected a number >= ${floor}, found ${String(v)}`)
    }
    out[key] = v
  }
  return out
}

function resolveRestart (name: string, given: SpawnSpec['restart']): ResolvedSpec['restart'] {
  return pick<keyof typeof SPAWN_DEFAULTS.restart>(name, 'restart', SPAWN_DEFAULTS.restart, given, {})
}

/** A check every 0 ms (or with no timeout) would be a busy loop of probes. */
function resolveHealthTimes (name: string, given: HealthCheckSpec): { interval: number, timeout: number, failures: number } {
  return pick<'interval' | 'timeout' | 'failures'>(name, 'healthCheck', SPAWN_DEFAULTS.healthCheck, given, { interval: 1, timeout: 1, failures: 1 })
}

/**
 * `environment` as exec can pass it: a name with `=` was split by the child at the first one (`A=B`
 * set `A` to `B=…`, silently), and a NUL was a failed start on every try (Node refuses it at
 * spawn), a crash loop into FAILED. The config schema refuses both; this is the embedder's API.
 */
function resolveEnvironment (name: string, env: Record<string, string> | undefined): Record<string, string> {
  for (const [key, v] of Object.entries(env ?? {})) {
    if (key === '' || key.includes('=') || key.includes('\0')) throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${name}.environment: ${JSON.stringify(key)} is not a variable name (empty, or with = or NUL)`)
    if (typeof v === 'string' && v.includes('\0')) throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${name}.environment.${key}: a value cannot contain NUL bytes`)
  }
  return { ...env }
}

export function resolveSpec (name: string, spec: SpawnSpec): ResolvedSpec {
  const d = SPAWN_DEFAULTS
  const socketType = spec.socketType ?? d.socketType
  const argv = splitArgv(spec.binPath)
  if (socketType === 'socket' && argv.length === 0) throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${name}.binPath: required for socketType socket`)
  const names = spec.socketName === undefined ? [] : Array.isArray(spec.socketName) ? spec.socketName : [spec.socketName]
  if (socketType === 'socket' && names.length === 0) throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${name}.socketName: required for socketType socket`)
  const minProcs = nonNegative(name, 'minProcs', spec.minProcs ?? d.minProcs)
  const maxProcs = Math.max(1, nonNegative(name, 'maxProcs', spec.maxProcs ?? Math.max(minProcs, d.maxProcs)))
  if (minProcs > maxProcs) throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${name}.minProcs: ${minProcs} exceeds maxProcs ${maxProcs}`)
  const hc = spec.healthCheck
  const launcher = spec.launcher ?? d.launcher
  if (!['auto', 'fork-server', 'direct'].includes(launcher)) throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${name}.launcher: expected auto, fork-server or direct, found ${String(launcher)}`)
  if (socketType === 'socket' && launcher === 'fork-server') throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${name}.launcher: the fork server starts pipe (CGI) spawns only`)
  return {
    name,
    argv,
    socketType,
    addresses: names.map(parseAddress),
    handoff: spec.handoff ?? d.handoff,
    environment: resolveEnvironment(name, spec.environment),
    copyEnvironment: [...(spec.copyEnvironment ?? [])],
    maxRequests: nonNegative(name, 'maxRequests', spec.maxRequests ?? d.maxRequests),
    minProcs,
    maxProcs,
    maxLoadPerProc: Math.max(1, spec.maxLoadPerProc ?? d.maxLoadPerProc),
    idleTimeout: nonNegative(name, 'idleTimeout', spec.idleTimeout ?? d.idleTimeout),
    // lighttpd runs the backend in the binary's directory; relative binaries keep the host's cwd.
    cwd: spec.cwd ?? (argv.length > 0 && isAbsolute(argv[0]) ? dirname(argv[0]) : undefined),
    killSignal: spec.killSignal ?? d.killSignal,
    stopTimeout: nonNegative(name, 'stopTimeout', spec.stopTimeout ?? d.stopTimeout),
    startTimeout: nonNegative(name, 'startTimeout', spec.startTimeout ?? d.startTimeout),
    restart: resolveRestart(name, spec.restart),
    healthCheck: hc === undefined
      ? null
      : { ...hc, ...resolveHealthTimes(name, hc), command: splitArgv(hc.command) },
    dependsOn: [...(spec.dependsOn ?? [])],
    user: spec.user,
    group: spec.group,
    tenant: spec.tenant,
    limits: spec.limits,
    groups: spec.groups ?? 'none',
    chroot: spec.chroot,
    launcher,
  }
}

/** Marker every child carries, so a later host can recognise its orphans (see pidfile.ts). */
export const MARKER_ENV = 'PROXYCORE_SPAWN'

/**
 * The child's environment, built from nothing (suexec clean_env, php-fpm clear_env): only the
 * `copyEnvironment` names, then `environment`, then (a pipe spawn's) request variables but the
 * HTTP_* ones `environment` sets, then the marker. `LD_*`, `NODE_OPTIONS` and secrets
 * of the host never leak (RELIABILITY.md §1.2, AC-15).
 */
export function childEnvironment (spec: ResolvedSpec, extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {}
  for (const key of spec.copyEnvironment) {
    const v = process.env[key]
    if (v !== undefined) env[key] = v
  }
  Object.assign(env, spec.environment)
  // Own keys only (Object.keys, as Object.assign did): a key on a polluted Object.prototype is
  // never a variable (test/spawn/prototype-pollution.test.ts).
  for (const key of Object.keys(extra)) {
    // A pipe spawn's request variables: a client header arrives as HTTP_*, and never replaces a
    // variable the operator set in `environment` (CVE-2018-1283's shape: a header posing as a
    // server-set variable). Every other request variable is the request's and goes over.
    if (key.startsWith('HTTP_') && Object.hasOwn(spec.environment, key)) continue
    env[key] = extra[key] as string
  }
  // php-cgi exits on its own after a compiled-in 500 requests when PHP_FCGI_MAX_REQUESTS is unset
  // [VERIFIED: request 501 → ECONNRESET, then ECONNREFUSED with PHP_FCGI_CHILDREN=0]. A spawn that
  // speaks php-cgi's vocabulary, or runs php-cgi itself as a FastCGI server (`php-cgi`,
  // `php-cgi8.2`; without PHP_FCGI_CHILDREN it also quit after 500: 34 of 3000 requests failed
  // across its restarts), gets 0 (unlimited): recycling is the manager's job (maxRequests).
  const phpCgi = env.PHP_FCGI_CHILDREN !== undefined || (spec.socketType === 'socket' && /^php-cgi/.test(basename(spec.argv[0] ?? '')))
  if (phpCgi && env.PHP_FCGI_MAX_REQUESTS === undefined) env.PHP_FCGI_MAX_REQUESTS = '0'
  env[MARKER_ENV] = spec.name
  return env
}
