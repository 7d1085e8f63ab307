/**
 * `proxycore check --explain` for user-switched spawns: the same tenant, identity and suEXEC
 * program checks `SpawnManager.start()` runs (Launcher.validate), without binding or starting
 * anything. One refusal per spawn, with its stable code.
 */
import { Launcher } from '../spawn/launcher.js'
import { resolveSpec } from '../spawn/spec.js'
import { escapeKey } from './locate.js'
import { managerOptions, toSpawnSpec, type SpawnLayerConfig } from './spawns.js'

export interface SpawnRefusal {
  /** JSON pointer of the spawn, e.g. `/spawns/php`. */
  readonly path: string
  readonly code: string
  readonly message: string
}

export async function spawnRefusals (config: SpawnLayerConfig): Promise<SpawnRefusal[]> {
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
  return out
}
