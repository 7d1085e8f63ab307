/**
 * Operator spawn config -> the spawn manager's `SpawnSpec` (durations to ms, sizes to bytes), and
 * the cross-field rules no schema can express: a route's spawn exists and fits its protocol, no two
 * listeners share an address, identities are complete, dependencies are known.
 */
import { isIP, SocketAddress } from 'node:net'
import { resolve } from 'node:path'
import type { ConfigIssue } from '../core/errors.js'
import { getAdapter } from '../core/registry.js'
import { TrustedProxies } from '../core/trust.js'
import type { ProtocolAdapter } from '../core/types.js'
import type { LimitsSpec, ManagerOptions, SpawnSpec, TenantSpec } from '../spawn/index.js'
import { UNIX_PATH_MAX } from '../spawn/listen-socket.js'
import { escapeKey } from './locate.js'
import type { RouteConfig } from './schema.js'
import type { IdentityPolicyConfig, LimitsConfig, SpawnConfig, TenantConfig } from './spawn-schema.js'
import { parseDuration, parseSize } from './units.js'

const ms = (v: number | string | undefined): number | undefined => v === undefined ? undefined : parseDuration(v) ?? undefined

function toLimits (l: LimitsConfig | undefined): LimitsSpec | undefined {
  if (l === undefined) return undefined
  const cpu = ms(l.cpu)
  return {
    ...(l.memory !== undefined ? { memory: parseSize(l.memory) ?? undefined } : {}),
    ...(l.data !== undefined ? { data: parseSize(l.data) ?? undefined } : {}),
    // RLIMIT_CPU counts whole seconds; round up so "500ms" is not 0 = unlimited.
    ...(cpu !== undefined ? { cpu: Math.max(1, Math.ceil(cpu / 1000)) } : {}),
    ...(l.nofile !== undefined ? { nofile: l.nofile } : {}),
    ...(l.processes !== undefined ? { processes: l.processes } : {}),
  }
}

/** Drop undefined fields so the manager's `??` defaults apply. */
function compact<T extends object> (o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T
}

export function toSpawnSpec (c: SpawnConfig): SpawnSpec {
  return compact<SpawnSpec>({
    binPath: c.binPath,
    socketType: c.socketType,
    socketName: c.socketName,
    handoff: c.handoff,
    environment: c.environment,
    copyEnvironment: c.copyEnvironment,
    maxRequests: c.maxRequests,
    minProcs: c.minProcs,
    maxProcs: c.maxProcs,
    maxLoadPerProc: c.maxLoadPerProc,
    idleTimeout: ms(c.idleTimeout),
    cwd: c.cwd,
    killSignal: c.killSignal as NodeJS.Signals | undefined,
    stopTimeout: ms(c.stopTimeout),
    startTimeout: ms(c.startTimeout),
    restart: c.restart === undefined
      ? undefined
      : compact({
        initialDelay: ms(c.restart.initialDelay),
        maxDelay: ms(c.restart.maxDelay),
        stableAfter: ms(c.restart.stableAfter),
        maxStarts: c.restart.maxStarts,
        window: ms(c.restart.window),
      }),
    healthCheck: c.healthCheck === undefined
      ? undefined
      : compact({
        type: c.healthCheck.type,
        command: c.healthCheck.command,
        interval: ms(c.healthCheck.interval),
        timeout: ms(c.healthCheck.timeout),
        failures: c.healthCheck.failures,
      }),
    dependsOn: c.dependsOn,
    user: c.user,
    group: c.group,
    tenant: c.tenant,
    limits: toLimits(c.limits),
    groups: c.groups,
    chroot: c.chroot,
    launcher: c.launcher,
  })
}

export interface SpawnLayerConfig {
  spawns?: Record<string, SpawnConfig>
  tenants?: Record<string, TenantConfig>
  identity?: IdentityPolicyConfig
  runDir?: string
  logDir?: string
}

export function managerOptions (c: SpawnLayerConfig): ManagerOptions {
  const tenants: Record<string, TenantSpec> = {}
  for (const [name, t] of Object.entries(c.tenants ?? {})) {
    tenants[name] = compact({ user: t.user, group: t.group, limits: toLimits(t.limits) })
  }
  return compact<ManagerOptions>({
    runDir: c.runDir,
    log: c.logDir !== undefined ? { dir: c.logDir } : undefined,
    tenants: c.tenants !== undefined ? tenants : undefined,
    minUid: c.identity?.minUid,
    minGid: c.identity?.minGid,
    allowedRoots: c.identity?.allowedRoots,
  })
}

