/**
 * Config -> running proxy. Validation reports every problem at once, each with its path; then routes
 * are compiled once (matchers, pools, admission) so the request path does no config work.
 */
import { realpathSync } from 'node:fs'
import type { ValueError } from '@sinclair/typebox/errors'
import type { RouteConfig } from '../config/schema.js'
import { isProxyConfig } from '../config/validators.generated.js'
import { parseDuration, parseSize } from '../config/units.js'
import { AddressError, parseEndpoint } from './endpoint.js'
import { connectEndpoint } from './connect.js'
import { ConfigError, type ConfigIssue } from './errors.js'
import { ProxyEvents } from './events.js'
import { BackendPool, StaticSource } from './pool.js'
import { getAdapter, adapterNames } from './registry.js'
import type { AuthorizerSettings } from './authorizer.js'
import { CompiledRoute, type CgiRouteSettings } from './route.js'
import { Router, normalizeExt, regexHazard, routeHost } from './router.js'
import { ProxyRuntime } from './runtime.js'
import { BodyScavenger, type GcFunction } from './scavenge.js'
import { TrustedProxies, type ForwardedHeader } from './trust.js'
import type { BackendSource, ClientContext, Logger, ProcessStarter, ProtocolAdapter } from './types.js'

export interface CompileInput {
  routes: RouteConfig[]
  trustedProxies?: string[]
  /** The header a trusted peer's client chain is read from (default x-forwarded-for). */
  forwardedHeader?: ForwardedHeader
  serverName?: string
  maxResponseHeadSize?: number | string
}

export interface CompileDeps {
  adapters?: readonly ProtocolAdapter[]
  /** Backend sources by spawn name (the spawn manager's, or an embedder's own). */
  sources?: ReadonlyMap<string, BackendSource>
  /** Per-request process starters by spawn name (pipe spawns, for CGI). */
  processStarters?: ReadonlyMap<string, ProcessStarter>
  log: Logger
  events?: ProxyEvents
  serverSoftware: string
  /**
   * V8's gc() for body scavenging (src/core/scavenge.ts): default the one `node --expose-gc`
   * exposes, if any; false = never.
   */
  gc?: GcFunction | false
}

const DEFAULTS = {
  connect: 5_000, headers: 60_000, idle: 60_000, clientIdle: 60_000, tunnel: 3_600_000, minUploadRate: 500, uploadGrace: 60_000, disableTime: 10_000, retries: 2,
  queue: 1024, queueTimeout: 30_000, maxResponseHeadSize: 64 * 1024, spoolLimit: 1024 ** 3,
} as const

/** TypeBox's errors (`Value.Errors`) as `{ path, message, found, expected }`, one per problem. */
export function schemaIssues (errors: Iterable<ValueError>): ConfigIssue[] {
  const out: ConfigIssue[] = []
  const seen = new Set<string>()
  for (const e of errors) {
    const key = `${e.path}\0${e.message}`
    if (seen.has(key)) continue
    seen.add(key)
    out.push({ path: e.path, message: e.message, found: e.value, expected: describeSchema(e.schema as Record<string, unknown>) })
  }
  return out
}

function describeSchema (s: Record<string, unknown>): string {
  if (s.const !== undefined) return JSON.stringify(s.const)
  if (typeof s.pattern === 'string') return `a string matching ${s.pattern}`
  if (typeof s.type === 'string') return s.type
  return 'a valid value'
}

/**
 * Backend addresses: each must parse, and none may be listed twice. The pool keeps one state per
 * entry, so a repeated address would be two backends with one label: its health and request
 * counts split, and `/metrics` would report one series twice.
 */
function checkBackends (list: readonly string[], at: string, problems: ConfigIssue[]): void {
  const first = new Map<string, number>()
  list.forEach((b, i) => {
    let id: string
    try { id = parseEndpoint(b).id } catch (err) {
      if (err instanceof AddressError) { problems.push({ path: `${at}/${i}`, message: err.message, found: b, expected: 'host:port, [v6]:port or unix:/path' }); return }
      throw err
    }
    const prev = first.get(id)
    if (prev === undefined) first.set(id, i)
    else problems.push({ path: `${at}/${i}`, message: `backend ${id} is listed twice (here and at ${at}/${prev})`, found: b, expected: 'each address once' })
  })
}

