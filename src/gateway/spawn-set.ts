/**
 * The gateway's spawns across reloads. Spawns are grouped into components (connected by
 * `dependsOn`), each run by its own SpawnManager, so a reload can keep every unchanged component
 * running untouched and replace only what changed:
 *
 *   unchanged component  -> kept (same processes, same sockets)
 *   changed / new        -> a new manager, started and ready before the swap (make-before-break) ...
 *                           ... unless it reuses a fixed address of the old one: then the old one
 *                           is stopped first (a port cannot be bound twice), a short gap for it only;
 *                           what start() would refuse is checked before that, and should the start
 *                           still fail, the set reports the old one in `stopped` for the gateway
 *                           to start again under the previous config
 *   removed              -> stopped after the swap, once its in-flight requests drained
 */
import type { SpawnConfig, TenantConfig } from '../config/spawn-schema.js'
import { addressKey, managerOptions, toSpawnSpec, type SpawnLayerConfig } from '../config/spawns.js'
import type { BackendSource, Logger, ProcessStarter } from '../core/types.js'
import { SpawnManager, type SpawnStatus } from '../spawn/index.js'
import { spawnError } from '../spawn/types.js'
import { logOutput } from '../spawn/output.js'
import { Launcher } from '../spawn/launcher.js'
import { resolveSpec } from '../spawn/spec.js'
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'

export interface Component {
  readonly names: string[]
  /** Everything that decides how the processes run; equal keys = nothing to restart. */
  readonly key: string
  readonly manager: SpawnManager
}

function components (spawns: Record<string, SpawnConfig>): string[][] {
  const parent = new Map<string, string>(Object.keys(spawns).map((n) => [n, n]))
  const find = (n: string): string => { let r = n; while (parent.get(r) !== r) r = parent.get(r) as string; return r }
  for (const [n, s] of Object.entries(spawns)) for (const d of s.dependsOn ?? []) if (parent.has(d)) parent.set(find(n), find(d))
  const groups = new Map<string, string[]>()
  for (const n of Object.keys(spawns).sort()) groups.set(find(n), [...(groups.get(find(n)) ?? []), n])
  return [...groups.values()]
}

function keyOf (names: string[], c: SpawnLayerConfig): string {
  const tenants: Record<string, TenantConfig | undefined> = {}
  for (const n of names) { const t = c.spawns?.[n]?.tenant; if (t !== undefined) tenants[t] = c.tenants?.[t] }
  // The identity policy is checked at every exec, restarts included: a component kept across a
  // reload that changed it would go on starting programs under the old policy.
  return JSON.stringify({ spawns: names.map((n) => [n, c.spawns?.[n]]), tenants, runDir: c.runDir, logDir: c.logDir, identity: c.identity })
}

/** Components a reload stopped before their replacement started (a fixed address reused). */
const stoppedEarly = new WeakSet<Component>()

/**
 * The fixed addresses of `names` as addressKey keys; a TCP host name also as each address it
 * resolves to (`localhost:9000` binds `127.0.0.1:9000`). Port 0 is never fixed.
 */
async function fixedAddresses (names: string[], c: SpawnLayerConfig): Promise<Set<string>> {
  const out = new Set<string>()
  for (const n of names) {
    for (const a of [c.spawns?.[n]?.socketName ?? []].flat()) {
      const k = addressKey(a)
      if (k === null) continue
      out.add(k.key)
      const m = /^tcp:(.*):(\d+)$/.exec(k.key)
      if (m === null || m[1] === '' || isIP(m[1]) !== 0) continue
      try {
        for (const r of await lookup(m[1], { all: true })) {
          const resolved = addressKey(r.family === 6 ? `[${r.address}]:${m[2]}` : `${r.address}:${m[2]}`)
          if (resolved !== null) out.add(resolved.key)
        }
      } catch {}
    }
  }
  return out
}

const WILDCARD = /^tcp:(?:0\.0\.0\.0|::|):\d+$/

/**
 * Whether binding `mine` fails while `theirs` are bound: the same socket, or the same TCP port where
 * either host is a wildcard (it holds the port on every address), as the config's address checks
 * see a clash.
 */
function collide (mine: Set<string>, theirs: Set<string>): boolean {
  const port = (k: string): string | undefined => /^tcp:.*:(\d+)$/.exec(k)?.[1]
  for (const x of mine) {
    if (theirs.has(x)) return true
    const p = port(x)
    if (p === undefined) continue
    for (const y of theirs) if (port(y) === p && (WILDCARD.test(x) || WILDCARD.test(y))) return true
  }
  return false
}

