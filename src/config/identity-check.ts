/**
 * `proxycore check --explain` for user-switched spawns: the same tenant, identity and suEXEC
 * program checks `SpawnManager.start()` runs (Launcher.validate), without binding or starting
 * anything. One refusal per spawn, with its stable code. And the docroot of each CGI route whose
 * scripts run user-switched must lie inside `identity.allowedRoots`: outside, every script would
 * be refused per request (403 ERR_SUEXEC_NOT_IN_ROOT) while the config looked fine.
 */
import { checkInsideRoots } from '../spawn/identity.js'
import { Launcher } from '../spawn/launcher.js'
import { resolveSpec } from '../spawn/spec.js'
import { escapeKey } from './locate.js'
import { managerOptions, toSpawnSpec, type SpawnLayerConfig } from './spawns.js'

export interface SpawnRefusal {
  /** JSON pointer of the spawn, e.g. `/spawns/php`, or of a route's docroot (`/routes/2/docroot`). */
  readonly path: string
  readonly code: string
  readonly message: string
}

export async function spawnRefusals (config: SpawnLayerConfig & { routes?: ReadonlyArray<{ spawn?: string, docroot?: string }> }): Promise<SpawnRefusal[]> {
  const launcher = new Launcher(managerOptions(config))
  const out: SpawnRefusal[] = []
  for (const [name, s] of Object.entries(config.spawns ?? {})) {
    try {
      await launcher.validate(resolveSpec(name, toSpawnSpec(s)))
    } catch (err) {
      const e = err as Error & { code?: unknown }
      if (typeof e.code !== 'string') throw err
      out.push({ path: `/spawns/${escapeKey(name)}`, code: e.code, message: e.message })
    }
  }
  const policy = { minUid: 0, minGid: 0, allowedRoots: config.identity?.allowedRoots }
  config.routes?.forEach((r, i) => {
    const s = r.spawn === undefined ? undefined : config.spawns?.[r.spawn]
    if (r.docroot === undefined || s === undefined || s.socketType !== 'pipe' || (s.user === undefined && s.tenant === undefined)) return
    try {
      checkInsideRoots(r.docroot, policy)
    } catch (err) {
      const e = err as Error & { code?: unknown }
      // A docroot that does not exist is the route's own problem (404s), not an identity refusal.
      if (typeof e.code === 'string' && e.code.startsWith('ERR_')) out.push({ path: `/routes/${i}/docroot`, code: e.code, message: e.message })
    }
  })
  return out
}
