/**
 * A valid config can still leave one tenant's backend open to another's code on a shared host.
 * These are not errors (a single-user host, or one whose tenants trust each other, may want
 * them), so `serve` logs them at warn at start and at each reload, and `check` prints them, each
 * at its key (docs/guides/multi-user.md "Who can connect to a backend", "The status page").
 */
import { escapeKey } from './locate.js'
import type { OperatorConfig } from './schema.js'
import type { SpawnConfig } from './spawn-schema.js'
import { unixPathOf } from './spawns.js'

export interface ConfigAdvice {
  /** JSON pointer of the key concerned. */
  readonly path: string
  readonly message: string
}

/** The user a spawn runs as (its own, or its tenant's), unless that is root. */
function switchedUser (spawn: SpawnConfig, config: OperatorConfig): string | null {
  const user = spawn.user ?? (spawn.tenant !== undefined ? config.tenants?.[spawn.tenant]?.user : undefined)
  if (user === undefined || user === 'root' || user === 0 || user === '0') return null
  return String(user)
}

export function sharedHostAdvice (config: OperatorConfig): ConfigAdvice[] {
  const out: ConfigAdvice[] = []
  const users: string[] = []
  for (const [name, spawn] of Object.entries(config.spawns ?? {})) {
    const user = switchedUser(spawn, config)
    if (user === null) continue
    users.push(user)
    if (spawn.socketType === 'pipe' || spawn.socketName === undefined) continue
    const addresses = typeof spawn.socketName === 'string' ? [spawn.socketName] : spawn.socketName
    const tcp = addresses.filter((a) => unixPathOf(a) === null)
    if (tcp.length === 0) continue
    out.push({
      path: `/spawns/${escapeKey(name)}/socketName`,
      message: `${tcp.join(', ')} is a TCP port: every local user, each tenant's code included, can connect to it past the routes, and a FastCGI or SCGI backend runs whatever script it is sent, as ${user}; give it a unix socket (docs/guides/multi-user.md "Who can connect to a backend")`,
    })
  }
  if (config.status !== undefined && config.status.allow === undefined && users.length > 0) {
    out.push({
      path: '/status',
      message: `no allow list: the status page answers loopback, where the code of every spawn's user (${[...new Set(users)].join(', ')}) runs too, and shows every spawn's processes and last stderr lines; set status.allow (e.g. ['unix:'] with a unix listener in a directory only root can enter: docs/guides/multi-user.md "The status page")`,
    })
  }
  return out
}
