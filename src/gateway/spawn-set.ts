/**
 * The gateway's spawns across reloads. Spawns are grouped into components (connected by
 * `dependsOn`), each run by its own SpawnManager, so a reload can keep every unchanged component
 * running untouched and replace only what changed:
 *
 *   unchanged component  -> kept (same processes, same sockets)
 *   changed / new        -> a new manager, started and ready before the swap (make-before-break) ...
 *                           ... unless it reuses a fixed address of the old one (or of one an
 *                           earlier reload retired that still drains): then the old one is stopped
 *                           first (a port cannot be bound twice) and the routes that sent requests
 *                           to it hold them until the new one serves, then send them there
 *                           (SpawnRoute; to the spawn of the same name, else to the one that
 *                           took the address: a spawn renamed in the reload); what start()
 *                           would refuse is checked before that, and should the start still
 *                           fail, the set reports the old one in `stopped` for the gateway to
 *                           start again under the previous config
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

/** Of `old`'s spawns, those whose fixed address one of `names` (spawns of other names) takes: old name -> new name. */
async function heirsOf (old: Component, names: string[], config: SpawnLayerConfig): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  const before = decode(old.key)
  const next = await Promise.all(names.map(async (m) => [m, await fixedAddresses([m], config)] as const))
  for (const n of old.names) {
    const theirs = await fixedAddresses([n], before)
    for (const [m, mine] of next) if (m !== n && collide(mine, theirs)) out.set(n, m)
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

/**
 * What a generation's routes see of spawn `name` (their BackendSource): that spawn of its component,
 * until a reload stops the component first for a changed one on the same fixed address (hold()).
 * From then on a request waits in ensure() — bounded by its route's spawn wait, as for a spawn that
 * is starting — and once the reload has started the replacement (moveTo()) it goes there: the old
 * generation's routes serve through the handover instead of answering 503 "shutting down". Ids are
 * tagged with the turn of the spawn they came from (`php#0@1`): both managers number their
 * processes from 0, and a request that ends on the old process is counted there, not on the new
 * one's `php#0`.
 */
export class SpawnRoute implements BackendSource {
  /** Every spawn this route has sent requests to, by turn (the tag of their ids); the last is current. */
  private readonly sources: BackendSource[] = []
  private held: { done: Promise<void>, release: () => void } | null = null
  private readonly subs = new Set<() => void>()
  private unTarget: (() => void) | null = null

  /** `registry`: the lineage's routes that someone follows (a pool), which a reload may hold and move. */
  constructor (public name: string, public component: Component, private readonly registry: Set<SpawnRoute>) {
    this.sources.push(component.manager.source(name))
  }

  private get target (): BackendSource { return this.sources[this.sources.length - 1] }

  get holding (): boolean { return this.held !== null }

  list (): ReadonlyArray<{ id: string, address: string }> {
    const turn = this.sources.length - 1
    const list = this.target.list()
    return turn === 0 ? list : list.map((e) => ({ id: `${e.id}@${turn}`, address: e.address }))
  }

  subscribe (fn: () => void): () => void {
    if (this.subs.size === 0) {
      this.unTarget = this.target.subscribe(this.changed)
      this.registry.add(this)
    }
    this.subs.add(fn)
    return () => {
      if (!this.subs.delete(fn) || this.subs.size > 0) return
      this.unTarget?.()
      this.unTarget = null
      this.registry.delete(this)
      this.release()
    }
  }

  private readonly changed = (): void => { for (const fn of [...this.subs]) fn() }

  /** Requests that find nothing routable wait from now on (the component is being stopped for its replacement). */
  hold (): void {
    if (this.held !== null) return
    let release!: () => void
    const done = new Promise<void>((resolve) => { release = resolve })
    this.held = { done, release }
  }

  /**
   * From now on route to `c`'s spawn `name` (this one's, or the name of the spawn that took its
   * address in a reload that renamed it); requests held meanwhile go there.
   */
  moveTo (c: Component, name: string): void {
    this.component = c
    this.name = name
    this.sources.push(c.manager.source(name))
    if (this.unTarget !== null) {
      this.unTarget()
      this.unTarget = this.target.subscribe(this.changed)
    }
    this.release()
    // The pool reads the new list now: the new spawn may be ready already and change no more.
    this.changed()
  }

  /** Stop holding without a move: requests go back to the stopped spawn, which refuses them (503) as before. */
  release (): void {
    const h = this.held
    this.held = null
    h?.release()
  }

  async ensure (signal: AbortSignal): Promise<void> {
    for (;;) {
      const held = this.held
      if (held !== null) {
        await untilOrAbort(held.done, signal, this.name)
        continue
      }
      const target = this.target
      try {
        await target.ensure(signal)
        return
      } catch (err) {
        // Its spawn was stopped for a replacement while this waited ("shutting down"): wait for that one.
        if (signal.aborted || (this.held === null && this.target === target)) throw err
      }
    }
  }

  requestStarted (id: string): void { const [src, raw] = this.of(id); src.requestStarted?.(raw) }
  requestDone (id: string): void { const [src, raw] = this.of(id); src.requestDone?.(raw) }

  private of (id: string): [BackendSource, string] {
    // Spawn names and process ids have no `@` ([A-Za-z0-9_.-]+#N); twice per request, so no regex.
    const at = id.lastIndexOf('@')
    if (at < 0) return [this.sources[0], id]
    return [this.sources[Number(id.slice(at + 1))] ?? this.target, id.slice(0, at)]
  }
}

/** `done`, or ERR_SPAWN_NOT_READY once `signal` aborts (a held request's route deadline, its client gone). */
function untilOrAbort (done: Promise<void>, signal: AbortSignal, name: string): Promise<void> {
  if (signal.aborted) return Promise.reject(spawnError('ERR_SPAWN_NOT_READY', `spawn ${name} not ready (a reload is replacing it)`, signal.reason))
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(spawnError('ERR_SPAWN_NOT_READY', `spawn ${name} not ready (a reload is replacing it)`, signal.reason))
    signal.addEventListener('abort', onAbort, { once: true })
    void done.then(() => { signal.removeEventListener('abort', onAbort); resolve() })
  })
}