export class SpawnSet {
  /**
   * `live`: every manager this set's lineage (from `empty()` through each `next()`) started and has
   * not finished stopping — the current generation's, a building reload's and the retired ones
   * still draining. A second SIGTERM kills all of them.
   */
  private constructor (readonly components: readonly Component[], private readonly log: Logger, private readonly live: Set<SpawnManager>) {}

  static empty (log: Logger): SpawnSet { return new SpawnSet([], log, new Set()) }

  /**
   * The next set for `config`: keeps unchanged components of `this`, starts the rest. Returns the
   * new set and the components of `this` that the caller must retire (after the swap) with `retire`.
   */
  async next (config: SpawnLayerConfig, ready?: AbortSignal): Promise<{ set: SpawnSet, retired: Component[] }> {
    const wanted = components(config.spawns ?? {})
    // A component stopped early by a failed reload is gone: its names start anew.
    const old = new Map(this.components.filter((c) => !stoppedEarly.has(c)).map((c) => [c.key, c]))
    const kept: Component[] = []
    const started: Component[] = []
    const fresh: string[][] = []
    for (const names of wanted) {
      const same = old.get(keyOf(names, config))
      if (same !== undefined) { kept.push(same); old.delete(same.key) } else fresh.push(names)
    }
    const retired = [...old.values()]
    // Everything start() would refuse is refused here, before any old component is touched: a
    // rejected reload leaves the previous generation as it was (nginx, Apache graceful).
    const launcher = new Launcher(managerOptions(config))
    for (const names of fresh) {
      for (const n of names) {
        try {
          await launcher.validate(resolveSpec(n, toSpawnSpec((config.spawns ?? {})[n])))
        } catch (err) {
          // The reload's log line names the spawn, as a start's does (`spawns.<name>: …`).
          if (err instanceof Error && !err.message.startsWith(`spawns.${n}`)) err.message = `spawns.${n}: ${err.message}`
          throw err
        }
      }
    }
    try {
      for (const names of fresh) {
        const mine = await fixedAddresses(names, config)
        for (const r of retired.filter((x) => !stoppedEarly.has(x))) {
          if (collide(mine, await fixedAddresses(r.names, decode(r.key)))) {
            this.log.warn({ spawns: r.names }, 'reload: address reused by a changed spawn; stopping the old one first')
            stoppedEarly.add(r)
            await this.stop(r)
          }
        }
        started.push(await this.start(names, config))
      }
      // Make-before-break means the new processes serve before the swap: until they accept, the
      // old generation's processes (still running) answer, not a queue waiting on a slow start.
      if (ready !== undefined) {
        await Promise.all(started.map((c) => this.settled(c, config, ready)))
        // One that went FAILED meanwhile (its address taken, its program crashing) did not start:
        // the reload is rejected and the old one, still running, keeps serving (nginx, a reload
        // it cannot bind).
        const failed = started.flatMap((c) => c.manager.status()).find((s) => s.state === 'failed')
        if (failed !== undefined) throw spawnError('ERR_SPAWN_FAILED', `spawns.${failed.name}: FAILED while the reload waited for it: ${failed.reason ?? 'no reason given'}`)
      }
    } catch (err) {
      await this.retire(started)
      throw err
    }
    for (const c of kept) this.clearFailed(c)
    return { set: new SpawnSet([...kept, ...started], this.log, this.live), retired }
  }

  /**
   * A reload is the operator's word that the fault is fixed (the missing file restored, the
   * database back): a kept spawn in FAILED starts again, as a changed one would
   * (`systemctl reset-failed` + start). Nothing else about it changes.
   */
  private clearFailed (c: Component): void {
    for (const s of c.manager.status()) {
      if (s.state !== 'failed') continue
      this.log.info({ spawn: s.name, reason: s.reason }, 'reload: restarting a FAILED spawn')
      c.manager.clear(s.name)
    }
  }

