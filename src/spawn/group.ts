/**
 * SpawnGroup: the policy for one spawn (lighttpd's gw_host with its procs). It decides how many
 * processes run per address, restarts crashed ones with backoff, recycles after maxRequests
 * (its successor started ahead, so the limit is kept and nothing waits for a boot; a successor
 * that cannot start never takes its predecessor down), shrinks idle ones, and is the
 * `BackendSource` the core routes from.
 *
 * Address of each process: every process gets its own listening socket so the proxy can stop
 * routing to exactly that one. The first process of an address gets the configured address; any
 * other (extra instance, or a replacement started while the old one drains) gets
 *   - unix: `<path>-N`, the lowest N not held by a live process of this spawn;
 *   - TCP: an ephemeral port chosen by the kernel on the same host (loopback when the configured
 *     host is a wildcard). "Next free port" scanning races with other programs and can walk into
 *     ports other services expect; the kernel's choice cannot collide. `list()` reports it.
 * A slot's next process (crash, failed start or health check) asks for the TCP address the slot's
 * last one had, kernel-chosen ports included, so a restarted backend keeps its address; a kernel
 * port someone else took meanwhile gives way to a fresh one ('address-changed'). A recycle's
 * successor runs beside its predecessor, so it has its own port, which the slot keeps after.
 */
import { EventEmitter } from 'node:events'
import type { Clock, CrashInfo, ExitInfo, PendingRestart, ProcessStatusState, SpawnAddress, SpawnEvents, SpawnState, SpawnStatus } from './types.js'
import { spawnError } from './types.js'
import { formatAddress, type ResolvedSpec } from './spec.js'
import { SpawnedProcess, type LaunchPlan } from './process.js'
import { RestartPolicy } from './backoff.js'
import { HealthMonitor, type CommandPlanner } from './health.js'
import type { OutputSink } from './output.js'
import type { PidFiles } from './pidfile.js'
import { procStats } from './proc-stats.js'
import { liveGroupMembers } from './group-kill.js'

interface Slot {
  readonly addrIndex: number
  readonly policy: RestartPolicy
  active: boolean
  /** The slot's process: serving, or starting as its first (or crash-restarted) one. */
  current: SpawnedProcess | null
  /**
   * Recycling: the replacement started when `current` nears maxRequests (`prewarmAt`). Ready
   * before `current` reaches the limit, it waits out of rotation (standby); at the limit the two
   * swap in one tick. A crash of `current` meanwhile hands it the slot.
   */
  successor: SpawnedProcess | null
  /**
   * This recycle's successor failed to start at least once: `current` serves on past its limit
   * (rather than leave rotation for a replacement that may never come) while it is retried.
   */
  successorFailed: boolean
  restarts: number
  lastExit: ExitInfo | null
  /** Timer of the slot's next start after a failure: a crash restart or a successor's retry. */
  backoff: unknown
  /** When `backoff` fires (clock.now() ms); meaningful only while `backoff` is set. */
  backoffAt: number
  /**
   * TCP: the address the slot's process last had (a kernel-assigned port resolved). The slot's
   * next process, after a crash, a failed start or health check, asks for it again.
   */
  remembered: { host: string, port: number } | null
}

export interface GroupContext {
  readonly clock: Clock
  readonly output: OutputSink
  readonly pidFiles: PidFiles
  readonly events: EventEmitter<SpawnEvents>
  readonly plan: (extraEnv: Record<string, string>) => LaunchPlan
  /** Plans a health-check command as the backend is planned (its identity, limits, environment). */
  readonly planCommand: CommandPlanner
}

