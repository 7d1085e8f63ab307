/**
 * Per-request processes for `socketType: pipe` spawns (CGI, RFC 3875): the `ProcessStarter` shape
 * the core hands to the CGI adapter. Each child gets a clean environment, only fds 0-2, its own
 * process group, and is always stopped as a group: a CGI that backgrounds `sleep 300 &` would
 * otherwise outlive the request and hold its stdout pipe open (AC-12).
 */
import type { ChildProcess } from 'node:child_process'
import type { Clock } from './types.js'
import type { ResolvedSpec } from './spec.js'
import { escalation, stopGroup } from './group-kill.js'
import { execPlan, type LaunchPlan } from './process.js'

export type PipePlan = (argv: string[], env: Record<string, string>, cwd: string | undefined) => LaunchPlan

interface Tracked {
  readonly exited: Promise<void>
  stopping: Promise<void> | null
}

export class PipeStarter {
  private readonly spec: ResolvedSpec
  private readonly clock: Clock
  private readonly plan: PipePlan
  private readonly children = new Map<ChildProcess, Tracked>()
  private closed = false

  private readonly checkScript: (script: string) => void

  constructor (spec: ResolvedSpec, clock: Clock, plan: PipePlan, checkScript: (script: string) => void = () => {}) {
    this.spec = spec
    this.clock = clock
    this.plan = plan
    this.checkScript = checkScript
  }

  /** Children alive now (status page). */
  get size (): number { return this.children.size }

  /**
   * Start `[...binPath, ...req.argv]` (binPath is the optional interpreter, e.g. `perl -wT`).
   * Exec errors arrive as the child's 'error' event, as with any ChildProcess.
   */
  start (req: { argv: string[], env: Record<string, string>, cwd?: string }): ChildProcess {
    if (this.closed) throw Object.assign(new Error(`spawn ${this.spec.name} is closed`), { code: 'ERR_SPAWN_NOT_READY' })
    // The script the URL resolved to passes the suEXEC checks of the spawn's user, every time.
    if (req.argv.length > 0) this.checkScript(req.argv[0])
    const argv = [...this.spec.argv, ...req.argv]
    const plan = this.plan(argv, req.env, req.cwd)
    const child = execPlan(plan, ['pipe', 'pipe', 'pipe'])
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve())
      child.once('error', () => { if (child.pid === undefined) resolve() })
    })
    const tracked: Tracked = { exited, stopping: null }
    this.children.set(child, tracked)
    void exited.then(() => {
      // Whatever it left in its group goes with it.
      const done = child.pid === undefined ? Promise.resolve() : this.stopGroup(child, tracked)
      void done.then(() => this.children.delete(child))
    })
    return child
  }

  private stopGroup (child: ChildProcess, t: Tracked): Promise<void> {
    if (t.stopping === null) {
      t.stopping = stopGroup(child.pid as number, {
        signals: escalation(this.spec.killSignal),
        grace: this.spec.stopTimeout,
        clock: this.clock,
        leaderExited: t.exited,
      })
    }
    return t.stopping
  }

  /** Kill the whole process group: killSignal, SIGTERM, then SIGKILL after stopTimeout each. */
  kill (child: ChildProcess): void {
    const t = this.children.get(child)
    if (t === undefined || child.pid === undefined) return
    void this.stopGroup(child, t)
  }

  /** Kill every child still running and wait until all are reaped. */
  async close (): Promise<void> {
    this.closed = true
    await Promise.all([...this.children].map(async ([child, t]) => {
      if (child.pid !== undefined) await this.stopGroup(child, t)
      await t.exited
    }))
  }
}
