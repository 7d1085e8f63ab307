/**
 * Per-request processes for `socketType: pipe` spawns (CGI, RFC 3875): the `ProcessStarter` shape
 * the core hands to the CGI adapter. Each child gets a clean environment, only fds 0-2, its own
 * process group, and is always stopped as a group: a CGI that backgrounds `sleep 300 &` would
 * otherwise outlive the request and hold its stdout pipe open (AC-12).
 *
 * Two ways to start one (`spawns.<name>.launcher`): `launch()` goes through the fork server
 * (fork-server.ts) when the spawn uses it — the proxy's own process never forks — and `start()` is
 * Node's child_process.spawn (the `ProcessStarter` contract: a ChildProcess, synchronously).
 */
import type { ChildProcess } from 'node:child_process'
import type { Clock } from './types.js'
import type { ResolvedSpec } from './spec.js'
import { escalation, liveGroupMembers, stopGroup } from './group-kill.js'
import { execPlan, type LaunchPlan } from './process.js'
import { ForkChild, ForkServer, findForkServer, type PipeChild } from './fork-server.js'
import { LiveSet, SLOT } from '../live-set.js'

/** `nativeUmask`: the plan is for the fork server, which sets the umask without a wrapper shell. */
export type PipePlan = (argv: string[], env: Record<string, string>, cwd: string | undefined, nativeUmask: boolean) => LaunchPlan

/** `stdin: 'null'`: no request body, the program reads /dev/null (no stdin pipe to set up). */
export interface PipeRequest { argv: string[], env: Record<string, string>, cwd?: string, stdin?: 'pipe' | 'null' }

interface Tracked {
  readonly child: PipeChild
  [SLOT]: number
  readonly exited: Promise<void>
  stopping: Promise<void> | null
  /** kill() came before the fork server reported the exec (S): stop the group once it does. */
  killPending: boolean
  /** `exited` resolved: the pid may be anyone's once nothing is left in its group (see groups()). */
  reaped: boolean
}

export class PipeStarter {
  private readonly spec: ResolvedSpec
  private readonly clock: Clock
  private readonly plan: PipePlan
  /** Not a Map: one entry per request (see src/live-set.ts); found by a scan on kill(), which is rare. */
  private readonly children = new LiveSet<Tracked>()
  private closed = false
  private readonly checkScript: (script: string) => void
  /** null: every child is started directly. */
  private readonly forkServer: ForkServer | null
  /** This starter made the fork server itself (no manager gave one) and closes it. */
  private readonly ownsForkServer: boolean

  /**
   * `forkServer`: the manager's shared one, or null for direct starts. Left out, the starter
   * follows `spec.launcher` with a fork server of its own.
   */
  constructor (spec: ResolvedSpec, clock: Clock, plan: PipePlan, checkScript: (script: string) => void = () => {}, forkServer?: ForkServer | null) {
    this.spec = spec
    this.clock = clock
    this.plan = plan
    this.checkScript = checkScript
    if (forkServer === undefined) {
      const helper = spec.launcher === 'direct' ? null : findForkServer()
      this.forkServer = helper === null ? null : new ForkServer({ helper, clock })
      this.ownsForkServer = this.forkServer !== null
    } else {
      this.forkServer = forkServer
      this.ownsForkServer = false
    }
  }

  /** Children alive now (status page). */
  get size (): number { return this.children.size }

  /** How this spawn starts its children. */
  get launcher (): 'fork-server' | 'direct' { return this.forkServer === null ? 'direct' : 'fork-server' }

  /** Which fork server starts them: the compiled helper or the Perl one; null when direct. */
  get forkServerKind (): 'compiled' | 'perl' | null { return this.forkServer?.kind ?? null }