export class SpawnSet {
  /**
   * `live`: every manager this set's lineage (from `empty()` through each `next()`) started and has
   * not finished stopping, with its component — the current generation's, a building reload's and
   * the retired ones still draining. A second SIGTERM kills all of them. `routes`: the lineage's
   * SpawnRoutes that a pool follows, of every generation still serving or draining.
   */
  private constructor (readonly components: readonly Component[], private readonly log: Logger, private readonly live: Map<SpawnManager, Component>, private readonly routes: Set<SpawnRoute>) {}

  static empty (log: Logger): SpawnSet { return new SpawnSet([], log, new Map(), new Set()) }

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
    // For each component stopped first, its spawns whose address a spawn of another name took (a
    // spawn renamed in this reload): held requests for them go there when no spawn keeps the name.
    const heirs = new Map<Component, Map<string, string>>()
    try {
      for (const names of fresh) {
        const mine = await fixedAddresses(names, config)
        // What still runs and is not part of the new set: the components this reload retires, and
        // those earlier reloads retired that still drain an older generation's requests (their
        // processes hold their addresses until then).
        const others = [...this.live.values()].filter((x) => !kept.includes(x) && !started.includes(x))
        for (const r of others) {
          if (collide(mine, await fixedAddresses(r.names, decode(r.key)))) {
            this.log.warn({ spawns: r.names }, 'reload: address reused by a changed spawn; stopping the old one first')
            if (this.components.includes(r)) stoppedEarly.add(r)
            heirs.set(r, await heirsOf(r, fresh.flat(), config))
            // Its routes hold what arrives meanwhile for the new spawn (moved to it below).
            for (const route of this.routes) if (route.component === r) route.hold()
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
      // Held routes of a component the gateway restarts under the previous config (`stopped`) wait
      // for that; the others' requests are refused as before.
      for (const route of this.routes) if (route.holding && !this.stopped.includes(route.component)) route.release()
      throw err
    }
    for (const c of kept) this.clearFailed(c)
    const set = new SpawnSet([...kept, ...started], this.log, this.live, this.routes)
    // Requests held by the routes of a component stopped first go to its successor now: the spawn
    // of the same name, else the one that took its address.
    for (const route of this.routes) {
      if (!route.holding) continue
      const name = set.components.some((x) => x.names.includes(route.name)) ? route.name : heirs.get(route.component)?.get(route.name)
      const c = name === undefined ? undefined : set.components.find((x) => x.names.includes(name) && !set.isPipe(x, name))
      if (c !== undefined && name !== undefined) route.moveTo(c, name); else route.release()
    }
    return { set, retired }
  }

  /** A failed reload's rollback failed too: requests held for the spawns it stopped are refused. */
  release (): void {
    for (const route of this.routes) route.release()
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
    this.live.set(manager, c)
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
    for (const c of this.components) for (const n of c.names) if (!this.isPipe(c, n)) out[n] = new SpawnRoute(n, c, this.routes)
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
    return [...this.live.keys()].flatMap((m) => m.groups())
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