export class SpawnGroup {
  readonly name: string
  readonly spec: ResolvedSpec
  deps: SpawnGroup[] = []
  private readonly ctx: GroupContext
  private readonly slots: Slot[] = []
  private readonly live = new Set<SpawnedProcess>()
  /**
   * Ready processes kept out of rotation by recycling: a successor on standby until its
   * predecessor reaches maxRequests, and a process at its limit whose successor is still booting
   * (held: it takes no more requests, yet is not stopped until the successor is up).
   */
  private readonly benched = new Set<SpawnedProcess>()
  private readonly idleTimers = new Map<SpawnedProcess, unknown>()
  private readonly unhealthy = new WeakSet<SpawnedProcess>()
  private readonly health: HealthMonitor | null
  private readonly changes = new EventEmitter()
  private ready: Array<{ id: string, address: string }> = []
  private seq = 0
  private failed: string | null = null
  /** The last crash (or failed start) of any of its processes, kept after the process is reaped. */
  private lastCrash: CrashInfo | null = null
  private waitingFor: string | null = null
  private closing = false
  private closed = false

  constructor (spec: ResolvedSpec, ctx: GroupContext) {
    this.name = spec.name
    this.spec = spec
    this.ctx = ctx
    this.changes.setMaxListeners(0)
    this.health = spec.healthCheck === null
      ? null
      : new HealthMonitor(spec.healthCheck, ctx.clock, ctx.planCommand, (p) => {
        // Out of list() now, not when its leader exits: the stop ladder can take stopTimeout (2 ×
        // with a killSignal other than SIGTERM), and every request routed to it meanwhile would
        // meet a process being killed.
        this.unhealthy.add(p)
        this.clearIdle(p)
        void p.stop()
        this.notify()
      })
  }

  // ---- BackendSource ------------------------------------------------------------------------

  list (): ReadonlyArray<{ id: string, address: string }> { return this.ready }

  subscribe (fn: () => void): () => void {
    this.changes.on('change', fn)
    return () => { this.changes.off('change', fn) }
  }

