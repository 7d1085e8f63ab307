/**
 * Health checks for ready processes. A process that keeps its pid but stops answering (deadlock,
 * closed listener, full backlog) is only caught by probing it; after `failures` consecutive failed
 * probes the group restarts it through the normal crash path, so backoff and the start-rate
 * limit apply as to any crash.
 */
import { spawn } from 'node:child_process'
import type { Clock } from './types.js'
import type { ResolvedSpec } from './spec.js'
import { probeConnect } from './listen-socket.js'
import type { SpawnedProcess } from './process.js'

type Check = NonNullable<ResolvedSpec['healthCheck']>

/** One probe: connect to the socket, or run the command (exit 0 = healthy) with a hard timeout. */
export function probeHealth (check: Check, proc: SpawnedProcess, env: Record<string, string>): Promise<boolean> {
  if (check.type === 'connect') return probeConnect(proc.address, check.timeout)
  return new Promise((resolve) => {
    const [file, ...args] = check.command
    const child = spawn(file, args, {
      stdio: 'ignore',
      env: { ...env, SPAWN_ADDRESS: proc.addressId, SPAWN_PID: String(proc.pid) },
      timeout: check.timeout,
      killSignal: 'SIGKILL',
    })
    child.once('error', () => resolve(false))
    child.once('exit', (code) => resolve(code === 0))
  })
}

export class HealthMonitor {
  private readonly check: Check
  private readonly clock: Clock
  private readonly env: Record<string, string>
  private readonly onUnhealthy: (p: SpawnedProcess) => void
  private readonly timers = new Map<SpawnedProcess, unknown>()
  private readonly probes = new Set<Promise<unknown>>()

  constructor (check: Check, clock: Clock, env: Record<string, string>, onUnhealthy: (p: SpawnedProcess) => void) {
    this.check = check
    this.clock = clock
    this.env = env
    this.onUnhealthy = onUnhealthy
  }

  watch (p: SpawnedProcess): void {
    let failures = 0
    const schedule = (): void => {
      this.timers.set(p, this.clock.setTimeout(() => {
        const probe = probeHealth(this.check, p, this.env)
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

  /** Stop every timer and let running probes finish (their sockets and children are released). */
  async close (): Promise<void> {
    for (const p of [...this.timers.keys()]) this.unwatch(p)
    await Promise.all([...this.probes])
  }
}
