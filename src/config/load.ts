/**
 * File -> validated config. Reads YAML or JSON, substitutes `${VAR}`, follows `include` globs
 * (relative to the including file, sorted, cycles refused), merges, resolves relative paths against
 * the file that wrote them, validates everything at once, and maps every issue to `file:line:col`.
 *
 * Merge rule: a file's included routes come before its own routes, so the main file's catch-all
 * stays last; spawns and tenants are unions, and a name defined twice is an error naming both places.
 */
import { realpath, stat } from 'node:fs/promises'
import { dirname, isAbsolute, resolve } from 'node:path'
import { lazy } from '../lazy.js'
import { ConfigError, type ConfigIssue } from '../core/errors.js'
import type { ProtocolAdapter } from '../core/types.js'
import { routeNameClashes } from '../core/compile.js'
import { checkConfig } from './check.js'
import { substituteEnv } from './env.js'
import { parseFile, pointerSegments, positionOf, type ParsedFile } from './locate.js'
import type { OperatorConfig } from './schema.js'

const fastGlob = lazy<typeof import('fast-glob')>('fast-glob')

/** Keys an included file may set; the rest belong to the main file only. */
const INCLUDABLE = new Set(['routes', 'spawns', 'tenants', 'include', '$schema'])

/** A key's own issue (unknown key, bad spawn name, `__proto__`) points at the key, not at its value. */
const KEY_ISSUE = /^(unknown key|bad [a-zA-Z ]+ name|a key may not) /

export interface LoadOptions {
  env?: NodeJS.ProcessEnv
  adapters?: readonly ProtocolAdapter[]
}

export interface LoadResult {
  /** The merged config (meaningful only when `issues` is empty). */
  config: OperatorConfig
  issues: ConfigIssue[]
  /** Every file read, main first. */
  files: string[]
  /**
   * `file:line:col` where a merged-config path was written (an included file's spawn, route or
   * tenant in that file), for problems found after loading (check's late checks, serve's start).
   */
  locate: (path: string, keyOf?: boolean) => string
}

interface Origin { file: ParsedFile, local: Array<string | number> }

type Obj = Record<string, unknown>
/** A mapping (not null, not a list): what a config's objects must be. */
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)

class Merger {
  readonly issues: ConfigIssue[] = []
  readonly files: ParsedFile[] = []
  readonly routes: unknown[] = []
  readonly routeOrigins: Origin[] = []
  readonly named = { spawns: new Map<string, { value: unknown, origin: Origin }>(), tenants: new Map<string, { value: unknown, origin: Origin }>() }
  /** The files being read, in order, by their real path (a Map keeps the order): the path written is the value. */
  private readonly visiting = new Map<string, string>()
  constructor (private readonly env: NodeJS.ProcessEnv) {}

  /** `includedAt`: the include entry that names `file` (file:line:col), where a cycle is reported. */
  async add (file: string, main: boolean, includedAt?: string): Promise<Obj | null> {
    // One file is one file whatever path reaches it: through a directory link back up
    // (`conf.d/up -> ..` under `conf.d/**`), each pass found the same file under a longer path,
    // and the includes went on for minutes. A path realpath cannot resolve is read (and reported) as written.
    const real = await realpath(file).catch(() => file)
    if (this.visiting.has(real)) {
      // The chain from the first path of this file back to it, as written.
      const open = [...this.visiting.keys()]
      const chain = [...open.slice(open.indexOf(real)).map((k) => this.visiting.get(k) as string), file].join(' → ')
      this.issues.push({ path: '/include', message: `include cycle: ${chain}`, source: includedAt ?? file })
      return null
    }
    const { parsed, issues } = await parseFile(file)
    this.issues.push(...issues)
    if (parsed === null) return null
    // A main file with nothing in it is a file being written (`>` truncates first; an editor that
    // saves in place) far more often than a wish to serve nothing: a SIGHUP at that moment stopped
    // every spawn and moved the listener to the default address. nginx refuses an empty config too
    // (no events section). `{}` says it on purpose and is taken; an empty included file is too.
    if (main && parsed.empty) {
      this.issues.push({ path: '', message: 'the config file is empty (only comments, `---` or nothing): is it being written? `{}` is an empty config on purpose', found: '', expected: 'a mapping with at least `routes`', source: parsed.display })
      return null
    }
    this.files.push(parsed)
    const subst = substituteEnv(parsed.value, this.env)
    for (const i of subst.issues) this.issues.push({ ...i, source: positionOf(parsed, pointerSegments(i.path), KEY_ISSUE.test(i.message)) })
    if (!isObj(subst.value)) {
      this.issues.push({ path: '', message: 'the config must be a mapping', found: subst.value, expected: 'a mapping with at least `routes`', source: positionOf(parsed, []) })
      return null
    }
    const value = resolvePaths(subst.value, dirname(file))
    if (!main) {
      for (const k of Object.keys(value)) {
        if (!INCLUDABLE.has(k)) this.issues.push({ path: `/${k}`, message: `${k} may only be set in the main file (included files hold routes, spawns, tenants)`, found: k, source: positionOf(parsed, [k], true) })
      }
    }
    this.visiting.set(real, file)
    for (const inc of await this.expand(value.include, parsed)) await this.add(inc.file, false, inc.at)
    this.visiting.delete(real)

    if (Array.isArray(value.routes)) {
      value.routes.forEach((r, i) => { this.routes.push(r); this.routeOrigins.push({ file: parsed, local: ['routes', i] }) })
    } else if (value.routes !== undefined && !main) {
      this.issues.push({ path: '/routes', message: 'routes must be a list', found: value.routes, expected: 'a list', source: positionOf(parsed, ['routes']) })
    }
    for (const kind of ['spawns', 'tenants'] as const) {
      if (!isObj(value[kind])) continue
      for (const [name, v] of Object.entries(value[kind])) {
        const had = this.named[kind].get(name)
        const origin = { file: parsed, local: [kind, name] }
        if (had !== undefined) {
          this.issues.push({
            path: `/${kind}/${name}`,
            message: `${kind.slice(0, -1)} ${JSON.stringify(name)} is defined twice: here and at ${positionOf(had.origin.file, had.origin.local, true)}`,
            source: positionOf(parsed, origin.local, true),
          })
          continue
        }
        this.named[kind].set(name, { value: v, origin })
      }
    }
    return value
  }