  /**
   * Resolves once a process is routable, starting one on demand; waits through backoff. Rejects
   * ERR_SPAWN_FAILED when this spawn is FAILED, or waits for a dependency (direct or further down)
   * that is: only clear() or a reload ends that, so a request must not wait for its timeout.
   */
  ensure (signal: AbortSignal): Promise<void> {
    if (this.ready.length > 0) return Promise.resolve()
    const check = (): Error | null => {
      if (this.failed !== null) return spawnError('ERR_SPAWN_FAILED', `spawn ${this.name} is FAILED: ${this.failed}`)
      if (this.closing) return spawnError('ERR_SPAWN_NOT_READY', `spawn ${this.name} is shutting down`)
      const dep = this.failedDependency()
      if (dep !== null) return spawnError('ERR_SPAWN_FAILED', `spawn ${this.name} waits for ${dep.name}, which is FAILED: ${dep.failed as string}`)
      return null
    }
    if (this.failed === null && !this.closing && !signal.aborted) this.wake()
    const early = check()
    if (early !== null) return Promise.reject(early)
    if (signal.aborted) return Promise.reject(spawnError('ERR_SPAWN_NOT_READY', `spawn ${this.name} not ready`, signal.reason))
    return new Promise((resolve, reject) => {
      const done = (err: Error | null): void => {
        this.changes.off('change', onChange)
        signal.removeEventListener('abort', onAbort)
        if (err === null) resolve(); else reject(err)
      }
      const onChange = (): void => {
        if (this.ready.length > 0) { done(null); return }
        const err = check()
        if (err !== null) done(err)
      }
      const onAbort = (): void => done(spawnError('ERR_SPAWN_NOT_READY', `spawn ${this.name} not ready (${this.state})`, signal.reason))
      this.changes.on('change', onChange)
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }

  requestStarted (id: string): void {
    const p = this.find(id)
    if (p === undefined) return
    p.inflight++
    p.requests++
    this.clearIdle(p)
    if (this.spec.maxRequests > 0 && p.state === 'ready' && !this.benched.has(p)) this.countTowardsRecycle(p)
    this.maybeGrow()
  }

  requestDone (id: string): void {
    const p = this.find(id)
    if (p === undefined || p.inflight === 0) return
    p.inflight--
    if (p.inflight > 0) return
    if (p.state === 'draining') void p.stop()
    else if (p.state === 'ready') this.armIdle(p)
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  get state (): SpawnState {
    if (this.closed) return 'stopped'
    if (this.closing) return 'stopping'
    if (this.failed !== null) return 'failed'
    if (this.waitingFor !== null) return 'waiting'
    if (this.ready.length > 0) return 'running'
    // A slot's process that crashed (or failed its start or health check) is being stopped: its
    // group can take up to stopTimeout (2 × with a killSignal other than SIGTERM) to die, and its
    // restart follows. Not idle meanwhile.
    if (this.slots.some((s) => s.backoff !== null || (s.active && s.successor === null && s.current?.state === 'stopping'))) return 'backoff'
    if ([...this.live].some((p) => p.state === 'starting')) return 'starting'
    return 'idle'
  }

  /** Bring up minProcs per address (manager.start()). */
  startUp (): void {
    if (this.spec.minProcs > 0) this.wake(this.spec.minProcs)
  }

  /**
   * Make sure at least `perAddress` slots of every address are active, once dependencies run.
   * A dependency that is not running holds this spawn in 'waiting' and is started itself.
   */
  wake (perAddress = 1): void {
    if (this.closing || this.failed !== null) return
    const blocker = this.deps.find((d) => d.state !== 'running')
    if (blocker !== undefined) {
      const first = this.waitingFor === null
      this.waitingFor = blocker.failed !== null ? `${blocker.name} (failed)` : blocker.name
      if (first) {
        const retry = (): void => {
          if (this.deps.every((d) => d.state === 'running') || this.closing) {
            for (const d of this.deps) d.changes.off('change', retry)
            this.waitingFor = null
            this.wake(perAddress)
          } else {
            const b = this.deps.find((d) => d.state !== 'running') as SpawnGroup
            this.waitingFor = b.failed !== null ? `${b.name} (failed)` : b.name
          }
          this.notify()
        }
        for (const d of this.deps) d.changes.on('change', retry)
      }
      blocker.wake()
      this.notify()
      return
    }
    for (let a = 0; a < this.spec.addresses.length; a++) {
      while (this.activeSlots(a).length < perAddress && this.activate(a)) { /* bounded by maxProcs */ }
    }
  }

  /**
   * A dependency that holds this spawn in 'waiting' and is FAILED itself, or holds its own
   * dependents so (a chain: web -> app -> db); null while this spawn has a process of its own
   * running, starting or due (its own restarts do not wait for dependencies).
   */
  private failedDependency (): SpawnGroup | null {
    if (this.slots.some((s) => s.active)) return null
    for (const d of this.deps) {
      if (d.state === 'running') continue
      if (d.failed !== null) return d
      const deeper = d.failedDependency()
      if (deeper !== null) return deeper
    }
    return null
  }

  private activeSlots (addrIndex: number): Slot[] {
    return this.slots.filter((s) => s.addrIndex === addrIndex && s.active)
  }

  private activate (addrIndex: number): boolean {
    if (this.activeSlots(addrIndex).length >= this.spec.maxProcs) return false
    let slot = this.slots.find((s) => s.addrIndex === addrIndex && !s.active && s.current === null && s.successor === null)
    if (slot === undefined) {
      slot = { addrIndex, policy: new RestartPolicy(this.spec.restart), active: false, current: null, successor: null, successorFailed: false, restarts: 0, lastExit: null, backoff: null, backoffAt: 0, remembered: null }
      this.slots.push(slot)
    }
    slot.active = true
    this.launch(slot)
    return true
  }

  /** Grow while every routable process is at maxLoadPerProc (lighttpd max-load-per-proc). */
  private maybeGrow (): void {
    if (this.closing || this.failed !== null || this.waitingFor !== null) return
    // A recycle's successor is no capacity of its own: it takes its predecessor's place.
    const procs = [...this.live].filter((p) => (p.state === 'ready' || p.state === 'starting') && this.slots[p.slot].successor !== p && !this.benched.has(p))
    if (procs.length === 0 || procs.some((p) => p.inflight < this.spec.maxLoadPerProc)) return
    let best = -1
    for (let a = 0; a < this.spec.addresses.length; a++) {
      const n = this.activeSlots(a).length
      if (n < this.spec.maxProcs && (best === -1 || n < this.activeSlots(best).length)) best = a
    }
    if (best !== -1) this.activate(best)
  }

  /**
   * `portFallback`: the address is the slot's remembered kernel port; when another socket took it
   * meanwhile, the process takes a fresh one (SpawnedProcess.bindOwn) rather than fail to start.
   */
  private allocateAddress (slot: Slot, asSuccessor: boolean): { address: SpawnAddress, portFallback: boolean } {
    const base = this.spec.addresses[slot.addrIndex]
    const held = new Set([...this.live].map((p) => p.addressId))
    if (base.kind === 'unix') {
      for (let n = 0; ; n++) {
        const path = n === 0 ? base.path : `${base.path}-${n}`
        if (!held.has(`unix:${path}`)) return { address: { kind: 'unix', path }, portFallback: false }
      }
    }
    // A restarted slot keeps its address. A recycle's successor cannot: its predecessor still
    // listens there (make-before-break), so it gets a port of its own, kept once it takes the slot.
    const fresh = this.freshAddress(base)
    const r = slot.remembered
    // A configured port, free in this spawn, stays the first choice (taken by another program, it
    // is ERR_SPAWN_ADDRESS_IN_USE as ever: no kernel choice to fall back from).
    if (asSuccessor || r === null || (base.port !== 0 && fresh === base)) return { address: fresh, portFallback: false }
    const address: SpawnAddress = { kind: 'tcp', host: r.host, port: r.port }
    if (held.has(formatAddress(address))) return { address: fresh, portFallback: false }
    return { address, portFallback: true }
  }

  private freshAddress (base: SpawnAddress & { kind: 'tcp' }): SpawnAddress {
    const firstHeld = [...this.live].some((p) => p.address.kind === 'tcp' && p.address.host === base.host && p.address.port === base.port)
    if (!firstHeld) return base
    const host = base.host === '0.0.0.0' ? '127.0.0.1' : base.host === '::' ? '::1' : base.host
    return { kind: 'tcp', host, port: 0 }
  }

  private launch (slot: Slot, asSuccessor = false): void {
    slot.backoff = null
    const p = new SpawnedProcess({
      id: `${this.name}#${this.seq++}`,
      slot: this.slots.indexOf(slot),
      spec: this.spec,
      ...this.allocateAddress(slot, asSuccessor),
      clock: this.ctx.clock,
      output: this.ctx.output,
      pidFiles: this.ctx.pidFiles,
      plan: this.ctx.plan,
      hooks: {
        onSpawn: (q) => {
          this.remember(slot, q)
          this.ctx.events.emit('spawn', { spawn: this.name, id: q.id, pid: q.pid as number, address: q.addressId })
        },
        onAddressFallback: (q, wanted, err) => {
          this.ctx.events.emit('address-changed', { spawn: this.name, id: q.id, wanted: formatAddress(wanted), address: q.addressId, reason: err.message })
        },
        onReady: (q) => this.onReady(q),
        onDown: (q) => this.onDown(slot, q),
        onExit: (q, info, expected, beforeReady) => this.onExit(slot, q, info, expected, beforeReady),
      },
    })
    if (asSuccessor) slot.successor = p; else slot.current = p
    this.live.add(p)
    void p.start()
    this.notify()
  }

  /** The slot's address from now on: its process's, once bound (a successor's once it takes over). */
  private remember (slot: Slot, p: SpawnedProcess): void {
    if (slot.current !== p || p.address.kind !== 'tcp' || p.address.port === 0) return
    slot.remembered = { host: p.address.host, port: p.address.port }
  }

  private onReady (p: SpawnedProcess): void {
    const slot = this.slots[p.slot]
    const successor = slot.successor === p
    if (this.closing || !slot.active || (slot.current !== p && !successor)) { p.drain(); void p.stop(); return }
    this.ctx.events.emit('ready', { spawn: this.name, id: p.id, pid: p.pid as number, address: p.addressId })
    this.health?.watch(p)
    if (successor) {
      const old = slot.current
      // Ready before its predecessor's limit: standby, out of rotation, until the limit.
      if (old !== null && old.state === 'ready' && !this.benched.has(old) && old.requests < this.spec.maxRequests) {
        this.benched.add(p)
        // Its predecessor may have gone idle while it booted (armIdle left the slot alone then).
        if (old.inflight === 0) this.armIdle(old)
        this.notify()
        return
      }
      this.handOver(slot)
      return
    }
    this.armIdle(p)
    this.notify()
  }

  /**
   * A process's leader exited; its group may take up to stopTimeout more to stop (2 × with a
   * killSignal other than SIGTERM). A recycle's successor on standby takes the slot now, not once
   * that group is gone: it is up, and nothing else is routable meanwhile.
   */
  private onDown (slot: Slot, p: SpawnedProcess): void {
    if (slot.current === p && slot.successor !== null && slot.successor.state === 'ready' && !this.closing) {
      slot.lastExit = p.exit
      this.handOver(slot)
      return
    }
    this.notify()
  }

  /** The successor enters rotation in the same tick its predecessor leaves it (retire). */
  private handOver (slot: Slot): void {
    const p = slot.successor
    if (p === null) return
    const old = slot.current
    slot.current = p
    slot.successor = null
    slot.successorFailed = false
    this.remember(slot, p)
    this.benched.delete(p)
    this.armIdle(p)
    if (old !== null) { this.benched.delete(old); this.retire(old) }
    this.notify()
  }

  private onExit (slot: Slot, p: SpawnedProcess, info: ExitInfo, expected: boolean, beforeReady: boolean): void {
    this.live.delete(p)
    this.benched.delete(p)
    this.clearIdle(p)
    this.health?.unwatch(p)
    // A start that timed out was stopped by us, yet it is a failed start for the backoff.
    const crashed = !expected || this.unhealthy.has(p) || p.startError !== null
    if (crashed) this.lastCrash = { ...info, id: p.id, pid: p.pid, error: p.startError?.message ?? null }
    if (p.pid !== null) {
      this.ctx.events.emit('exit', { spawn: this.name, id: p.id, pid: p.pid, code: info.code, signal: info.signal, expected: !crashed })
    }
    const running = slot.active && !this.closing && this.failed === null
    if (slot.current === p) {
      slot.current = null
      slot.lastExit = info
      if (slot.successor !== null) {
        // Its recycle's successor is booting (or on standby): that one takes the slot, no second
        // replacement.
        slot.current = slot.successor
        slot.successor = null
        slot.successorFailed = false
        this.remember(slot, slot.current)
        this.benched.delete(slot.current)
        if (slot.current.state === 'ready') this.armIdle(slot.current)
      } else if (crashed && running && slot.backoff === null) {
        this.restartSlot(slot, p, beforeReady)
      }
      // (A pending backoff is a successor's retry: when it fires it starts the slot's process.)
    } else if (slot.successor === p) {
      slot.successor = null
      slot.lastExit = info
      if (crashed && running) this.retrySuccessor(slot, p)
      // Its predecessor may have gone idle while it booted (armIdle left the slot alone then).
      const cur = slot.current
      if (cur !== null && cur.state === 'ready' && cur.inflight === 0) this.armIdle(cur)
    }
    // A slot with nothing running or due (its process gone while FAILED) is free for activate().
    if (slot.current === null && slot.successor === null && slot.backoff === null) slot.active = false
    this.notify()
  }

  private restartSlot (slot: Slot, p: SpawnedProcess, beforeReady: boolean): void {
    const now = this.ctx.clock.now()
    const decision = slot.policy.onCrash(now, beforeReady ? 0 : now - p.startedAt)
    if (decision.action === 'fail') {
      const cause = p.startError !== null ? ` (last: ${p.startError.message})` : ''
      this.fail(decision.reason + cause)
      return
    }
    this.scheduleStart(slot, p, decision.delay)
  }

  /**
   * A recycle's successor failed to start while its predecessor serves on: retried under the
   * slot's backoff and start limit like any failed start. At the limit the spawn goes FAILED but
   * keeps its ready processes in rotation: a routine recycle must not take a site down (see
   * docs/design/spawn.md, "Recycling").
   */
  private retrySuccessor (slot: Slot, p: SpawnedProcess): void {
    // Its predecessor, held at its limit for it, serves again (past the limit) meanwhile.
    slot.successorFailed = true
    if (slot.current !== null && this.benched.delete(slot.current)) this.notify()
    const decision = slot.policy.onCrash(this.ctx.clock.now(), 0)
    if (decision.action === 'fail') {
      const cause = p.startError !== null ? ` (last: ${p.startError.message})` : ''
      const of = slot.current !== null ? ` of ${slot.current.id}` : ''
      this.fail(`recycle${of} failed: ${decision.reason}${cause}`, true)
      return
    }
    this.scheduleStart(slot, p, decision.delay)
  }

  /** After `delay`: the slot's process if it has none, else its recycle's successor if still due. */
  private scheduleStart (slot: Slot, p: SpawnedProcess, delay: number): void {
    slot.restarts++
    slot.backoffAt = this.ctx.clock.now() + delay
    slot.backoff = this.ctx.clock.setTimeout(() => {
      slot.backoff = null
      if (!slot.active || this.closing || this.failed !== null) return
      if (slot.current === null) this.launch(slot)
      else if (slot.successor === null && this.dueForSuccessor(slot.current)) this.launch(slot, true)
      // Else its process is being stopped (health check) and not gone yet: its exit restarts it.
    }, delay)
    // Emitted once the backoff is recorded: a listener reading status() sees `backoff`, not `idle`
    // (a reload's wait took a spawn between a crash and its restart for settled).
    this.ctx.events.emit('restart', { spawn: this.name, slot: p.slot, delay, restarts: slot.restarts })
  }

  /**
   * FAILED stops the whole spawn (systemd: a unit over its start limit), until clear(). Also
   * the manager's, for a spawn added while running that its checks refuse. `keepReady` (a
   * recycle's successor over the start limit): nothing new starts until clear(), but the ready
   * processes serve on, each until it exits.
   */
  fail (reason: string, keepReady = false): void {
    if (this.closing || this.failed !== null) return
    this.failed = reason
    const kept = (p: SpawnedProcess | null): boolean => keepReady && p !== null && p.state === 'ready'
    for (const s of this.slots) {
      if (!kept(s.current)) s.active = false
      if (s.backoff !== null) this.ctx.clock.clearTimeout(s.backoff)
      s.backoff = null
    }
    for (const p of this.live) {
      if (kept(p) && this.slots[p.slot].current === p) continue
      // Retired processes finish their requests (requestDone stops them), as they would have.
      if (keepReady && p.state === 'draining' && p.inflight > 0) continue
      p.drain()
      void p.stop()
    }
    this.ctx.events.emit('failed', { spawn: this.name, reason })
    this.notify()
  }

  clear (): void {
    if (this.failed === null) return
    this.failed = null
    for (const s of this.slots) s.policy.reset()
    this.notify()
    // A recycle the start limit held up (its process kept serving) is tried again.
    for (const s of this.slots) if (s.current !== null && this.dueForSuccessor(s.current)) this.recycle(s.current)
    this.startUp()
  }

  /**
   * Requests after which a process's successor starts: a tenth of maxRequests ahead (at least
   * one), so that for any real limit the successor is up before it is needed.
   */
  private get prewarmAt (): number {
    const max = this.spec.maxRequests
    return Math.max(1, max - Math.max(1, Math.ceil(max / 10)))
  }

  private dueForSuccessor (p: SpawnedProcess): boolean {
    return this.spec.maxRequests > 0 && p.requests >= this.prewarmAt && p.state === 'ready'
  }

  /**
   * One more request for `p` (in rotation): near its limit its successor starts; at the limit it
   * hands over to a successor on standby, or, the successor still booting, leaves rotation (held)
   * until it is up. Only a successor that failed to start leaves it serving past the limit.
   */
  private countTowardsRecycle (p: SpawnedProcess): void {
    const slot = this.slots[p.slot]
    if (slot.current !== p) return
    if (p.requests >= this.prewarmAt) this.recycle(p)
    if (p.requests < this.spec.maxRequests) return
    const next = slot.successor
    if (next !== null && next.state === 'ready') { this.handOver(slot); return }
    if (slot.successorFailed || (next === null && slot.backoff === null)) return
    this.benched.add(p)
    this.notify()
  }

  /** Start `p`'s successor (make-before-break, PM2 reload); its readiness retires `p`. */
  private recycle (p: SpawnedProcess): void {
    const slot = this.slots[p.slot]
    if (slot.current !== p || slot.successor !== null || slot.backoff !== null) return
    if (!slot.active || this.closing || this.failed !== null) return
    this.launch(slot, true)
  }

  /** Out of rotation now, stopped once its in-flight requests end. */
  private retire (old: SpawnedProcess): void {
    this.health?.unwatch(old)
    this.clearIdle(old)
    // Already being stopped (health check): its exit finds the slot taken and restarts nothing.
    if (old.state !== 'ready') return
    old.drain()
    this.ctx.events.emit('recycle', { spawn: this.name, id: old.id, requests: old.requests })
    if (old.inflight === 0) void old.stop()
  }

  private armIdle (p: SpawnedProcess): void {
    if (this.spec.idleTimeout === 0 || p.inflight > 0) return
    this.clearIdle(p)
    this.idleTimers.set(p, this.ctx.clock.setTimeout(() => {
      this.idleTimers.delete(p)
      const slot = this.slots[p.slot]
      if (p.state !== 'ready' || p.inflight > 0 || slot.current !== p) return
      // minProcs counts processes that serve: a slot whose crashed process waits out its restart
      // backoff (or whose process is starting or being stopped) is active but has none ready, and
      // shrinking this one would leave nothing routable until that restart (up to maxDelay).
      const others = this.activeSlots(slot.addrIndex).filter((s) => s !== slot && s.current?.state === 'ready').length
      if (others < this.spec.minProcs) return
      // A recycle under way is no scale-down: a successor still booting is left to boot (stopping
      // it wastes its start; onReady arms this again if its predecessor is still idle then), and
      // one on standby takes the slot now, to be shrunk in its turn if it stays idle.
      const next = slot.successor
      if (next !== null) {
        if (next.state === 'ready') this.handOver(slot)
        return
      }
      slot.active = false
      slot.current = null
      // Idle while a recycle's failed successor waits out its backoff: its retry is not wanted now.
      if (slot.backoff !== null) this.ctx.clock.clearTimeout(slot.backoff)
      slot.backoff = null
      p.drain()
      void p.stop()
      this.notify()
    }, this.spec.idleTimeout))
  }

  private clearIdle (p: SpawnedProcess): void {
    const t = this.idleTimers.get(p)
    if (t !== undefined) this.ctx.clock.clearTimeout(t)
    this.idleTimers.delete(p)
  }

  private find (id: string): SpawnedProcess | undefined {
    for (const p of this.live) if (p.id === id) return p
    return undefined
  }

  private notify (): void {
    const next = [...this.live].filter((p) => p.state === 'ready' && !this.benched.has(p)).map((p) => ({ id: p.id, address: p.addressId }))
    this.ready = next
    this.changes.emit('change')
  }

  /** Graceful stop: out of rotation now, wait for in-flight (bounded by stopTimeout), then stop. */
  async close (): Promise<void> {
    this.closing = true
    for (const s of this.slots) {
      s.active = false
      if (s.backoff !== null) this.ctx.clock.clearTimeout(s.backoff)
      s.backoff = null
    }
    for (const p of this.idleTimers.keys()) this.clearIdle(p)
    for (const p of this.live) p.drain()
    this.notify()
    await this.health?.close()
    const deadline = this.ctx.clock.now() + this.spec.stopTimeout
    await Promise.all([...this.live].map(async (p) => {
      while (p.inflight > 0 && this.ctx.clock.now() < deadline && p.state === 'draining') {
        await new Promise<void>((resolve) => this.ctx.clock.setTimeout(resolve, 20))
      }
      await p.stop()
    }))
    await new Promise<void>((resolve) => {
      const check = (): void => { if (this.live.size === 0) { this.changes.off('change', check); resolve() } }
      this.changes.on('change', check)
      check()
    })
    this.closed = true
    this.notify()
  }

  /**
   * Process groups of its processes that may still have members (SpawnManager.groups()): each
   * process leads its own, whose id is its pid — surely its own until the leader is reaped, then
   * only while the group has a live member. Running health-check commands lead groups of their own.
   */
  groups (): number[] {
    const out: number[] = this.health?.groups() ?? []
    for (const p of this.live) if (p.pid !== null && (p.exit === null || liveGroupMembers(p.pid).length > 0)) out.push(p.pid)
    return out
  }

  /**
   * What status() shows for `p`: a ready process recycling keeps out of list() is `standby` (a
   * successor waiting for its predecessor's limit) or `held` (at its limit, its successor still
   * booting), never `ready`, so a count of ready processes is a count of routable ones.
   */
  private statusState (p: SpawnedProcess): ProcessStatusState {
    if (p.state !== 'ready' || !this.benched.has(p)) return p.state
    return this.slots[p.slot].successor === p ? 'standby' : 'held'
  }

  status (pipeChildren: number): SpawnStatus {
    const now = this.ctx.clock.now()
    // A crashed process is reaped before its restart is due: what the slot waits for is told here,
    // not by a process entry (there is none until the next one is started).
    const pendingRestarts: PendingRestart[] = this.slots.filter((s) => s.backoff !== null).map((s) => ({
      address: formatAddress(this.spec.addresses[s.addrIndex]),
      kind: s.current === null ? 'restart' : 'successor',
      restarts: s.restarts,
      lastExit: s.lastExit,
      at: s.backoffAt,
    }))
    pendingRestarts.sort((a, b) => a.at - b.at)
    return {
      name: this.name,
      state: this.state,
      reason: this.failed ?? (this.waitingFor !== null ? `waiting for ${this.waitingFor}` : null),
      processes: [...this.live].map((p) => {
        const slot = this.slots[p.slot]
        const stats = p.pid === null ? null : procStats(p.pid)
        return {
          id: p.id,
          pid: p.pid,
          state: this.statusState(p),
          address: p.addressId,
          requests: p.requests,
          inflight: p.inflight,
          uptime: now - p.startedAt,
          restarts: slot.restarts,
          lastExit: slot.lastExit,
          cpuMs: stats?.cpuMs ?? null,
          rssBytes: stats?.rssBytes ?? null,
        }
      }),
      pipeChildren,
      launcher: null,
      forkServer: null,
      droppedOutputBytes: this.ctx.output.dropped,
      maxProcs: this.spec.maxProcs * this.spec.addresses.length,
      maxRequests: this.spec.maxRequests,
      wanted: this.slots.filter((s) => s.active).length,
      restarts: this.slots.reduce((n, s) => n + s.restarts, 0),
      lastCrash: this.lastCrash,
      pendingRestarts,
    }
  }
}
