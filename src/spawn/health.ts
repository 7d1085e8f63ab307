/**
 * Health checks for ready processes. A process that keeps its pid but stops answering (deadlock,
 * closed listener, full backlog) is only caught by probing it; after `failures` consecutive failed
 * probes the group restarts it through the normal crash path, so backoff and the start-rate
 * limit apply as to any crash.
 */
import type { Clock } from './types.js'
import type { ResolvedSpec } from './spec.js'
import { probeConnect } from './listen-socket.js'
import { execPlan, type LaunchPlan, type SpawnedProcess } from './process.js'

type Check = NonNullable<ResolvedSpec['healthCheck']>

/** Plans a command exactly as the spawn's backend is planned: identity, limits, chroot, clean env. */
export type CommandPlanner = (command: string[], extraEnv: Record<string, string>) => LaunchPlan

/**
 * One probe: connect to the socket, or run the command (exit 0 = healthy) with a hard timeout.
 * The command gets its own process group and a timeout SIGKILLs the whole group, so a hung
 * check's children (curl under sh) do not outlive it.
 */
export function probeHealth (check: Check, proc: SpawnedProcess, planCommand: CommandPlanner, running?: Set<number>): Promise<boolean> {
  if (check.type === 'connect') return probeConnect(proc.address, check.timeout)
  return new Promise((resolve) => {
    let plan: LaunchPlan
    // Through the Launcher path the backend took (systemd runs ExecStartPre= as User=), never as
    // the host's root.
    try { plan = planCommand(check.command, { SPAWN_ADDRESS: proc.addressId, SPAWN_PID: String(proc.pid) }) } catch { resolve(false); return }
    const child = execPlan(plan, 'ignore')
    const pgid = child.pid
    if (pgid !== undefined) running?.add(pgid)
    const timer = setTimeout(() => {
      try { process.kill(-(child.pid as number), 'SIGKILL') } catch { /* already gone */ }
    }, check.timeout)
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      if (pgid !== undefined) running?.delete(pgid)
      resolve(ok)
    }
    child.once('error', () => { done(false) })
    child.once('exit', (code) => { done(code === 0) })
  })
}

export class HealthMonitor {
  private readonly check: Check
  private readonly clock: Clock
  private readonly planCommand: CommandPlanner
  private readonly onUnhealthy: (p: SpawnedProcess) => void
  private readonly timers = new Map<SpawnedProcess, unknown>()
  private readonly probes = new Set<Promise<unknown>>()
  /** Process groups of the check commands running now (each leads its own). */
  private readonly running = new Set<number>()

  constructor (check: Check, clock: Clock, planCommand: CommandPlanner, onUnhealthy: (p: SpawnedProcess) => void) {
    this.check = check
    this.clock = clock
    this.planCommand = planCommand
    this.onUnhealthy = onUnhealthy
  }

  watch (p: SpawnedProcess): void {
    let failures = 0
    const schedule = (): void => {
      this.timers.set(p, this.clock.setTimeout(() => {
        const probe = probeHealth(this.check, p, this.planCommand, this.running)
        this.probes.add(probe)
        void probe.then((ok) => {
          this.probes.delete(probe)
          if (!this.timers.has(p) || p.state !== 'ready') return
          failures = ok ? 0 : failures + 1
          if (failures >= this.check.failures) {
            this.unwatch(p)
            this.onUnhealthy(p)
          } else {
            schedule()
          }
        })
      }, this.check.interval))
    }
    schedule()
  }

  unwatch (p: SpawnedProcess): void {
    const t = this.timers.get(p)
    if (t !== undefined) this.clock.clearTimeout(t)
    this.timers.delete(p)
  }

  /** Process groups of running check commands, for the second signal's kill list (SpawnGroup.groups()). */
  groups (): number[] {
    return [...this.running]
  }

  /**
   * Stop every timer and end running probes: a connect probe is bounded by its timeout, a check
   * command is killed with its group (a stop waits for nobody's check, however long its timeout).
   */
  async close (): Promise<void> {
    for (const p of [...this.timers.keys()]) this.unwatch(p)
    for (const g of this.running) { try { process.kill(-g, 'SIGKILL') } catch { /* already gone */ } }
    await Promise.all([...this.probes])
  }
}
