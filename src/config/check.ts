/**
 * The full check of a config, without starting anything: validation (validate.ts) plus a dry
 * compile of the routes against placeholder spawn sources, so adapter options, protocols, regexes
 * and backend addresses are checked exactly as `createProxy` will. Used by `proxycore check`,
 * SIGHUP reload and `createProxy` (before any child is started).
 */
import { compileProxy, type CompileInput } from '../core/compile.js'
import { ConfigError, type ConfigIssue } from '../core/errors.js'
import type { BackendSource, ProcessStarter, ProtocolAdapter } from '../core/types.js'
import { silentLogger } from '../logger.js'
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
  /** `embed`: createProxy's shape, where embedder options ride along at the top level. */
  shape?: 'operator' | 'embed'
  sources?: Record<string, BackendSource>
  processStarters?: Record<string, ProcessStarter>
}

/**
 * validateConfig (validate.ts) without TypeBox for a valid shape: the generated check accepts it,
 * and only a rejected config loads TypeBox and the schema (~13 MiB RSS) to word its issues.
 */
async function validate (config: unknown, opts: CheckOptions): Promise<ConfigIssue[]> {
  const embed = opts.shape === 'embed'
  if ((embed ? isEmbedConfig : isOperatorConfig)(config)) return crossFieldCheck(config, [], opts)
  const [{ validateConfig }, { EmbedConfigSchema, OperatorConfigSchema }] = await Promise.all([import('./validate.js'), import('./schema.js')])
  return validateConfig(config, { ...opts, schema: embed ? EmbedConfigSchema : OperatorConfigSchema })
}

export async function checkConfig (config: unknown, opts: CheckOptions = {}): Promise<ConfigIssue[]> {
  const external = [...Object.keys(opts.sources ?? {}), ...Object.keys(opts.processStarters ?? {})]
  const issues = await validate(config, { ...opts, externalSpawns: external })
  if (typeof config !== 'object' || config === null) return issues
  const c = config as CompileInput & { spawns?: Record<string, { socketType?: string }> }
  if (!Array.isArray(c.routes)) return issues
  // Compile the routes whose shape is right, so one malformed route does not hide another's
  // unknown protocol or bad adapter options; `keep` maps compiled indices back to file indices.
  const bad = (i: number): boolean => issues.some((x) => x.path === `/routes/${i}` || x.path.startsWith(`/routes/${i}/`))
  const keep = c.routes.map((_, i) => i).filter((i) => !bad(i))
  const topBad = new Set(issues.map((x) => x.path.split('/')[1]))
  const input = Object.fromEntries(Object.entries(c).filter(([k]) => k === 'routes' || !topBad.has(k))) as unknown as CompileInput
  input.routes = keep.map((i) => c.routes[i])
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
    const have = new Set(issues.map((i) => i.path))
    for (const i of err.issues) {
      const path = i.path.replace(/^\/routes\/(\d+)/, (_, k: string) => `/routes/${keep[Number(k)]}`)
      if (!have.has(path)) issues.push({ ...i, path })
    }
  }
  return issues
}