/**
 * The unix socket path an address names, as written (`unix:` stripped), or null for a TCP address:
 * everything after `unix:` (a relative `unix:s.sock`, even `unix:127.0.0.1:80`), or a bare path
 * starting with `/` or `.` (src/spawn/spec.ts parseAddress, the gateway's bind).
 */
export function unixPathOf (raw: string): string | null {
  if (raw.startsWith('unix:')) return raw.slice(5)
  return raw.startsWith('/') || raw.startsWith('.') ? raw : null
}

/**
 * A comparable key for an address, or null for port 0 (the OS picks, so never a conflict). One
 * socket has one key however it is written, without a DNS lookup (`check` does none): a unix path
 * resolved against the cwd, as the gateway's bind and the spawn manager's listen resolve it (the
 * loader has made a spawn's `./x.sock` absolute against the config's directory already); an IP
 * literal in one spelling (`[0:0::1]:p` is `[::1]:p`, `[0::0]:p` the wildcard `[::]:p`, an
 * IPv4-mapped `[::ffff:127.0.0.1]:p` is `127.0.0.1:p`: Linux binds it as that IPv4 address); a host
 * name in lower case, as written otherwise: `localhost:p` is not `127.0.0.1:p` (it may resolve to
 * ::1). `port` is 0 for a unix path, `v6` says an IPv6 literal, `wildcard` the families a wildcard
 * takes on its port: `[::]:p` and `:p` (Node binds `::` dual-stack) both, `0.0.0.0:p` IPv4 alone
 * (`[::1]:p` binds beside it).
 */
export function addressKey (raw: string): { key: string, port: number, v6: boolean, wildcard: 'any' | 'ipv4' | null } | null {
  const path = unixPathOf(raw)
  if (path !== null) return path === '' ? null : { key: `unix:${resolve(path)}`, port: 0, v6: false, wildcard: null }
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(raw)
  if (m === null) return null
  const port = Number(m[2])
  if (port === 0) return null
  const host = canonicalHost(m[1])
  const wildcard = host === '0.0.0.0' ? 'ipv4' : host === '::' || host === '' ? 'any' : null
  return { key: `tcp:${host}:${port}`, port, v6: isIP(host.replace(/%.*$/, '')) === 6, wildcard }
}

/** An IP literal as Node prints it (a zone kept as written; IPv4-mapped as IPv4), anything else in lower case. */
function canonicalHost (host: string): string {
  const family = isIP(host)
  if (family !== 6) return family === 4 ? host : host.toLowerCase()
  const zone = host.indexOf('%')
  const ip = zone < 0 ? host : host.slice(0, zone)
  try {
    const printed = new SocketAddress({ address: ip, family: 'ipv6' }).address
    // Node prints an IPv4-mapped address as ::ffff:a.b.c.d, whatever the spelling.
    if (zone < 0 && printed.startsWith('::ffff:') && isIP(printed.slice(7)) === 4) return printed.slice(7)
    return printed + (zone < 0 ? '' : host.slice(zone))
  } catch {
    return host.toLowerCase()
  }
}

/**
 * A unix socketName no process could bind (the spawn manager refuses it at start,
 * ERR_SPAWN_BAD_ADDRESS): sun_path holds UNIX_PATH_MAX bytes, and a spawn's further processes (more
 * than one, or a recycle's successor beside its predecessor) listen at `<path>-N`.
 */
function unixPathProblem (raw: string, maxProcs: number, recycles: boolean): string | null {
  const path = unixPathOf(raw)
  if (path === null || path === '') return null
  const bytes = Buffer.byteLength(resolve(path))
  const suffix = maxProcs > 1 || recycles ? 1 + String(maxProcs).length : 0
  if (bytes + suffix <= UNIX_PATH_MAX) return null
  return suffix === 0 || bytes > UNIX_PATH_MAX
    ? `a unix socket path of ${bytes} bytes: at most ${UNIX_PATH_MAX} fit (sun_path)`
    : `a unix socket path of ${bytes} bytes: further processes listen at <path>-N, ${bytes + suffix} bytes, and at most ${UNIX_PATH_MAX} fit (sun_path)`
}

interface Listener { at: string, address: string }