/**
 * Two routes with one name: names label logs and metrics, so their counters would merge (and a
 * histogram series print twice). A route without `name` is named by its index (compileProxy), so
 * that name is taken too. Each clash is reported at the name the operator wrote (`at`), the other route
 * being `other`. Routes whose name is no string (a schema issue of its own) are left out.
 */
export function routeNameClashes (routes: readonly unknown[]): Array<{ name: string, at: number, other: number, otherWritten: boolean }> {
  const first = new Map<string, { i: number, written: boolean }>()
  const out: Array<{ name: string, at: number, other: number, otherWritten: boolean }> = []
  routes.forEach((r, i) => {
    if (typeof r !== 'object' || r === null) return
    const raw = (r as { name?: unknown }).name
    if (raw !== undefined && typeof raw !== 'string') return
    const written = raw !== undefined
    const name = raw ?? String(i)
    const prev = first.get(name)
    if (prev === undefined) { first.set(name, { i, written }); return }
    out.push(written ? { name, at: i, other: prev.i, otherWritten: prev.written } : { name, at: prev.i, other: i, otherWritten: false })
  })
  return out
}

/**
 * A route name with a lone UTF-16 surrogate (`"a\ud800"` in YAML or JSON), at `/routes/<index>/name`,
 * or null. The access log, /metrics and the status page write names as UTF-8, where such a
 * character can only be U+FFFD: two names that differ only there (`a\ud800`, `a\udc00`) pass the
 * uniqueness rule and are yet one label.
 */
export function routeNameUnicodeIssue (name: string, index: number): ConfigIssue | null {
  const lone = /\p{Cs}/u.exec(name)
  if (lone === null) return null
  return { path: `/routes/${index}/name`, message: `route name is not well-formed Unicode: a lone surrogate \\u${lone[0].charCodeAt(0).toString(16)} at character ${lone.index} cannot be written as UTF-8 in logs and metrics`, found: name, expected: 'a name of Unicode characters (a surrogate pair written as one escape or as the character)' }
}

/**
 * A complete segment of a route prefix that no normalised path has (src/core/cgi/url-path.ts
 * `normalizePath`): empty (`//`), `.` or `..`; null when there is none. The last segment is only
 * the start of one (`/a/.` matches `/a/.x`), and empty after a trailing slash.
 */
function unmatchableSegment (prefix: string): string | null {
  const segs = prefix.split('/')
  for (let i = 1; i < segs.length - 1; i++) {
    const s = segs[i]
    if (s === '' || s === '.' || s === '..') return s
  }
  return null
}

