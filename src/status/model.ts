/**
 * The status data model: one JSON snapshot of a running proxy, shared by the HTML page, the JSON
 * endpoint and the live WebSocket view. The shape is versioned (`schema`) and documented in
 * docs/reference/status.md; fields are only ever added.
 *
 *   snapshot ─> routes[]  (route -> pool -> backends[], lighttpd's ext -> host -> procs)
 *           └─> spawns[]  (spawn -> processes[], plus FAILED reason and stderr tail)
 *
 * Nothing secret is collected: no environment, no request URLs, no query strings.
 */
import { readFileSync } from 'node:fs'
import type { CompiledRoute } from '../core/route.js'
import type { ProxyEvents } from '../core/events.js'
import { StaticSource } from '../core/pool.js'
import type { ExitInfo, ProcessStatus, SpawnEvents, SpawnStatus } from '../spawn/types.js'
import type { StderrTail } from './stderr-tail.js'

export const STATUS_SCHEMA_VERSION = 1

/** What the status module needs from a proxy: `createProxy()`'s result satisfies it. */
export interface StatusTarget {
  readonly routes: readonly CompiledRoute[]
  readonly events: ProxyEvents
  readonly inflight: number
  /** The proxy's SpawnManager (null/absent when it spawns nothing). */
  readonly spawns?: SpawnView | null
  /**
   * The addresses the server in front of it listens on (`http://host:port`, `unix:/path`), read at
   * every snapshot; `proxycore serve` passes its listeners. Absent: the snapshot has no `listening`
   * (a `createProxy()` result has none: the embedder's server listens, not the proxy).
   */
  readonly listening?: readonly string[]
}

/** The part of `SpawnManager` the status module reads. */
export interface SpawnView {
  status (): readonly SpawnStatusLike[]
  on<K extends keyof SpawnEvents> (event: K, fn: (...args: SpawnEvents[K]) => void): unknown
  off<K extends keyof SpawnEvents> (event: K, fn: (...args: SpawnEvents[K]) => void): unknown
}

/** Fields a manager may report beyond `SpawnStatus`; used when present. */
export type SpawnStatusLike = SpawnStatus & {
  /** Last stderr lines kept by the manager itself. */
  readonly stderrTail?: readonly string[]
}

export interface StatusSnapshot {
  schema: typeof STATUS_SCHEMA_VERSION
  software: string
  /** ISO 8601 time the snapshot was taken. */
  generatedAt: string
  /** Seconds since the status module started watching. */
  uptimeSeconds: number
  inflight: number
  /** Where proxycore listens (`http://127.0.0.1:8000`, `unix:/run/p.sock`); absent when the target names none (createProxy). */
  listening?: string[]
  routes: RouteReport[]
  spawns: SpawnReport[]
}

export interface RouteReport {
  name: string
  protocol: string
  /** Spawn feeding this route's pool, null for fixed backends. */
  spawn: string | null
  /** Counters since start (monotonic). */
  requests: number
  errors: number
  dropped: number
  /** Exchanges holding an admission slot / waiting for one. */
  active: number
  queued: number
  /** 0 = unlimited. */
  maxConcurrent: number
  /** Usable capacity: routable backends (or ready processes) of `capacity`. */
  available: number
  capacity: number
  /** available / capacity × 100, rounded to 0.1; null when capacity is 0. */
  availPercent: number | null
  /** Upper bounds of the latency buckets holding the quantile, ms; null = beyond the last bucket. */
  latency: { p50Ms: number | null, p99Ms: number | null, meanMs: number | null }
  backends: BackendReport[]
}

export interface BackendReport {
  /** Endpoint display id: `127.0.0.1:9000`, `unix:/run/a.sock`, or the spawn name for CGI. */
  id: string
  /** Source id (a spawned process's `name#seq`). */
  source: string
  state: 'up' | 'disabled' | 'draining'
  inflight: number
  requests: number
  failures: number
  lastError: string | null
}

