/**
 * The full check of a config, without starting anything: validation (validate.ts) plus a dry
 * compile of the routes against placeholder spawn sources, so adapter options, protocols, regexes
 * and backend addresses are checked exactly as `createProxy` will. Used by `proxycore check`,
 * SIGHUP reload and `createProxy` (before any child is started).
 */
import type { TSchema } from '@sinclair/typebox'
import { compileProxy, type CompileInput } from '../core/compile.js'
import { normalizePath } from '../core/cgi/url-path.js'
import { ConfigError, type ConfigIssue } from '../core/errors.js'
import type { BackendSource, ProcessStarter, ProtocolAdapter } from '../core/types.js'
import { silentLogger } from '../logger.js'
import { routeLabelIssue } from '../status/route-labels.js'
import { escapeKey, pointerSegments } from './locate.js'
import { crossFieldCheck, type CrossFieldOptions } from './spawns.js'
import { isEmbedConfig, isOperatorConfig } from './validators.generated.js'

/** A source that never lists anything: compile only needs the name to exist. */
function placeholderSource (name: string): BackendSource {
  return { name, list: () => [], subscribe: () => () => {}, ensure: () => Promise.reject(new Error('placeholder')) }
}

const placeholderStarter: ProcessStarter = {
  start () { throw new Error('placeholder') },
  kill () {},
}

export interface CheckOptions extends CrossFieldOptions {
  /** `embed`: createProxy's shape, the file's keys plus the embedder-only ones (EmbedConfigSchema). */
  shape?: 'operator' | 'embed'
  sources?: Record<string, BackendSource>
  processStarters?: Record<string, ProcessStarter>
}

interface Validated {
  /** Schema issues, then the cross-field ones (validate.ts `validateConfig`). */
  issues: ConfigIssue[]
  /** The schema issues alone. */
  shape: ConfigIssue[]
  /** Only when `shape` is not empty (TypeBox is loaded then anyway). */
  typebox?: { shapeIssues: (schema: TSchema, value: unknown) => ConfigIssue[], route: TSchema }
}

/**
 * validateConfig (validate.ts) without TypeBox for a valid shape: the generated check accepts it,
 * and only a rejected config loads TypeBox and the schema (~13 MiB RSS) to word its issues.
 */
async function validate (config: unknown, opts: CheckOptions): Promise<Validated> {
  const embed = opts.shape === 'embed'
  if ((embed ? isEmbedConfig : isOperatorConfig)(config)) return { issues: crossFieldCheck(config, [], opts), shape: [] }
  const [{ shapeIssues }, { EmbedConfigSchema, OperatorConfigSchema, RouteSchema }] = await Promise.all([import('./validate.js'), import('./schema.js')])
  const shape = shapeIssues(embed ? EmbedConfigSchema : OperatorConfigSchema, config)
  return { issues: [...shape, ...crossFieldCheck(config, shape, opts)], shape, typebox: { shapeIssues, route: RouteSchema } }
}

/**
 * Route fields that compile's presence rules read (`exactly one of backends or spawn`, `needs
 * docroot`): a malformed one is replaced by a well-formed stand-in rather than removed, so those
 * rules still see it set, as it is in the file. What compile says at or under a stand-in is dropped.
 */
const STAND_INS: Record<string, unknown> = {
  '/backends': ['unix:/proxycore-check/stand-in.sock'],
  '/spawn': '',
  '/docroot': '/',
  '/scriptFilename': '/proxycore-check-stand-in',
  '/authorizer/backends': ['unix:/proxycore-check/stand-in.sock'],
  '/authorizer/spawn': '',
}

/** The field each top-level presence field is an alternative to (a route takes one of the two). */
const PRESENCE_ALTERNATIVE: Record<string, string> = {
  '/backends': 'spawn', '/spawn': 'backends', '/docroot': 'scriptFilename', '/scriptFilename': 'docroot',
}

