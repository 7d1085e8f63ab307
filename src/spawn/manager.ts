/**
 * SpawnManager: the public face of the spawn layer. It owns one SpawnGroup per long-lived spawn
 * and one PipeStarter per pipe spawn, orders start-up by `dependsOn`, cleans up orphans of a
 * previous host, and exposes each spawn to the core as a `BackendSource`-shaped object.
 */
import { EventEmitter } from 'node:events'
import type { Clock, ManagerOptions, SpawnEvents, SpawnSpec, SpawnStatus } from './types.js'
import { spawnError } from './types.js'
import { childEnvironment, resolveSpec, type ResolvedSpec } from './spec.js'
import { realClock } from './backoff.js'
import { SpawnGroup } from './group.js'
import { PipeStarter } from './pipe-starter.js'
import { OutputSink } from './output.js'
import { PidFiles } from './pidfile.js'
import type { LaunchPlan } from './process.js'
import { Launcher, detectCgroup, type CgroupSupport } from './launcher.js'
import { ForkServer, findForkServer } from './fork-server.js'

/** The `BackendSource` shape of src/core/types.ts, implemented structurally. */
export interface SpawnSource {
  readonly name: string
  list (): ReadonlyArray<{ readonly id: string, readonly address: string }>
  subscribe (fn: () => void): () => void
  ensure (signal: AbortSignal): Promise<void>
  requestStarted (endpointId: string): void
  requestDone (endpointId: string): void
}

interface Entry {
  readonly spec: ResolvedSpec
  readonly output: OutputSink
  readonly group: SpawnGroup | null
  readonly pipe: PipeStarter | null
}

export class SpawnManager extends EventEmitter<SpawnEvents> {
  private readonly opts: ManagerOptions
  private readonly clock: Clock
  private readonly pidFiles: PidFiles
  private readonly launcher: Launcher
  private readonly entries = new Map<string, Entry>()
  private started = false
  private closing: Promise<void> | null = null
  /** Pipe spawns whose close() finished (their children all reaped): `stopped` in status(). */
  private readonly pipesClosed = new Set<string>()
  /** Pipe spawns added to a running manager whose start checks refused them: `failed` in status(). */
  private readonly pipesFailed = new Map<string, string>()
  /** One CGI fork server for every pipe spawn that uses it; its helper starts on first use. */
  private forkServer: ForkServer | null = null

  constructor (opts: ManagerOptions = {}) {
    super()
    this.opts = opts
    this.clock = opts.clock ?? realClock
    this.pidFiles = new PidFiles(opts.runDir)
    this.launcher = new Launcher(opts)
  }

  /** The shared fork server for a pipe spawn, or null when it starts its children directly. */
  private forkServerFor (spec: ResolvedSpec): ForkServer | null {
    // launcher: fork-server without a helper is refused by Launcher.validate at start().
    const helper = spec.launcher === 'direct' ? null : findForkServer()
    if (helper === null) return null
    this.forkServer ??= new ForkServer({ helper, clock: this.clock })
    return this.forkServer
  }