  /**
   * Resolves once every spawn of `c` has settled: a process ready (`running`), nothing wanted yet
   * (`idle`: minProcs 0) or `failed` (next() then rejects the reload). Bounded by
   * the longest `startTimeout` of its spawns plus a second (a spawn whose restarts go on forever
   * never settles), and by `abort` (a stop signal must not wait for a slow start).
   */
  private async settled (c: Component, config: SpawnLayerConfig, abort: AbortSignal): Promise<void> {
    const busy = (): boolean => c.manager.status().some((s) => s.state === 'starting' || s.state === 'waiting' || s.state === 'backoff')
    if (!busy() || abort.aborted) return
    // Node fires a longer timer at once: 2147483647 ms is the longest it sets.
    const limit = Math.min(2_147_483_647, 1000 + Math.max(0, ...c.names.map((n) => resolveSpec(n, toSpawnSpec((config.spawns ?? {})[n])).startTimeout)))
    const events = ['ready', 'failed', 'exit', 'restart'] as const
    await new Promise<void>((resolve) => {
      const check = (): void => { if (!busy() || abort.aborted) done() }
      // On an event, read the state once the emitter is done: 'restart' is emitted before the
      // slot's backoff is recorded, and status() then says `idle` — not settled, only between tries.
      const onEvent = (): void => { setImmediate(check) }
      const timer = setTimeout(() => {
        this.log.warn({ spawns: c.names }, 'reload: a changed spawn is not ready yet; swapping anyway')
        done()
      }, limit)
      const poll = setInterval(check, 250)
      const done = (): void => {
        clearTimeout(timer)
        clearInterval(poll)
        for (const e of events) c.manager.off(e, onEvent)
        abort.removeEventListener('abort', done)
        resolve()
      }
      for (const e of events) c.manager.on(e, onEvent)
      abort.addEventListener('abort', done)
    })
  }

  /** Components of this set that a failed reload stopped; the caller starts them again. */
  get stopped (): Component[] { return this.components.filter((c) => stoppedEarly.has(c)) }

  private async start (names: string[], config: SpawnLayerConfig): Promise<Component> {
    const manager = new SpawnManager(managerOptions(config))
    manager.on('failed', (e) => this.log.error({ spawn: e.spawn, reason: e.reason }, 'spawn failed'))
    manager.on('exit', (e) => { if (!e.expected) this.log.warn({ spawn: e.spawn, pid: e.pid, code: e.code, signal: e.signal }, 'spawned process exited') })
    manager.on('address-changed', (e) => this.log.warn({ spawn: e.spawn, id: e.id, wanted: e.wanted, address: e.address, reason: e.reason }, 'spawn address changed'))
    if (config.logDir === undefined) logOutput(manager, this.log)
    const c: Component = { names, key: keyOf(names, config), manager }
    this.live.add(manager)
    try {
      for (const n of names) manager.add(n, toSpawnSpec((config.spawns ?? {})[n]))
      await manager.start()
    } catch (err) {
      await this.stop(c)
      throw err
    }
    return c
  }

  private async stop (c: Component): Promise<void> {
    await c.manager.close()
    this.live.delete(c.manager)
  }

  sources (): Record<string, BackendSource> {
    const out: Record<string, BackendSource> = {}
    for (const c of this.components) for (const n of c.names) if (!this.isPipe(c, n)) out[n] = c.manager.source(n)
    return out
  }

  starters (): Record<string, ProcessStarter> {
    const out: Record<string, ProcessStarter> = {}
    for (const c of this.components) for (const n of c.names) if (this.isPipe(c, n)) out[n] = c.manager.pipeStarter(n)
    return out
  }

  private isPipe (c: Component, name: string): boolean {
    return decode(c.key).spawns?.[name]?.socketType === 'pipe'
  }

  status (): SpawnStatus[] {
    return this.components.flatMap((c) => c.manager.status())
  }

  /**
   * Process groups of every process the lineage started that may still run (see `live`), not only
   * this set's: socket spawns' processes, CGI children and the fork server (SpawnManager.groups()).
   * A second SIGTERM kills them at once, so none outlives proxycore.
   */
  groups (): number[] {
    return [...this.live].flatMap((m) => m.groups())
  }

  /** Stop `components` (retired by a reload, or undone by a failed one). */
  async retire (components: readonly Component[]): Promise<void> {
    await Promise.all(components.map((c) => this.stop(c)))
  }

  async close (): Promise<void> {
    await this.retire(this.components)
  }
}

function decode (key: string): SpawnLayerConfig {
  const k = JSON.parse(key) as { spawns: Array<[string, SpawnConfig]>, runDir?: string, logDir?: string }
  return { spawns: Object.fromEntries(k.spawns), runDir: k.runDir, logDir: k.logDir }
}