export interface SpawnReport {
  name: string
  state: SpawnStatus['state']
  failed: boolean
  reason: string | null
  /** Processes not yet exited / ready (in rotation) / ready and without in-flight work. */
  alive: number
  ready: number
  idle: number
  /**
   * Up but out of rotation by recycling (counted in `alive`, never in `ready`): successors waiting
   * for their predecessor's limit, and processes at their limit held until their successor is up.
   */
  standby: number
  held: number
  /** maxProcs over all addresses; null for pipe spawns, or when the manager does not report it. */
  max: number | null
  /**
   * Processes wanted now (one per active slot: minProcs, or more scaled up on load), however many
   * run for them (a recycle's successor is not counted); null when the manager does not report it.
   */
  wanted: number | null
  /**
   * ready / wanted × 100: the share of the wanted processes that can take requests (0.1
   * precision); null for a pipe spawn. See docs/reference/status.md.
   */
  availPercent: number | null
  pipeChildren: number
  /** Pipe (CGI) spawns: 'fork-server' or 'direct'; null for socket spawns. */
  launcher: 'fork-server' | 'direct' | null
  /** The fork server's helper, compiled or Perl; null when none is used. */
  forkServer: 'compiled' | 'perl' | null
  droppedOutputBytes: number
  processes: ProcessReport[]
  /** Crash restarts over all its slots (0 for pipe spawns). */
  restarts: number
  /**
   * The last crash (unexpected exit, failed start or health check) of any of its processes, kept
   * after the process is gone: in `backoff` and `failed` it tells why. null when none.
   */
  lastCrash: CrashReport | null
  /** When the soonest pending restart is due (ISO 8601); null when none is pending. */
  nextRestartAt: string | null
  /** Slots waiting out a restart backoff, soonest first. */
  pendingRestarts: PendingRestartReport[]
  /** Last lines the spawn wrote to stderr (bounded). */
  stderrTail: string[]
}

export interface ExitReport { code: number | null, signal: string | null, at: string }

export interface CrashReport extends ExitReport {
  /** The process that crashed (`name#seq`), and its pid (null: it never ran, exec failed). */
  id: string
  pid: number | null
  /** Why its start failed (exec error, not connectable in time); null for a crash. */
  error: string | null
}

export interface PendingRestartReport {
  /** The slot's configured address. */
  address: string
  /** restart: the slot has no process. successor: a recycle's successor is retried, its predecessor serves. */
  kind: 'restart' | 'successor'
  restarts: number
  lastExit: ExitReport | null
  /** When the start is due (ISO 8601), and in how many seconds from `generatedAt` (0.1 precision, ≥ 0). */
  at: string
  inSeconds: number
}

export interface ProcessReport {
  id: string
  pid: number | null
  state: ProcessStatus['state']
  address: string
  requests: number
  /** Recycle limit (0 = unlimited), null when unknown. */
  maxRequests: number | null
  inflight: number
  uptimeSeconds: number
  restarts: number
  lastExit: ExitReport | null
  cpuSeconds: number | null
  rssBytes: number | null
  /** Real uid/gid the process runs as (from /proc), null when unreadable. */
  uid: number | null
  gid: number | null
}

export interface CollectOptions {
  software?: string
  startedAt?: number
  stderr?: StderrTail
  now?: () => number
}

const round1 = (n: number): number => Math.round(n * 10) / 10
const finite = (n: number): number | null => (Number.isFinite(n) ? n : null)
const percent = (a: number, b: number): number | null => (b > 0 ? round1((a / b) * 100) : null)

export function collectStatus (proxy: StatusTarget, opts: CollectOptions = {}): StatusSnapshot {
  const now = (opts.now ?? Date.now)()
  const spawnStatus = proxy.spawns?.status() ?? []
  const spawns = spawnStatus.map((s) => spawnReport(s, opts.stderr, now))
  const byName = new Map(spawns.map((s) => [s.name, s]))
  return {
    schema: STATUS_SCHEMA_VERSION,
    software: opts.software ?? 'proxycore',
    generatedAt: new Date(now).toISOString(),
    uptimeSeconds: round1((now - (opts.startedAt ?? now)) / 1000),
    inflight: proxy.inflight,
    ...(proxy.listening !== undefined ? { listening: [...proxy.listening] } : {}),
    routes: proxy.routes.map((r) => routeReport(r, byName)),
    spawns,
  }
}

function routeReport (r: CompiledRoute, spawns: ReadonlyMap<string, SpawnReport>): RouteReport {
  const pool = r.pool
  // A spawn feeds the pool when its source is the manager's (not the route's fixed list).
  const sp = pool.source instanceof StaticSource ? undefined : spawns.get(pool.source.name)
  const backends: BackendReport[] = [...pool.backends, ...pool.draining].map((b) => ({
    id: b.endpoint.id,
    source: b.sourceId,
    state: b.state,
    inflight: b.inflight,
    requests: b.requests,
    failures: b.failures,
    lastError: b.lastError === '' ? null : b.lastError,
  }))
  const usable = pool.backends.filter((b) => b.state === 'up').length
  const available = sp !== undefined ? sp.ready : usable
  // A spawn's availability is the share of the processes it wants that can take requests, not its
  // headroom: an idle pool below maxProcs is not "less available", it grows on demand; a recycle's
  // successor (booting or on standby) takes its predecessor's place and is no process more.
  const capacity = sp !== undefined ? spawnCapacity(sp.ready, sp.alive, sp.standby, sp.wanted) : pool.backends.length
  const st = r.stats
  let observed = 0
  for (const n of st.latency) observed += n
  return {
    name: r.name,
    protocol: r.adapter.name,
    spawn: sp?.name ?? null,
    requests: st.requests,
    errors: st.errors,
    dropped: st.dropped,
    active: r.admission.active,
    queued: r.admission.queued,
    maxConcurrent: r.admission.maxConcurrent,
    available,
    capacity,
    availPercent: percent(available, capacity),
    latency: {
      p50Ms: observed === 0 ? null : finite(st.quantile(0.5)),
      p99Ms: observed === 0 ? null : finite(st.quantile(0.99)),
      meanMs: observed === 0 ? null : round1(st.latencySumMs / observed),
    },
    backends,
  }
}