export async function compileProxy (config: CompileInput, deps: CompileDeps): Promise<ProxyRuntime> {
  if (!isProxyConfig(config)) {
    // The generated check said no; TypeBox (~13 MiB RSS) loads only now, to word the issues.
    const [{ Value }, { ProxyConfigSchema }] = await Promise.all([import('@sinclair/typebox/value'), import('../config/schema.js')])
    throw new ConfigError(schemaIssues(Value.Errors(ProxyConfigSchema, config)))
  }
  const issues: ConfigIssue[] = []

  const events = deps.events ?? new ProxyEvents()
  let trust: TrustedProxies
  try { trust = new TrustedProxies(config.trustedProxies ?? [], config.forwardedHeader ?? 'x-forwarded-for') } catch (err) {
    throw new ConfigError([{ path: '/trustedProxies', message: (err as Error).message, expected: 'IP addresses or CIDRs' }])
  }
  const peerTrusted = (peer: string): boolean => trust.has(peer)
  const maxResponseHeadSize = parseSize(config.maxResponseHeadSize ?? DEFAULTS.maxResponseHeadSize) ?? DEFAULTS.maxResponseHeadSize
  const routes: CompiledRoute[] = []
  const entries: Array<{ match: NonNullable<RouteConfig['match']>, route: CompiledRoute }> = []
  let shortest = 1000

  config.routes.forEach((rc, index) => {
    const at = `/routes/${index}`
    const problems: ConfigIssue[] = []
    const adapter = getAdapter(rc.protocol, deps.adapters)
    if (adapter === undefined) {
      problems.push({ path: `${at}/protocol`, message: `unknown protocol ${JSON.stringify(rc.protocol)}`, found: rc.protocol, expected: adapterNames(deps.adapters).join(' | ') })
    }
    // An adapter that answers from the proxy host (static files) has no backend to name.
    const local = adapter?.capabilities.local === true
    if (local) {
      if (rc.backends !== undefined) problems.push({ path: `${at}/backends`, message: `protocol ${rc.protocol} serves files from \`docroot\` itself: a route with it takes no \`backends\``, found: rc.backends, expected: 'no backends' })
      if (rc.spawn !== undefined) problems.push({ path: `${at}/spawn`, message: `protocol ${rc.protocol} serves files from \`docroot\` itself: a route with it takes no \`spawn\``, found: rc.spawn, expected: 'no spawn' })
      if (rc.docroot === undefined) problems.push({ path: at, message: `protocol ${rc.protocol} needs \`docroot\``, expected: 'docroot' })
      if (rc.scriptFilename !== undefined) problems.push({ path: `${at}/scriptFilename`, message: `protocol ${rc.protocol} serves files under \`docroot\`: scriptFilename does not apply`, found: rc.scriptFilename, expected: 'no scriptFilename' })
    } else if ((rc.backends === undefined) === (rc.spawn === undefined)) {
      problems.push({ path: at, message: 'a route needs exactly one of `backends` or `spawn`', expected: 'backends or spawn' })
    }
    let source: BackendSource | undefined
    if (rc.backends !== undefined) {
      checkBackends(rc.backends, `${at}/backends`, problems)
    } else if (rc.spawn !== undefined && !local) {
      source = deps.sources?.get(rc.spawn)
      if (source === undefined && !adapter?.capabilities.perRequestProcess) {
        problems.push({ path: `${at}/spawn`, message: `no spawn named ${JSON.stringify(rc.spawn)}`, found: rc.spawn, expected: [...(deps.sources?.keys() ?? [])].join(' | ') || 'a spawn defined under `spawns`' })
      }
    }
    if (adapter?.capabilities.cgiEnv && !local && rc.docroot === undefined && rc.scriptFilename === undefined && !adapter.capabilities.perRequestProcess) {
      problems.push({ path: at, message: `protocol ${rc.protocol} needs \`docroot\` or \`scriptFilename\``, expected: 'docroot or scriptFilename' })
    }
    let adapterOptions: unknown
    if (adapter !== undefined) {
      try { adapterOptions = adapter.parseOptions(rc.options ?? {}, `${at}/options`) } catch (err) {
        if (err instanceof ConfigError) problems.push(...err.issues)
        else problems.push({ path: `${at}/options`, message: (err as Error).message })
      }
    }
    if (rc.match?.host !== undefined) {
      const hosts = [rc.match.host].flat()
      hosts.forEach((h, i) => {
        if (routeHost(h) === null) problems.push({ path: `${at}/match/host${Array.isArray(rc.match?.host) ? `/${i}` : ''}`, message: 'a route host is matched without its port: write the host alone', found: h, expected: 'a host (`example.com`, `*.example.com`, `[::1]`) without `:port`' })
      })
    }
    if (rc.match?.prefix !== undefined) {
      const seg = unmatchableSegment(rc.match.prefix)
      if (seg !== null) problems.push({ path: `${at}/match/prefix`, message: `a prefix with a${seg === '' ? 'n empty' : ` \`${seg}\``} segment never matches: routes are matched on the normalised path (\`//\` merged, \`.\` and \`..\` resolved)`, found: rc.match.prefix, expected: 'a prefix in normal form, e.g. `/api/v1/`' })
    }
    if (rc.match?.regex !== undefined) {
      const regex = rc.match.regex
      try {
        new RegExp(regex)
        const hazard = regexHazard(regex)
        if (hazard !== null) problems.push({ path: `${at}/match/regex`, message: hazard, found: regex, expected: 'a regex without a repeated group that repeats, alternates or refers back (or a prefix, extension or glob)' })
      } catch (err) { problems.push({ path: `${at}/match/regex`, message: (err as Error).message, found: regex }) }
    }
    const az = rc.authorizer
    const fcgi = az !== undefined ? getAdapter('fastcgi', deps.adapters) : undefined
    let azOptions: unknown
    if (az !== undefined) {
      if ((az.backends === undefined) === (az.spawn === undefined)) {
        problems.push({ path: `${at}/authorizer`, message: 'an authorizer needs exactly one of `backends` or `spawn`', expected: 'backends or spawn' })
      }
      if (az.spawn !== undefined && deps.sources?.get(az.spawn) === undefined) {
        problems.push({ path: `${at}/authorizer/spawn`, message: `no spawn named ${JSON.stringify(az.spawn)}`, found: az.spawn })
      }
      if (az.backends !== undefined) checkBackends(az.backends, `${at}/authorizer/backends`, problems)
      if (fcgi === undefined) problems.push({ path: `${at}/authorizer`, message: 'the fastcgi adapter is not registered' })
      else {
        try { azOptions = fcgi.parseOptions(az.options ?? {}, `${at}/authorizer/options`) } catch (err) {
          if (err instanceof ConfigError) problems.push(...err.issues)
          else problems.push({ path: `${at}/authorizer/options`, message: (err as Error).message })
        }
      }
    }
    let sendfileRoots: string[] | null = null
    if (rc.xSendfile !== undefined) {
      sendfileRoots = []
      rc.xSendfile.allow.forEach((dir, i) => {
        try { sendfileRoots?.push(realpathSync(dir)) } catch (err) {
          problems.push({ path: `${at}/xSendfile/allow/${i}`, message: `cannot resolve: ${(err as Error).message}`, found: dir, expected: 'an existing directory' })
        }
      })
    }
    if (rc.requestBuffering === true && adapter !== undefined && (!adapter.capabilities.cgiEnv || local)) {
      problems.push({ path: `${at}/requestBuffering`, message: `protocol ${rc.protocol} streams request bodies: requestBuffering applies to the CGI family (fastcgi, scgi, cgi)`, found: true, expected: 'false or absent' })
    }
    if (problems.length > 0 || adapter === undefined) { issues.push(...problems); return }

    const name = rc.name ?? String(index)
    const timeouts = {
      connect: parseDuration(rc.timeouts?.connect ?? DEFAULTS.connect) ?? DEFAULTS.connect,
      headers: parseDuration(rc.timeouts?.headers ?? DEFAULTS.headers) ?? DEFAULTS.headers,
      idle: parseDuration(rc.timeouts?.idle ?? DEFAULTS.idle) ?? DEFAULTS.idle,
      clientIdle: parseDuration(rc.timeouts?.clientIdle ?? DEFAULTS.clientIdle) ?? DEFAULTS.clientIdle,
      tunnel: parseDuration(rc.timeouts?.tunnel ?? DEFAULTS.tunnel) ?? DEFAULTS.tunnel,
      minUploadRate: parseSize(rc.timeouts?.minUploadRate ?? DEFAULTS.minUploadRate) ?? DEFAULTS.minUploadRate,
      uploadGrace: parseDuration(rc.timeouts?.uploadGrace ?? DEFAULTS.uploadGrace) ?? DEFAULTS.uploadGrace,
    }
    const queueTimeout = parseDuration(rc.queueTimeout ?? DEFAULTS.queueTimeout) ?? DEFAULTS.queueTimeout
    // The sweep ends every one of these (a wait for an adapter's connection is under queueTimeout:
    // exchange.ts waitingForConnection), so it runs at least four times per the shortest.
    for (const t of [timeouts.headers, timeouts.idle, timeouts.clientIdle, timeouts.minUploadRate > 0 ? timeouts.uploadGrace : 0, queueTimeout]) if (t > 0) shortest = Math.min(shortest, t / 4)
    const processes = rc.spawn !== undefined ? deps.processStarters?.get(rc.spawn) : undefined
    const ctx: ClientContext = {
      log: deps.log,
      connect: (endpoint) => connectEndpoint(endpoint, timeouts.connect),
      limits: { maxResponseHeadSize },
      ...(processes !== undefined ? { processes } : {}),
    }
    if (source === undefined) {
      source = new StaticSource(name, rc.backends ?? [`process:${rc.spawn ?? name}`])
    }
    const pool = new BackendPool({
      name,
      source,
      adapter,
      adapterOptions,
      ctx,
      balance: rc.balance ?? 'least-connection',
      disableTime: parseDuration(rc.disableTime ?? DEFAULTS.disableTime) ?? DEFAULTS.disableTime,
      ...(rc.maxFails !== undefined ? { maxFails: rc.maxFails } : {}),
      events,
      log: deps.log,
    })
    let authorizer: AuthorizerSettings | null = null
    if (az !== undefined && fcgi !== undefined) {
      const azSource = az.spawn !== undefined ? deps.sources?.get(az.spawn) : undefined
      authorizer = {
        pool: new BackendPool({
          name: `${name}:authorizer`,
          source: azSource ?? new StaticSource(`${name}:authorizer`, az.backends ?? []),
          adapter: fcgi,
          adapterOptions: azOptions,
          ctx,
          balance: 'least-connection',
          disableTime: parseDuration(rc.disableTime ?? DEFAULTS.disableTime) ?? DEFAULTS.disableTime,
          ...(rc.maxFails !== undefined ? { maxFails: rc.maxFails } : {}),
          events,
          log: deps.log,
        }),
        adapterOptions: azOptions,
        scriptFilename: az.scriptFilename ?? '',
        timeout: parseDuration(az.timeout ?? 10_000) ?? 10_000,
        serverSoftware: deps.serverSoftware,
      }
    }
    const cgi: CgiRouteSettings | null = adapter.capabilities.cgiEnv
      ? {
          docroot: rc.docroot ?? null,
          scriptFilename: rc.scriptFilename ?? null,
          // The router's own form (`php` → `.php`): a bare `php` suffix would let `/up/avatarphp/x.php` run `avatarphp`.
          extensions: (rc.scriptExtensions ?? (rc.match?.extension === undefined ? undefined : [rc.match.extension].flat()))?.map(normalizeExt),
          index: rc.index,
          symlinks: rc.symlinks ?? 'owner',
          params: rc.params,
          passAuthorization: rc.passAuthorization ?? false,
        }
      : null
    const route = new CompiledRoute({
      name,
      index,
      adapter,
      adapterOptions,
      pool,
      timeouts,
      retries: rc.retries ?? DEFAULTS.retries,
      maxConcurrent: rc.maxConcurrent ?? 0,
      queue: rc.queue ?? DEFAULTS.queue,
      queueTimeout,
      maxBodySize: parseSize(rc.maxBodySize ?? 0) ?? 0,
      spoolLimit: parseSize(rc.spoolLimit ?? DEFAULTS.spoolLimit) ?? DEFAULTS.spoolLimit,
      // On by default for adapters that take the RFC 3875 environment (the CGI family, custom ones
      // included): their backends run a script per request on whatever body they are handed.
      requestBuffering: adapter.capabilities.cgiEnv && !local && (rc.requestBuffering ?? true),
      prefix: rc.match?.prefix ?? null,
      stripPrefix: rc.stripPrefix ?? false,
      hostHeader: rc.hostHeader ?? 'preserve',
      xForwarded: rc.xForwarded ?? true,
      forwarded: rc.forwarded ?? false,
      via: rc.via ?? '',
      cgi,
      localRedirects: rc.localRedirects ?? false,
      sendfileRoots,
      authorizer,
      serverSoftware: deps.serverSoftware,
      serverName: config.serverName,
      peerTrusted,
    })
    routes.push(route)
    entries.push({ match: rc.match ?? {}, route })
  })

  for (const x of routeNameClashes(config.routes)) {
    const other = x.otherWritten ? `/routes/${x.other}/name` : `/routes/${x.other} (a route without \`name\` is named by its index)`
    issues.push({ path: `/routes/${x.at}/name`, message: `route name ${JSON.stringify(x.name)} is used twice: here and at ${other}`, found: x.name })
  }
  config.routes.forEach((rc, i) => {
    const issue = typeof rc.name === 'string' ? routeNameUnicodeIssue(rc.name, i) : null
    if (issue !== null) issues.push(issue)
  })
  if (deps.gc !== undefined && deps.gc !== false && typeof deps.gc !== 'function') {
    issues.push({ path: '/gc', message: 'gc must be V8\'s gc function or false', found: deps.gc, expected: 'function | false' })
  }
  if (issues.length > 0) {
    for (const r of routes) { r.pool.destroy(); r.authorizer?.pool.destroy() }
    throw new ConfigError(issues)
  }
  const sweepMs = Math.max(5, Math.min(1000, Math.floor(shortest)))
  const gc = deps.gc === false ? null : deps.gc ?? BodyScavenger.exposedGc()
  return new ProxyRuntime(new Router(entries), routes, events, deps.log, trust, sweepMs, gc === null ? null : new BodyScavenger(gc))
}