/** A TCP address's port beyond 65535 (the spawn's and the gateway's bind refuse it), or null. */
function portProblem (raw: string): string | null {
  if (/^(unix:|\/|\.)/.test(raw)) return null
  const m = /^\[?[^\]]*?\]?:(\d+)$/.exec(raw)
  return m !== null && Number(m[1]) > 65535 ? `port ${m[1]} is out of range (0-65535)` : null
}

/** Why the gateway could not bind a `listen` entry (src/gateway/server.ts listen), or null. */
function listenProblem (raw: string): string | null {
  // A path longer than sun_path: Node binds it cut short (another file), and serve failed after.
  if (raw.startsWith('unix:')) return raw.length > 5 ? unixPathProblem(raw, 1, false) : 'a unix: listener needs a socket path (unix:/path)'
  // Brackets around an IPv6 address only, both or neither: the gateway read `[::1:0`, `127.0.0.1]:0`
  // or `[127.0.0.1]:0` as host and port, a guess; a backend address of that text is refused.
  const m = /^(?:\[([^\]]*)\]|([^[\]]*)):\d+$/.exec(raw)
  if (m === null || (m[1] !== undefined && isIP(m[1]) !== 6)) return `not an address ${JSON.stringify(raw)}: expected host:port, [v6]:port or unix:/path`
  if (m[2] !== undefined && isIP(m[2]) === 6) return 'IPv6 addresses need brackets: [::1]:port'
  return portProblem(raw)
}

function addressConflicts (listeners: Listener[]): ConfigIssue[] {
  type Key = NonNullable<ReturnType<typeof addressKey>>
  const issues: ConfigIssue[] = []
  const seen = new Map<string, { l: Listener, k: Key }>()
  // A wildcard takes its port in its families: `any` every address, `ipv4` all but an IPv6 literal
  // (a host name may resolve to IPv4, so it counts as one).
  const takes = (w: Key, other: Key): boolean => w.wildcard === 'any' || (w.wildcard === 'ipv4' && !other.v6)
  for (const l of listeners) {
    const k = addressKey(l.address)
    if (k === null) continue
    const clash = seen.get(k.key)?.l ?? (k.key.startsWith('tcp:')
      ? [...seen.values()].find((o) => o.k.key.startsWith('tcp:') && o.k.port === k.port && (takes(k, o.k) || takes(o.k, k)))?.l
      : undefined)
    if (clash !== undefined) {
      issues.push({ path: l.at, message: `address ${l.address} is already used by ${clash.at}`, found: l.address, expected: 'an address no other listener or spawn uses' })
    }
    seen.set(k.key, { l, k })
  }
  return issues
}

export interface CrossFieldInput extends SpawnLayerConfig {
  listen?: string | string[]
  routes?: RouteConfig[]
  status?: { allow?: string[] }
}

/**
 * Each `status.allow` entry parsed as createStatus will, so a bad one is a config issue at its path
 * (as compile reports `/trustedProxies`), not a throw in `serve` after the spawns have started.
 */
function statusAllowIssues (allow: readonly string[]): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  allow.forEach((entry, i) => {
    if (entry === 'unix:') return // every peer of a unix-socket listener (createStatus)
    try { new TrustedProxies([entry]) } catch (err) {
      issues.push({ path: `/status/allow/${i}`, message: (err as Error).message, found: entry, expected: 'IP addresses or CIDRs, or unix:' })
    }
  })
  return issues
}

/**
 * Rules across fields. `external` are spawn names an embedder provides itself (`sources` /
 * `processStarters` of createProxy); `perRequest(protocol)` says whether a protocol runs one process
 * per request (the cgi adapter), or null when the protocol is unknown (compile reports that).
 * `malformed` are spawns defined with schema issues and left out of `c`: naming one is no error here.
 */