  private async expand (include: unknown, from: ParsedFile): Promise<Array<{ file: string, at: string }>> {
    if (include === undefined) return []
    const patterns = [include].flat()
    const out: Array<{ file: string, at: string }> = []
    /** Real paths matched so far: a glob through a directory link finds one file under many paths. */
    const seen = new Set<string>()
    for (const [i, p] of patterns.entries()) {
      const at = Array.isArray(include) ? ['include', i] : ['include']
      if (typeof p !== 'string' || p === '') {
        // Checked here, not by the schema: `include` is consumed (and deleted) before validation.
        this.issues.push({ path: `/${at.join('/')}`, message: p === '' ? 'an include entry must not be empty' : 'an include entry must be a string: a path or glob relative to this file', found: p, expected: 'a path or glob', source: positionOf(from, at) })
        continue
      }
      let matches: string[]
      try {
        matches = (await fastGlob()(p, { cwd: dirname(from.file), absolute: true, onlyFiles: true, dot: false })).sort()
      } catch (err) {
        // fast-glob throws what stat/readdir say on the way (a link to itself: ELOOP) instead of
        // skipping it: `proxycore: Error: ELOOP …`, exit 1, without the entry's line.
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
        const hint = code === 'ELOOP' ? ' (a symbolic link loop)' : ''
        this.issues.push({ path: `/${at.join('/')}`, message: `cannot list included path ${p}: ${code}${hint}`, found: p, expected: 'files or a glob that can be listed', source: positionOf(from, at) })
        continue
      }
      // A glob matching nothing is an empty conf.d; a plain path that is missing is a mistake.
      if (matches.length === 0 && !fastGlob().isDynamicPattern(p)) {
        // fast-glob lists regular files only: a directory, FIFO or device is there, but not a file.
        const kind = await stat(resolve(dirname(from.file), p)).then((st) => st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device' : st.isSocket() ? 'a socket' : 'not a regular file', () => null)
        this.issues.push(kind === null
          ? { path: `/${at.join('/')}`, message: `included file not found: ${p}`, found: p, expected: 'an existing file, or a glob', source: positionOf(from, at) }
          : { path: `/${at.join('/')}`, message: `included path is not a regular file: ${p} (${kind})`, found: p, expected: 'a regular file, or a glob (conf.d/*.yaml)', source: positionOf(from, at) })
      }
      // Each file once, under the shortest path that reaches it (not conf.d/up/conf.d/up/x.yaml).
      const shortest = new Map<string, string>()
      for (const m of [...matches].sort((x, y) => x.length - y.length)) {
        const real = await realpath(m).catch(() => m)
        if (!seen.has(real) && !shortest.has(real)) shortest.set(real, m)
      }
      const keep = new Set(shortest.values())
      for (const real of shortest.keys()) seen.add(real)
      for (const m of matches) if (keep.has(m)) out.push({ file: m, at: positionOf(from, at) })
    }
    return out
  }

  /** Where a merged-config path was written. */
  locate (path: string, keyOf: boolean): string {
    const seg = pointerSegments(path)
    const main = this.files[0]
    if (seg[0] === 'routes' && typeof seg[1] === 'number' && this.routeOrigins[seg[1]] !== undefined) {
      const o = this.routeOrigins[seg[1]]
      return positionOf(o.file, [...o.local, ...seg.slice(2)], keyOf)
    }
    if ((seg[0] === 'spawns' || seg[0] === 'tenants') && typeof seg[1] === 'string') {
      const o = this.named[seg[0]].get(seg[1])?.origin
      if (o !== undefined) return positionOf(o.file, [...o.local, ...seg.slice(2)], keyOf)
    }
    return main === undefined ? '' : positionOf(main, seg, keyOf)
  }
}

/** Relative paths mean "next to the file that says so", whatever the cwd of proxycore is. */
function resolvePaths (value: Obj, dir: string): Obj {
  const abs = (p: unknown): unknown => typeof p === 'string' && p !== '' && !isAbsolute(p) && !p.includes('${') ? resolve(dir, p) : p
  const out: Obj = { ...value }
  for (const k of ['runDir', 'logDir'] as const) if (k in out) out[k] = abs(out[k])
  if (isObj(out.spawns)) {
    out.spawns = Object.fromEntries(Object.entries(out.spawns).map(([n, s]) => {
      if (!isObj(s)) return [n, s]
      const sock = (a: unknown): unknown => typeof a === 'string' && a.startsWith('./') ? abs(a) : typeof a === 'string' && a.startsWith('unix:./') ? `unix:${abs(a.slice(5)) as string}` : a
      return [n, {
        ...s,
        // Under chroot, cwd is a path inside the root (default: the binary's directory there).
        cwd: s.chroot !== undefined ? s.cwd : s.cwd === undefined ? dir : abs(s.cwd),
        ...(s.socketName !== undefined ? { socketName: Array.isArray(s.socketName) ? s.socketName.map(sock) : sock(s.socketName) } : {}),
      }]
    }))
  }
  if (Array.isArray(out.routes)) {
    out.routes = out.routes.map((r) => isObj(r)
      ? { ...r, ...('docroot' in r ? { docroot: abs(r.docroot) } : {}), ...('scriptFilename' in r ? { scriptFilename: abs(r.scriptFilename) } : {}) }
      : r)
  }
  return out
}

/** routeNameClashes (core/compile.ts), each located in the files: checkConfig reports them without positions. */
function duplicateRouteNames (m: Merger): ConfigIssue[] {
  return routeNameClashes(m.routes).map(({ name, at, other, otherWritten }) => {
    const where = otherWritten ? m.locate(`/routes/${other}/name`, false) : `${m.locate(`/routes/${other}`, false)} (a route without \`name\` is named by its index)`
    return { path: `/routes/${at}/name`, message: `route name ${JSON.stringify(name)} is used twice: here and at ${where}`, found: name, source: m.locate(`/routes/${at}/name`, false) }
  })
}

export async function loadConfig (file: string, opts: LoadOptions = {}): Promise<LoadResult> {
  const m = new Merger(opts.env ?? process.env)
  const main = await m.add(resolve(file), true)
  const config = {
    ...(main ?? {}),
    routes: main !== null && main.routes !== undefined && !Array.isArray(main.routes) ? main.routes : m.routes,
    ...(m.named.spawns.size > 0 ? { spawns: Object.fromEntries([...m.named.spawns].map(([k, v]) => [k, v.value])) } : {}),
    ...(m.named.tenants.size > 0 ? { tenants: Object.fromEntries([...m.named.tenants].map(([k, v]) => [k, v.value])) } : {}),
  } as Obj
  delete config.include
  const issues = [...m.issues, ...duplicateRouteNames(m)]
  if (main !== null) {
    const have = new Set(issues.map((i) => i.path))
    const found = await checkConfig(config, opts.adapters !== undefined ? { adapters: opts.adapters } : {})
    for (const i of found) {
      if (!have.has(i.path)) issues.push({ ...i, source: m.locate(i.path, KEY_ISSUE.test(i.message)) })
    }
  }
  return { config: config as unknown as OperatorConfig, issues, files: m.files.map((f) => f.file), locate: (path, keyOf = false) => m.locate(path, keyOf) }
}

/** loadConfig that throws a ConfigError carrying every issue. */
export async function loadConfigOrThrow (file: string, opts: LoadOptions = {}): Promise<LoadResult> {
  const r = await loadConfig(file, opts)
  if (r.issues.length > 0) throw new ConfigError(r.issues)
  return r
}
