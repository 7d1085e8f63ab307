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
import { validateConfig, type ValidateOptions } from './validate.js'

/** A source that never lists anything: compile only needs the name to exist. */
function placeholderSource (name: string): BackendSource {
  return { name, list: () => [], subscribe: () => () => {}, ensure: () => Promise.reject(new Error('placeholder')) }
}

const placeholderStarter: ProcessStarter = {
  start () { throw new Error('placeholder') },
  kill () {},
}

export interface CheckOptions extends ValidateOptions {
  sources?: Record<string, BackendSource>
  processStarters?: Record<string, ProcessStarter>
}

export async function checkConfig (config: unknown, opts: CheckOptions = {}): Promise<ConfigIssue[]> {
  const external = [...Object.keys(opts.sources ?? {}), ...Object.keys(opts.processStarters ?? {})]
  const issues = validateConfig(config, { ...opts, externalSpawns: external })
  if (typeof config !== 'object' || config === null) return issues
  const c = config as CompileInput & { spawns?: Record<string, { socketType?: string }> }
  if (!Array.isArray(c.routes) || issues.some((i) => i.path === '/routes' || i.path.startsWith('/routes/'))) return issues
  const sources = new Map<string, BackendSource>(Object.entries(opts.sources ?? {}))
  const starters = new Map<string, ProcessStarter>(Object.entries(opts.processStarters ?? {}))
  for (const [name, s] of Object.entries(c.spawns ?? {})) {
    sources.set(name, placeholderSource(name))
    if (s?.socketType === 'pipe') starters.set(name, placeholderStarter)
  }
  try {
    const runtime = compileProxy(c, {
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
    issues.push(...err.issues.filter((i) => !have.has(i.path)))
  }
  return issues
}