export function crossFieldIssues (c: CrossFieldInput, external: ReadonlySet<string>, perRequest: (protocol: string) => boolean | null, malformed: ReadonlySet<string> = new Set()): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  const spawns = c.spawns ?? {}
  const names = Object.keys(spawns)
  // Own keys only: a route naming `constructor` or `toString` is no spawn.
  const spawnNamed = (n: string): SpawnConfig | undefined => Object.hasOwn(spawns, n) ? spawns[n] : undefined
  const listeners: Listener[] = [];
  [c.listen ?? []].flat().forEach((a, i) => {
    const at = Array.isArray(c.listen) ? `/listen/${i}` : '/listen'
    const why = listenProblem(a)
    if (why !== null) issues.push({ path: at, message: why, found: a, expected: 'host:port (port 0-65535), [v6]:port or unix:/path' })
    listeners.push({ at, address: a })
  })

  for (const [name, s] of Object.entries(spawns)) {
    const at = `/spawns/${escapeKey(name)}`
    const pipe = s.socketType === 'pipe'
    const addrs = [s.socketName ?? []].flat()
    if (!pipe && (s.binPath === undefined || [s.binPath].flat().join('').trim() === '')) {
      issues.push({ path: `${at}/binPath`, message: 'a socket spawn needs binPath', expected: 'a program path or argv list' })
    }
    for (const [key, v] of [['binPath', s.binPath], ['healthCheck/command', s.healthCheck?.command]] as const) {
      // The string form is split on whitespace, no shell: `sh -c "exec app"` would pass `"exec` and `app"`.
      if (typeof v === 'string' && /["'\\]/.test(v)) {
        issues.push({ path: `${at}/${key}`, message: 'a string is split on whitespace, not by a shell: quotes and backslashes are passed as they are; use the list form for an argument with spaces', found: v, expected: 'a list, e.g. [sh, -c, "exec app --flag"]' })
      }
    }
    if (!pipe && addrs.length === 0) {
      issues.push({ path: `${at}/socketName`, message: 'a socket spawn needs socketName', expected: 'host:port, [v6]:port or a unix socket path' })
    }
    if (pipe && s.socketName !== undefined) {
      issues.push({ path: `${at}/socketName`, message: 'a pipe spawn has no socket (one process per request on stdin/stdout)', found: s.socketName, expected: 'no socketName, or socketType: socket' })
    }
    addrs.forEach((a, i) => {
      const where = Array.isArray(s.socketName) ? `${at}/socketName/${i}` : `${at}/socketName`
      const port = portProblem(a)
      if (addressKey(a) === null && !/:0$/.test(a)) issues.push({ path: where, message: `not an address: ${JSON.stringify(a)}`, found: a, expected: 'host:port, [v6]:port or a unix socket path' })
      else if (port !== null) issues.push({ path: where, message: port, found: a, expected: 'host:port with a port 0-65535' })
      else {
        const long = unixPathProblem(a, s.maxProcs ?? 1, (s.maxRequests ?? 0) > 0)
        if (long !== null) issues.push({ path: where, message: long, found: a, expected: `a unix socket path of at most ${UNIX_PATH_MAX} bytes` })
      }
      listeners.push({ at: where, address: a })
    })
    if (s.minProcs !== undefined && s.maxProcs !== undefined && s.minProcs > s.maxProcs) {
      issues.push({ path: `${at}/minProcs`, message: `minProcs ${s.minProcs} exceeds maxProcs ${s.maxProcs}`, found: s.minProcs, expected: `at most ${s.maxProcs}` })
    }
    if (s.user !== undefined && s.group === undefined) {
      issues.push({ path: `${at}/group`, message: 'user needs group (a process never keeps root\'s group)', expected: 'a group name or gid' })
    }
    if (s.group !== undefined && s.user === undefined) {
      issues.push({ path: `${at}/user`, message: 'group without user', expected: 'a user name or uid' })
    }
    if (s.tenant !== undefined) {
      if (c.tenants === undefined || !Object.hasOwn(c.tenants, s.tenant)) issues.push({ path: `${at}/tenant`, message: `no tenant named ${JSON.stringify(s.tenant)}`, found: s.tenant, expected: Object.keys(c.tenants ?? {}).join(' | ') || 'a name under `tenants`' })
      if (s.user !== undefined) issues.push({ path: `${at}/user`, message: 'set either tenant or user/group, not both', found: s.user })
    }
    if (s.healthCheck?.type === 'command' && s.healthCheck.command === undefined) {
      issues.push({ path: `${at}/healthCheck/command`, message: 'healthCheck type command needs command', expected: 'argv list or string' })
    }
    // A check every 0 ms is a busy loop of probes; one with no time to answer always fails.
    for (const key of ['interval', 'timeout'] as const) {
      const v = s.healthCheck?.[key]
      if (v !== undefined && ms(v) === 0) issues.push({ path: `${at}/healthCheck/${key}`, message: `healthCheck ${key} must be above 0`, found: v, expected: 'a duration above 0, like "5s"' })
    }
    s.dependsOn?.forEach((d, i) => {
      const dep = spawnNamed(d)
      if (d === name) issues.push({ path: `${at}/dependsOn/${i}`, message: 'a spawn cannot depend on itself', found: d })
      else if (dep === undefined && malformed.has(d)) return
      else if (dep === undefined) issues.push({ path: `${at}/dependsOn/${i}`, message: `no spawn named ${JSON.stringify(d)}`, found: d, expected: names.join(' | ') })
      else if (dep.socketType === 'pipe') issues.push({ path: `${at}/dependsOn/${i}`, message: `${d} is a pipe spawn; only socket spawns can be depended on`, found: d })
    })
  }
  issues.push(...addressConflicts(listeners))
  if (c.status?.allow !== undefined) issues.push(...statusAllowIssues(c.status.allow))

  c.routes?.forEach((r, i) => {
    if (r.spawn === undefined) return
    const at = `/routes/${i}/spawn`
    const s = spawnNamed(r.spawn)
    const perReq = perRequest(r.protocol)
    if (s === undefined) {
      if (!external.has(r.spawn) && !malformed.has(r.spawn)) issues.push({ path: at, message: `no spawn named ${JSON.stringify(r.spawn)}`, found: r.spawn, expected: names.join(' | ') || 'a spawn defined under `spawns`' })
      return
    }
    if (perReq === null) return
    if (s.socketType === 'pipe' && !perReq) {
      issues.push({ path: at, message: `spawn ${r.spawn} is a pipe spawn (one process per request): only the cgi protocol can use it, not ${r.protocol}`, found: r.spawn, expected: 'protocol: cgi, or a socket spawn' })
    }
    if (s.socketType !== 'pipe' && perReq) {
      issues.push({ path: at, message: `protocol ${r.protocol} starts one process per request: its spawn needs socketType: pipe`, found: r.spawn, expected: 'a spawn with socketType: pipe' })
    }
  })
  return issues
}