  /**
   * Register a spawn. Throws ERR_SPAWN_BAD_SPEC / ERR_SPAWN_BAD_ADDRESS on an invalid spec, and
   * ERR_SPAWN_NOT_READY once close() was called: close() runs once, so nothing would stop it.
   */
  add (name: string, spec: SpawnSpec): void {
    if (this.closing !== null) throw spawnError('ERR_SPAWN_NOT_READY', `spawns.${name}: the manager is closed (close() was called); create a new one`)
    if (this.entries.has(name)) throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${name}: defined twice`)
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${name}: name must match [A-Za-z0-9_.-]+`)
    const resolved = resolveSpec(name, spec)
    const output = new OutputSink(name, this.opts.log, (stream, chunk, pid) => this.emit('stderr', { spawn: name, pid, stream, chunk }),
      (stream, pid) => this.emit('output-end', { spawn: name, pid, stream }))
    const plan = (extraEnv: Record<string, string>): LaunchPlan => {
      this.launcher.recheckProgram(resolved)
      return this.launcher.plan(resolved, resolved.argv, childEnvironment(resolved, extraEnv), resolved.cwd)
    }
    const group = resolved.socketType === 'socket'
      ? new SpawnGroup(resolved, {
        clock: this.clock,
        output,
        pidFiles: this.pidFiles,
        events: this,
        plan,
        planCommand: (command, extraEnv) => this.launcher.plan(resolved, command, childEnvironment(resolved, extraEnv), resolved.cwd),
      })
      : null
    const pipe = resolved.socketType === 'pipe'
      ? new PipeStarter(resolved, this.clock, (argv, env, cwd, nativeUmask) => this.launcher.plan(resolved, argv, childEnvironment(resolved, env), cwd, nativeUmask),
        (script) => this.launcher.checkScript(resolved, script), this.forkServerFor(resolved))
      : null
    this.entries.set(name, { spec: resolved, output, group, pipe })
    if (!this.started) return
    // Added to a running manager: what start() would reject (an unknown dependency, a cycle) is
    // thrown here, and a later failure (identity checks) puts the spawn in FAILED; neither may
    // become an unhandled rejection, which ends the host process.
    try {
      this.linkDeps(name)
      this.checkCycles()
    } catch (err) {
      this.entries.delete(name)
      throw err
    }
    void this.bringUp([name]).catch((err: Error & { code?: string }) => {
      const reason = `${err.code !== undefined ? `${err.code}: ` : ''}${err.message}`
      if (group !== null) group.fail(reason)
      else {
        this.pipesFailed.set(name, reason)
        this.emit('failed', { spawn: name, reason })
      }
    })
  }

  /** Resolve `dependsOn` of socket spawn `name` to its groups (ERR_SPAWN_UNKNOWN_DEPENDENCY). */
  private linkDeps (name: string): void {
    const e = this.entry(name)
    if (e.group === null) return
    e.group.deps = e.spec.dependsOn.map((d) => {
      const dep = this.entries.get(d)?.group
      if (dep === undefined || dep === null) throw spawnError('ERR_SPAWN_UNKNOWN_DEPENDENCY', `spawns.${name}.dependsOn: no socket spawn named ${d}`)
      return dep
    })
  }

  /**
   * Validate identities and dependencies, clean up orphans of a previous host (runDir), then start
   * minProcs of every spawn; dependents wait in 'waiting' for their dependencies.
   */
  async start (): Promise<void> {
    this.started = true
    await this.bringUp([...this.entries.keys()])
  }

  private async bringUp (names: string[]): Promise<void> {
    for (const name of names) {
      const e = this.entry(name)
      await this.launcher.validate(e.spec)
      this.linkDeps(name)
    }
    this.checkCycles()
    for (const name of names) {
      const e = this.entry(name)
      await this.pidFiles.cleanOrphans(name, this.clock, e.spec.stopTimeout)
    }
    for (const name of names) this.entry(name).group?.startUp()
  }

  private checkCycles (): void {
    const state = new Map<string, 'visiting' | 'done'>()
    const visit = (name: string, path: string[]): void => {
      if (state.get(name) === 'done') return
      if (state.get(name) === 'visiting') throw spawnError('ERR_SPAWN_DEPENDENCY_CYCLE', `dependsOn cycle: ${[...path, name].join(' -> ')}`)
      state.set(name, 'visiting')
      for (const d of this.entry(name).spec.dependsOn) visit(d, [...path, name])
      state.set(name, 'done')
    }
    for (const name of this.entries.keys()) visit(name, [])
  }

  private entry (name: string): Entry {
    const e = this.entries.get(name)
    if (e === undefined) throw spawnError('ERR_SPAWN_UNKNOWN', `no spawn named ${name}`)
    return e
  }

  private group (name: string): SpawnGroup {
    const g = this.entry(name).group
    if (g === null) throw spawnError('ERR_SPAWN_UNKNOWN', `spawn ${name} is a pipe spawn; use pipeStarter()`)
    return g
  }

  /** The spawn as a `BackendSource` for the core's pool. */
  source (name: string): SpawnSource {
    const g = this.group(name)
    return {
      name,
      list: () => g.list(),
      subscribe: (fn) => g.subscribe(fn),
      ensure: (signal) => g.ensure(signal),
      requestStarted: (id) => g.requestStarted(id),
      requestDone: (id) => g.requestDone(id),
    }
  }

  /** The `ProcessStarter` for a `socketType: pipe` spawn (CGI adapter). */
  pipeStarter (name: string): PipeStarter {
    const p = this.entry(name).pipe
    if (p === null) throw spawnError('ERR_SPAWN_UNKNOWN', `spawn ${name} is not a pipe spawn`)
    return p
  }

  /** Leave FAILED (operator action, like `systemctl reset-failed`), restarting minProcs. */
  clear (name: string): void {
    this.group(name).clear()
  }

  /** Whether cgroup v2 limits could be used here, and why not; limits use prlimit either way. */
  cgroupSupport (): CgroupSupport {
    return detectCgroup()
  }

  status (): SpawnStatus[] {
    return [...this.entries.entries()].map(([name, e]) => e.group !== null
      ? e.group.status(0)
      : {
          // `stopping` while close() still stops its children, as a socket spawn's.
          name,
          state: this.closing !== null ? (this.pipesClosed.has(name) ? 'stopped' : 'stopping') : this.pipesFailed.has(name) ? 'failed' : 'running',
          reason: this.pipesFailed.get(name) ?? null,
          processes: [],
          pipeChildren: e.pipe?.size ?? 0,
          launcher: e.pipe?.launcher ?? null, forkServer: e.pipe?.forkServerKind ?? null, droppedOutputBytes: e.output.dropped,
        })
  }

  /**
   * Process groups of everything this manager started that may still run: socket spawns'
   * processes, CGI children (either launcher) and the fork server. The last resort of a second
   * SIGTERM, so none outlives the proxy; each is listed only while its id is known to be its own
   * (see the groups() of SpawnGroup, PipeStarter and ForkServer). Not part of status(): the status
   * page shows processes, not a kill list.
   */
  groups (): number[] {
    const out = new Set<number>()
    for (const e of this.entries.values()) for (const g of e.group?.groups() ?? e.pipe?.groups() ?? []) out.add(g)
    for (const g of this.forkServer?.groups() ?? []) out.add(g)
    return [...out]
  }

  /**
   * Graceful stop: every spawn leaves rotation, drains in-flight (bounded by its stopTimeout) and
   * is stopped as a group; dependents stop before what they depend on. Idempotent.
   */
  close (): Promise<void> {
    this.closing ??= this.closeAll()
    return this.closing
  }

  private async closeAll (): Promise<void> {
    const depth = new Map<string, number>()
    const depthOf = (name: string): number => {
      const known = depth.get(name)
      if (known !== undefined) return known
      const deps = this.entries.get(name)?.spec.dependsOn.filter((d) => this.entries.has(d)) ?? []
      depth.set(name, 0)
      const d = deps.length === 0 ? 0 : 1 + Math.max(...deps.map(depthOf))
      depth.set(name, d)
      return d
    }
    const names = [...this.entries.keys()]
    const levels = [...new Set(names.map(depthOf))].sort((a, b) => b - a)
    for (const level of levels) {
      await Promise.all(names.filter((n) => depthOf(n) === level).map(async (n) => {
        const e = this.entry(n)
        await e.group?.close()
        if (e.pipe !== null) {
          await e.pipe.close()
          this.pipesClosed.add(n)
        }
      }))
    }
    await this.forkServer?.close()
    await Promise.all([...this.entries.values()].map((e) => e.output.close()))
  }
}