/** A route made well-formed for the dry compile, and how its paths map back to the file's. */
interface Salvaged {
  route: Record<string, unknown>
  /** Paths (relative to the route, in the file's indexing) removed or replaced by a stand-in. */
  dropped: string[]
  /** Per array path (relative): the file index of each element kept. */
  kept: Map<string, number[]>
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * `route` with its malformed fields removed, or replaced by a stand-in (STAND_INS), until the route
 * schema accepts it; null when it cannot be (not a mapping, or no usable `protocol`). Copies only the
 * containers it changes: adapter options pass through as they are.
 */
function salvageRoute (route: unknown, shapeIssues: (schema: TSchema, value: unknown) => ConfigIssue[], schema: TSchema): Salvaged | null {
  if (!isRecord(route)) return null
  const out: Salvaged = { route: { ...route }, dropped: [], kept: new Map() }
  // Each round removes or replaces at least one value of a finite tree: the bound is a safety net.
  for (let round = 0; round < 32; round++) {
    const found = shapeIssues(schema, out.route)
    if (found.length === 0) return out
    // A misspelt presence field (`backend` for `backends`): the operator meant it, so compile sees
    // a stand-in rather than a route without one ("needs exactly one of backends or spawn" would
    // only repeat the did-you-mean). Not when the route has the field's alternative already.
    for (const i of found) {
      const meant = typeof i.expected === 'string' && i.message.startsWith('unknown key ') && pointerSegments(i.path).length === 1 ? `/${i.expected}` : ''
      if (!Object.hasOwn(STAND_INS, meant) || Object.hasOwn(out.route, meant.slice(1))) continue
      if (Object.hasOwn(out.route, PRESENCE_ALTERNATIVE[meant] ?? '')) continue
      out.route[meant.slice(1)] = STAND_INS[meant]
      out.dropped.push(meant)
    }
    // A missing required field: its container goes (xSendfile without allow); deepest first, and
    // array elements from the last, so the paths of one round stay valid while it edits.
    const targets = [...new Set(found.map((i) => i.message === 'required' ? i.path.slice(0, i.path.lastIndexOf('/')) : i.path))]
      .sort((a, b) => b.localeCompare(a, 'en', { numeric: true }))
    for (const target of targets) {
      const segs = pointerSegments(target)
      if (segs.length === 0 || segs[0] === 'protocol') return null
      const parentPath = target.slice(0, target.lastIndexOf('/'))
      let parent: Record<string, unknown> | unknown[] | undefined = out.route
      // Copy each container on the way down: the caller's config is never changed.
      for (const seg of segs.slice(0, -1)) {
        const child: unknown = (parent as Record<string | number, unknown>)[seg]
        const copy = Array.isArray(child) ? [...child] : isRecord(child) ? { ...child } : undefined
        if (copy !== undefined) (parent as Record<string | number, unknown>)[seg] = copy
        parent = copy
        if (parent === undefined) break
      }
      if (parent === undefined) return null // not a path into the route: nothing safe to compile
      const last = segs[segs.length - 1]
      if (Object.hasOwn(STAND_INS, target)) {
        ;(parent as Record<string, unknown>)[last as string] = STAND_INS[target]
        out.dropped.push(target)
      } else if (Array.isArray(parent) && typeof last === 'number') {
        const kept = out.kept.get(parentPath) ?? parent.map((_, i) => i)
        out.dropped.push(`${parentPath}/${kept[last]}`)
        kept.splice(last, 1)
        out.kept.set(parentPath, kept)
        parent.splice(last, 1)
      } else {
        delete (parent as Record<string, unknown>)[String(last)]
        out.dropped.push(target)
      }
    }
  }
  return null
}

/**
 * `status.metricsPath` as createStatus compares it (normalised, without a trailing `/`): a path the
 * router refuses would never match, and the status page's own path or its live view would be
 * hidden behind the metrics.
 */
function metricsPathIssues (status: unknown, issues: readonly ConfigIssue[]): ConfigIssue[] {
  if (typeof status !== 'object' || status === null || issues.some((i) => i.path.startsWith('/status/metricsPath') || i.path === '/status/path')) return []
  const { path, metricsPath: given } = status as { path?: string, metricsPath?: string | false }
  // STATUS_DEFAULTS.metricsPath: a status page moved to /metrics is hidden by the default too.
  const metricsPath = given === undefined ? '/metrics' : given
  if (typeof metricsPath !== 'string') return []
  const at = given === undefined ? '/status/path' : '/status/metricsPath'
  const norm = (p: string): string => { const n = normalizePath(p); return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n }
  let m: string
  try { m = norm(metricsPath) } catch (err) {
    return [{ path: at, message: `not a path the router can match: ${(err as Error).message}`, found: metricsPath, expected: 'a path like /proxycore-metrics, or false' }]
  }
  let page: string
  // STATUS_DEFAULTS.path (src/status/handler.ts), not imported: that module loads prom-client.
  try { page = norm(path ?? '/server-status') } catch { return [] }
  if (given === undefined && (m === page || m === `${page}/live`)) {
    return [{ path: at, message: `status path ${JSON.stringify(path)} is where metrics are served (metricsPath defaults to /metrics): the page would be hidden`, found: path, expected: 'another path, or a metricsPath of its own (or false)' }]
  }
  if (m === page || m === `${page}/live`) {
    return [{ path: at, message: `metricsPath ${JSON.stringify(metricsPath)} would hide the status ${m === page ? 'page' : 'live view'} at ${m}`, found: metricsPath, expected: `a path other than ${page} and ${page}/live, or false` }]
  }
  return []
}

/**
 * Route names next to a `status` block (src/status/route-labels.ts): a lone surrogate, or the label
 * of the status handler's own requests (`metrics` is free with `metricsPath: false`). Without
 * `status`, only the surrogate. At the name written, like a name used twice.
 */
function routeLabelIssues (config: { status?: unknown, routes?: unknown }, issues: readonly ConfigIssue[]): ConfigIssue[] {
  const { status, routes } = config
  if (!Array.isArray(routes)) return []
  const out: ConfigIssue[] = []
  routes.forEach((r: unknown, i) => {
    const name = isRecord(r) ? r.name : undefined
    if (typeof name !== 'string' || issues.some((x) => x.path === `/routes/${i}/name`)) return
    const issue = routeLabelIssue(name, i, isRecord(status) ? { metrics: status.metricsPath !== false } : null)
    if (issue !== null) out.push(issue)
  })
  return out
}

/**
 * Each key and string value holding a NUL byte (`"\0"` in YAML, `"\u0000"` in JSON, `'\u0000'` in
 * a createProxy object): no path, socket, program, argument or header can hold one. Unrefused,
 * `serve` threw at start (a `runDir` or unix `listen` path: ERR_INVALID_ARG_VALUE with a stack
 * trace), a spawn failed each start (`binPath`, `cwd`) or a docroot failed each request, where the
 * check had said ok. Walked with a stack over arrays and plain objects, each once: an embedder's
 * own objects (a custom adapter's route `options`, any value under a misspelt key) may be deep or
 * cyclic.
 */
export function nulIssues (config: unknown): ConfigIssue[] {
  const out: ConfigIssue[] = []
  const seen = new Set<object>()
  const stack: Array<{ v: unknown, at: string }> = [{ v: config, at: '' }]
  while (stack.length > 0) {
    const { v, at } = stack.pop() as { v: unknown, at: string }
    if (typeof v === 'string') {
      if (v.includes('\u0000')) out.push({ path: at, message: 'a value may not contain a NUL byte (no path, program or header can hold one)', found: v, expected: 'a string without a NUL byte' })
      continue
    }
    if (typeof v !== 'object' || v === null || seen.has(v)) continue
    seen.add(v)
    if (Array.isArray(v)) {
      v.forEach((x, i) => stack.push({ v: x, at: `${at}/${i}` }))
    } else if (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null) {
      for (const [k, x] of Object.entries(v)) {
        const here = `${at}/${escapeKey(k)}`
        if (k.includes('\u0000')) out.push({ path: here, message: 'a key may not contain a NUL byte (no name can hold one)', expected: 'a key without a NUL byte' })
        else stack.push({ v: x, at: here })
      }
    }
  }
  return out.reverse()
}

export async function checkConfig (config: unknown, opts: CheckOptions = {}): Promise<ConfigIssue[]> {
  const issues = await checkShapeAndCompile(config, opts)
  // After the rules with their own wording (a `params` value, a unix backend): a NUL nothing else refused.
  for (const i of nulIssues(config)) {
    if (!issues.some((x) => x.path === i.path || x.path.startsWith(`${i.path}/`))) issues.push(i)
  }
  return issues
}

async function checkShapeAndCompile (config: unknown, opts: CheckOptions): Promise<ConfigIssue[]> {
  const external = [...Object.keys(opts.sources ?? {}), ...Object.keys(opts.processStarters ?? {})]
  const crossOpts = { ...opts, externalSpawns: external }
  const { issues, shape, typebox } = await validate(config, crossOpts)
  if (typeof config !== 'object' || config === null) return issues
  issues.push(...metricsPathIssues((config as { status?: unknown }).status, issues))
  issues.push(...routeLabelIssues(config as { status?: unknown, routes?: unknown }, issues))
  const c = config as CompileInput & { spawns?: Record<string, { socketType?: string }> }
  if (!Array.isArray(c.routes)) return issues
  // Every route is compiled, a malformed one with its malformed fields removed (salvageRoute), so
  // one run shows a route's unknown protocol, bad options, regex or addresses next to its schema
  // issues. A route that cannot be salvaged is left out: `keep` maps compiled indices to the file's.
  const salvaged = new Map<number, Salvaged | null>()
  const routes: unknown[] = c.routes
  routes.forEach((r, i) => {
    const own = shape.filter((x) => x.path === `/routes/${i}` || x.path.startsWith(`/routes/${i}/`))
    if (own.length > 0 && typebox !== undefined) salvaged.set(i, salvageRoute(r, typebox.shapeIssues, typebox.route))
  })
  const keep = routes.map((_, i) => i).filter((i) => salvaged.get(i) !== null)
  const routeAt = (i: number): unknown => salvaged.get(i)?.route ?? routes[i]
  /** A compiled path (`/routes/<compiled index>/…`) in the file's indices, array elements included. */
  const toFile = (path: string): string => path.replace(/^\/routes\/(\d+)((?:\/[^/\s)]+)*)/, (_, k: string, rest: string) => {
    const i = keep[Number(k)]
    const s = salvaged.get(i)
    let tail = rest
    if (s != null) {
      for (const [arr, kept] of s.kept) {
        const m = tail.startsWith(`${arr}/`) ? /^\/(\d+)(.*)$/.exec(tail.slice(arr.length)) : null
        if (m !== null) tail = `${arr}/${kept[Number(m[1])]}${m[2]}`
      }
    }
    return `/routes/${i}${tail}`
  })
  /** At or under a field salvageRoute removed or replaced: its schema issue already says it. */
  const dropped = (path: string): boolean => {
    const m = /^\/routes\/(\d+)(\/.*)?$/.exec(path)
    const s = m === null ? undefined : salvaged.get(Number(m[1]))
    const rel = m?.[2] ?? ''
    return s != null && s.dropped.some((d) => rel === d || rel.startsWith(`${d}/`))
  }
  const have = new Set(issues.map((i) => i.path))
  const add = (i: ConfigIssue): void => {
    if (have.has(i.path) || dropped(i.path)) return
    issues.push(i)
  }
  // The cross-field rules (a route's spawn and its kind) for the salvaged routes: validate skipped them.
  if (salvaged.size > 0) {
    const otherShape = shape.filter((x) => !x.path.startsWith('/routes/'))
    const crossRoutes = routes.map((r, i) => salvaged.get(i) === null ? { protocol: '' } : routeAt(i))
    const salvagedAt = (p: string): boolean => { const m = /^\/routes\/(\d+)/.exec(p); return m !== null && salvaged.get(Number(m[1])) != null }
    for (const i of crossFieldCheck({ ...c, routes: crossRoutes }, otherShape, crossOpts)) if (salvagedAt(i.path)) add(i)
    for (const i of issues) have.add(i.path)
  }
  const topBad = new Set(issues.map((x) => x.path.split('/')[1]))
  const input = Object.fromEntries(Object.entries(c).filter(([k]) => k === 'routes' || !topBad.has(k))) as unknown as CompileInput
  input.routes = keep.map((i) => routeAt(i)) as CompileInput['routes']
  const sources = new Map<string, BackendSource>(Object.entries(opts.sources ?? {}))
  const starters = new Map<string, ProcessStarter>(Object.entries(opts.processStarters ?? {}))
  for (const [name, s] of Object.entries(c.spawns ?? {})) {
    sources.set(name, placeholderSource(name))
    if (s?.socketType === 'pipe') starters.set(name, placeholderStarter)
  }
  try {
    const runtime = await compileProxy(input, {
      ...(opts.adapters !== undefined ? { adapters: opts.adapters as ProtocolAdapter[] } : {}),
      sources,
      processStarters: starters,
      log: silentLogger,
      serverSoftware: 'proxycore-check',
    })
    await runtime.close(0)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    // Compiled paths also inside messages ("listed twice (here and at /routes/0/backends/1)").
    for (const i of err.issues) add({ ...i, path: toFile(i.path), message: i.message.replace(/\/routes\/\d+(?:\/[^/\s)]+)*/g, toFile) })
  }
  return issues
}