export interface CrossFieldOptions {
  adapters?: readonly ProtocolAdapter[]
  /** Spawn names provided by the embedder (`sources` / `processStarters`). */
  externalSpawns?: Iterable<string>
}

function isRecord (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/**
 * `crossFieldIssues` over the parts of a config whose shape is right: `shapeIssues` are the schema's
 * issues, and a malformed part already has its own. A spawn with an issue (a bad name, a bad value)
 * is left out, and never reported as missing where a route or dependency names it.
 */
export function crossFieldCheck (value: unknown, shapeIssues: readonly ConfigIssue[], opts: CrossFieldOptions = {}): ConfigIssue[] {
  if (!isRecord(value)) return []
  const known = [...new Set(shapeIssues.map((i) => i.path))]
  const hasIssue = (at: string): boolean => known.some((p) => p === at || p.startsWith(`${at}/`))
  const malformed = new Set(isRecord(value.spawns) ? Object.keys(value.spawns).filter((n) => hasIssue(`/spawns/${escapeKey(n)}`)) : [])
  const spawns = isRecord(value.spawns)
    ? Object.fromEntries(Object.entries(value.spawns).filter(([n]) => !malformed.has(n)))
    : undefined
  // A route of an adapter that serves files itself (static) takes no spawn at all: compile says so
  // (`takes no spawn`), rather than this check calling the name unknown.
  const local = (r: unknown): boolean => {
    if (!isRecord(r) || typeof r.protocol !== 'string') return false
    const caps = getAdapter(r.protocol, opts.adapters)?.capabilities as { local?: boolean } | undefined
    return caps?.local === true
  }
  const routes = Array.isArray(value.routes)
    ? (value.routes as unknown[]).map((r, i) => hasIssue(`/routes/${i}`) ? { protocol: '' } : local(r) ? { ...(r as object), spawn: undefined } : r)
    : undefined
  const perRequest = (protocol: string): boolean | null => {
    if (protocol === '') return null
    const a = getAdapter(protocol, opts.adapters)
    return a === undefined ? (protocol === 'cgi' ? true : null) : a.capabilities.perRequestProcess
  }
  const input = { ...value, spawns, routes } as CrossFieldInput
  if (known.includes('/listen')) delete input.listen
  if (hasIssue('/status')) delete input.status
  return crossFieldIssues(input, new Set(opts.externalSpawns ?? []), perRequest, malformed)
}
