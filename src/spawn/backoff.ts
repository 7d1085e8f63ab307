/**
 * Restart policy that cannot spin (STYLE.md §5, RELIABILITY.md §4.8): exponential backoff doubling
 * from `initialDelay` to `maxDelay`, reset once a process stayed up `stableAfter`, and a start-rate
 * limit (systemd StartLimitBurst/IntervalSec) that ends in FAILED until an operator clears it.
 * An operator can turn that limit off (`window: 0`, systemd's StartLimitIntervalSec=0); only then
 * does a crashing program restart for ever, each after its delay.
 *
 * Only crash restarts and failed starts count against the limit: recycling (maxRequests) and
 * scale-up starts are the manager's own decisions and would otherwise trip FAILED under load.
 */
import type { RestartSpec } from './types.js'

export type RestartDecision =
  | { readonly action: 'restart', readonly delay: number }
  | { readonly action: 'fail', readonly reason: string }

export class RestartPolicy {
  private readonly spec: Required<RestartSpec>
  private nextDelay: number
  private starts: number[] = []

  constructor (spec: Required<RestartSpec>) {
    this.spec = spec
    this.nextDelay = spec.initialDelay
  }

  /**
   * A process of this slot ended unexpectedly (or never became ready) at `now` after `uptime` ms.
   * Returns how long to wait before the next start, or that the slot is FAILED.
   */
  onCrash (now: number, uptime: number): RestartDecision {
    if (uptime >= this.spec.stableAfter) this.nextDelay = this.spec.initialDelay
    this.starts = this.starts.filter((t) => now - t < this.spec.window)
    if (this.starts.length >= this.spec.maxStarts) {
      return { action: 'fail', reason: `start-limit-hit: ${this.starts.length} restarts within ${this.spec.window} ms` }
    }
    this.starts.push(now)
    const delay = this.nextDelay
    this.nextDelay = Math.min(this.spec.maxDelay, Math.max(1, this.nextDelay * 2))
    return { action: 'restart', delay }
  }

  /** Operator `clear()`: forget the history, as `systemctl reset-failed` does. */
  reset (): void {
    this.starts = []
    this.nextDelay = this.spec.initialDelay
  }
}

export const realClock = {
  now: (): number => Date.now(),
  setTimeout: (fn: () => void, ms: number): unknown => setTimeout(fn, ms),
  clearTimeout: (h: unknown): void => clearTimeout(h as NodeJS.Timeout),
}