  /**
   * Start `[...binPath, ...req.argv]` (binPath is the optional interpreter, e.g. `perl -wT`) the
   * spawn's way. The streams are to be read from 'spawn' on; exec errors arrive as 'error'.
   */
  launch (req: PipeRequest): PipeChild {
    if (this.forkServer === null) return this.start(req)
    const argv = this.prepare(req)
    const child = this.forkServer.spawn(this.plan(argv, req.env, req.cwd, true), req.stdin === 'null')
    // Exec'd (S), not necessarily 'spawn'ed: one whose stdio was lost runs all the same. After the
    // exit, the group is stopped only if the helper saw something of it left.
    this.track(child, child.exited, () => child.execOk && child.groupLeft)
    return child
  }

  /**
   * Start directly with Node's spawn(), synchronously (the `ProcessStarter` contract). Exec errors
   * arrive as the child's 'error' event, as with any ChildProcess.
   */
  start (req: PipeRequest): ChildProcess {
    const argv = this.prepare(req)
    const child = execPlan(this.plan(argv, req.env, req.cwd, false), [req.stdin === 'null' ? 'ignore' : 'pipe', 'pipe', 'pipe'])
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve())
      child.once('error', () => { if (child.pid === undefined) resolve() })
    })
    this.track(child, exited, () => child.pid !== undefined)
    return child
  }

  private prepare (req: PipeRequest): string[] {
    if (this.closed) throw Object.assign(new Error(`spawn ${this.spec.name} is closed`), { code: 'ERR_SPAWN_NOT_READY' })
    // The script the URL resolved to passes the suEXEC checks of the spawn's user, every time.
    if (req.argv.length > 0) this.checkScript(req.argv[0])
    return [...this.spec.argv, ...req.argv]
  }

  /** `ran`: the program was exec'd (it has a group of its own to stop). */
  private track (child: PipeChild, exited: Promise<void>, ran: () => boolean): void {
    const tracked: Tracked = { child, exited, stopping: null, killPending: false, reaped: false, [SLOT]: -1 }
    this.children.add(tracked)
    void exited.then(() => {
      tracked.reaped = true
      // Whatever it left in its group goes with it.
      const done = ran() ? this.stopGroup(child, tracked) : Promise.resolve()
      void done.then(() => this.children.delete(tracked))
    })
  }

  private stopGroup (child: PipeChild, t: Tracked): Promise<void> {
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

  /**
   * Process groups of its children that may still have members, for a last-resort SIGKILL (a
   * second SIGTERM): each child leads its own group, whose id is the child's pid. That id is
   * surely the child's only until the child is reaped (a fork server's child: until its exit
   * report, which the helper writes right after reaping it); after that (its group being stopped,
   * something it backgrounded still there) only while the group has a live member, which /proc
   * tells. A child without a pid was not exec'd (or not reported yet: its fork server lists it).
   * With a fork server of its own, that one's groups too.
   */
  groups (): number[] {
    const out: number[] = []
    for (const t of this.children.view()) {
      const pid = t.child.pid
      if (pid !== undefined && (!t.reaped || liveGroupMembers(pid).length > 0)) out.push(pid)
    }
    if (this.ownsForkServer) out.push(...(this.forkServer?.groups() ?? []))
    return out
  }

  /** Kill the whole process group: killSignal, SIGTERM, then SIGKILL after stopTimeout each. */
  kill (child: PipeChild): void {
    const t = this.children.view().find((x) => x.child === child)
    if (t === undefined) return
    if (child instanceof ForkChild && !child.execOk) {
      // Not reported exec'd yet: its pid comes with that report, and before its setsid() the child
      // is in the helper's group, so -pid means nothing yet. Stopped as soon as S comes — not at
      // 'spawn', which never comes when one of its stdio connections was lost.
      if (!t.killPending) {
        t.killPending = true
        child.once('exec', () => { void this.stopGroup(child, t) })
      }
      return
    }
    if (child.pid === undefined) return
    void this.stopGroup(child, t)
  }

  /** Kill every child still running and wait until all are reaped (then the own fork server). */
  async close (): Promise<void> {
    this.closed = true
    await Promise.all(this.children.values().map(async (t) => {
      this.kill(t.child)
      await t.exited
      if (t.stopping !== null) await t.stopping
    }))
    if (this.ownsForkServer) await this.forkServer?.close()
  }
}
