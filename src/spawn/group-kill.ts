/**
 * Stopping a whole process group. Signalling only the pid we spawned is not enough: fcgiwrap -c N
 * and php-cgi with PHP_FCGI_CHILDREN fork workers that survive their parent's SIGTERM
 * [VERIFIED, RELIABILITY.md §4.5]. Like supervisord stopasgroup/killasgroup and systemd
 * KillMode=control-group, every signal goes to `-pgid`, escalating killSignal → SIGTERM → SIGKILL
 * with `grace` ms between steps, until no live member is left.
 */
import { readdirSync, readFileSync } from 'node:fs'
import type { Clock } from './types.js'

/** Send `sig` to every member of group `pgid`; a vanished group is not an error. */
export function signalGroup (pgid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, sig)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Members of `pgid` that are not zombies. kill(-pgid, 0) also succeeds for zombies, and orphaned
 * zombies may never be reaped when PID 1 is not a real init; those hold nothing and are ignored.
 */
export function liveGroupMembers (pgid: number): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    let stat: string
    try { stat = readFileSync(`/proc/${name}/stat`, 'utf8') } catch { continue }
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    if (Number(rest[2]) === pgid && rest[0] !== 'Z') out.push(Number(name))
  }
  return out
}

function groupGone (pgid: number): boolean {
  return !signalGroup(pgid, 0) || liveGroupMembers(pgid).length === 0
}

/** The escalation ladder without repeats: [killSignal, SIGTERM, SIGKILL]. */
export function escalation (killSignal: NodeJS.Signals): NodeJS.Signals[] {
  return [...new Set<NodeJS.Signals>([killSignal, 'SIGTERM', 'SIGKILL'])]
}

export interface GroupStopOptions {
  readonly signals: NodeJS.Signals[]
  readonly grace: number
  readonly clock: Clock
  /** Resolves once the leader was reaped (Node's 'exit'); the group may outlive it. */
  readonly leaderExited: Promise<unknown>
  /** Called with each signal as it is sent (status, logs, tests). */
  readonly onSignal?: (sig: NodeJS.Signals) => void
}

const POLL_MS = 20
/** After SIGKILL nothing can hold out longer than the kernel needs to tear down; bound the wait. */
const AFTER_KILL_MS = 5000

/** Escalate until the leader is reaped and no live member of the group remains. */
export function stopGroup (pgid: number, opts: GroupStopOptions): Promise<void> {
  const { clock, signals, grace } = opts
  let leaderDone = false
  void opts.leaderExited.then(() => { leaderDone = true })
  return new Promise((resolve) => {
    let step = 0
    let stepAt = clock.now()
    const send = (): void => {
      const sig = signals[step]
      opts.onSignal?.(sig)
      signalGroup(pgid, sig)
      // systemd sends SIGCONT after the stop signal so a stopped (SIGSTOP) member can act on it.
      if (sig !== 'SIGKILL') signalGroup(pgid, 'SIGCONT')
      stepAt = clock.now()
    }
    const tick = (): void => {
      if (leaderDone && groupGone(pgid)) { resolve(); return }
      const waited = clock.now() - stepAt
      const last = step === signals.length - 1
      if (!last && waited >= grace) {
        step++
        send()
      } else if (last && waited >= AFTER_KILL_MS) {
        resolve()
        return
      }
      clock.setTimeout(tick, POLL_MS)
    }
    send()
    clock.setTimeout(tick, POLL_MS)
  })
}