const exitReport = (e: ExitInfo | null): ExitReport | null => (e === null ? null : { code: e.code, signal: e.signal, at: new Date(e.at).toISOString() })

/**
 * The denominator of a spawn's availability: the processes it wants (one per active slot). A
 * recycle's successor, booting or on standby, and a retired predecessor still being stopped are no
 * wanted process more, so they do not lower it; a slot whose process crashed and waits for its
 * restart is still wanted and counts. At least `ready` and at least 1. A manager that does not
 * report `wanted`: the processes alive but a successor on standby, as before.
 */
export function spawnCapacity (ready: number, alive: number, standby: number, wanted: number | null): number {
  return Math.max(wanted ?? alive - standby, ready, 1)
}

function spawnReport (s: SpawnStatusLike, tail: StderrTail | undefined, now: number): SpawnReport {
  const alive = s.processes.filter((p) => p.state !== 'exited')
  // Only `ready` is in rotation: standby and held processes are up but take no requests.
  const ready = alive.filter((p) => p.state === 'ready')
  const standby = alive.filter((p) => p.state === 'standby').length
  const max = typeof s.maxProcs === 'number' ? s.maxProcs : null
  const wanted = typeof s.wanted === 'number' ? s.wanted : null
  const pending = (s.pendingRestarts ?? []).map((r): PendingRestartReport => ({
    address: r.address,
    kind: r.kind,
    restarts: r.restarts,
    lastExit: exitReport(r.lastExit),
    at: new Date(r.at).toISOString(),
    inSeconds: Math.max(0, round1((r.at - now) / 1000)),
  }))
  const crash = s.lastCrash ?? null
  return {
    name: s.name,
    state: s.state,
    failed: s.state === 'failed',
    reason: s.reason,
    alive: alive.length,
    ready: ready.length,
    idle: ready.filter((p) => p.inflight === 0).length,
    standby,
    held: alive.filter((p) => p.state === 'held').length,
    max,
    wanted,
    // A pipe (CGI) spawn keeps no processes to be available: a child per request.
    availPercent: s.launcher == null ? percent(ready.length, spawnCapacity(ready.length, alive.length, standby, wanted)) : null,
    pipeChildren: s.pipeChildren,
    launcher: s.launcher ?? null,
    forkServer: s.forkServer ?? null,
    droppedOutputBytes: s.droppedOutputBytes,
    processes: s.processes.map((p) => processReport(p, typeof s.maxRequests === 'number' ? s.maxRequests : null)),
    restarts: s.restarts ?? s.processes.reduce((n, p) => Math.max(n, p.restarts), 0),
    lastCrash: crash === null ? null : { ...(exitReport(crash) as ExitReport), id: crash.id, pid: crash.pid, error: crash.error },
    nextRestartAt: pending.length === 0 ? null : pending.reduce((a, b) => (Date.parse(b.at) < Date.parse(a.at) ? b : a)).at,
    pendingRestarts: pending,
    stderrTail: [...(s.stderrTail ?? tail?.lines(s.name) ?? [])],
  }
}

function processReport (p: ProcessStatus, maxRequests: number | null): ProcessReport {
  const who = p.pid === null ? null : procIdentity(p.pid)
  return {
    id: p.id,
    pid: p.pid,
    state: p.state,
    address: p.address,
    requests: p.requests,
    maxRequests,
    inflight: p.inflight,
    uptimeSeconds: round1(p.uptime / 1000),
    restarts: p.restarts,
    lastExit: exitReport(p.lastExit),
    cpuSeconds: p.cpuMs === null ? null : p.cpuMs / 1000,
    rssBytes: p.rssBytes,
    uid: who?.uid ?? null,
    gid: who?.gid ?? null,
  }
}

/** Real uid/gid of a process from /proc/PID/status (proc(5) `Uid:`/`Gid:` lines); Linux only. */
function procIdentity (pid: number): { uid: number, gid: number } | null {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8')
    const uid = /^Uid:\s+(\d+)/m.exec(text)
    const gid = /^Gid:\s+(\d+)/m.exec(text)
    return uid === null || gid === null ? null : { uid: Number(uid[1]), gid: Number(gid[1]) }
  } catch {
    return null
  }
}
