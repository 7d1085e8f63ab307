/**
 * The wait for a routable backend, shared by a request (ProxyExchange), an upgrade
 * (UpgradeExchange) and a route's authorizer: a spawn may start on demand or be between two
 * processes (a recycle, a crash), and what arrives meanwhile waits for it instead of failing.
 *
 * The wait is bounded: `ensure()` gets a signal that aborts at the deadline or when the caller's
 * own signal aborts. A spawn whose start keeps timing out without ever going FAILED (a program
 * that never listens, under the default start limit) would otherwise hold the request as long as
 * the client waits: ensure() settles only on a ready process, FAILED or a shutdown.
 */
import { ProxyError } from './errors.js'
import type { Backend, BackendPool } from './pool.js'

/**
 * Until when a request waits for a spawn to become routable, from `from`: the route's headers
 * timeout, at least 1 s (a process's start is no backend's slowness); `timeouts.headers: 0` is no
 * limit, here too (it was 1 s: an on-demand spawn that starts in 2.5 s answered 503).
 */
export function spawnWaitDeadline (from: number, headersMs: number): number {
  return headersMs > 0 ? from + Math.max(headersMs, 1000) : Infinity
}

/**
 * How long a failed attempt's process may stay listed before it counts as alive (waitReplacement's
 * `grace`): a spawn lists a dead process's replacement within this; a master whose worker died,
 * or a backend that closed a connection, stays listed and is not replaced.
 */
export const RESTART_GRACE_MS = 1000

/** The longest delay node's setTimeout honours; a longer one fires after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * Resolve once `pool` has a backend, or `stop()` says the caller is done (client gone, exchange
 * ended). Past `deadline` (a `now()` time in ms; Infinity: no limit but the caller's signal, as
 * for a route with `timeouts.headers: 0`; node's setTimeout would fire an infinite or over-2^31 ms
 * delay after 1 ms, so none is set for Infinity and a longer one is clamped): ERR_SPAWN_NOT_READY
 * (503). The caller's `signal`
 * aborting ends the wait with ensure()'s own error, as before. One timer and one abort listener,
 * both gone when this settles, however it settles.
 */
export async function waitRoutable (pool: BackendPool, signal: AbortSignal, deadline: number, now: () => number, stop: () => boolean): Promise<void> {
  if (pool.backends.length === 0 && !stop()) {
    const ac = new AbortController()
    let late = false
    const onAbort = (): void => { ac.abort(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    if (signal.aborted) ac.abort(signal.reason)
    const timer = Number.isFinite(deadline) ? setTimeout(() => { late = true; ac.abort() }, Math.min(MAX_TIMER_MS, Math.max(0, deadline - now()))) : null
    timer?.unref()
    try {
      while (pool.backends.length === 0 && !stop()) {
        if (late || now() >= deadline) throw notReady(pool, null)
        try {
          await pool.source.ensure(ac.signal)
        } catch (err) {
          // The deadline, not the caller, aborted ensure(): the route's answer is "not ready in time".
          if (late && !signal.aborted) throw notReady(pool, err)
          throw err
        }
        // ensure() may resolve on a process that is already gone again: let the event loop run first.
        if (pool.backends.length === 0) await new Promise((resolve) => setImmediate(resolve))
      }
    } finally {
      if (timer !== null) clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
    }
  }
}

/**
 * After an attempt failed on a process that may be gone (exchange.ts, waitForRestart): resolve
 * true once `pool` has a usable backend not in `tried` — the process a spawn started in place of a
 * dead one is a new backend, even at the same address. False when none of `failed` left the pool
 * by `grace` (each is alive: nothing replaces it), when `deadline` passed, or when `stop()` says
 * the caller is done. An empty pool is waited for by waitRoutable (which starts the spawn and
 * throws ERR_SPAWN_NOT_READY at `deadline`); a listed one by the source's change events. No loop
 * without an event: each turn waits for a change, the caller's abort or a timer.
 */
export async function waitReplacement (pool: BackendPool, failed: readonly Backend[], tried: ReadonlySet<Backend>, signal: AbortSignal, grace: number, deadline: number, now: () => number, stop: () => boolean): Promise<boolean> {
  while (!stop()) {
    if (pool.hasUntried(tried)) return true
    // A backend leaves the pool ('draining') when its process leaves the spawn's list: it exited.
    const gone = failed.some((b) => b.state === 'draining')
    const t = now()
    if (t >= deadline || (!gone && t >= grace)) return false
    if (gone && pool.backends.length === 0) await waitRoutable(pool, signal, deadline, now, stop)
    else await nextChange(pool, signal, gone ? deadline : grace, now)
  }
  return false
}

/** The next change of `pool`'s source (the pool has synced before this hears of it), an abort, or `until`. */
function nextChange (pool: BackendPool, signal: AbortSignal, until: number, now: () => number): Promise<void> {
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | null = null
    let unsubscribe: (() => void) | null = null
    const done = (): void => {
      if (timer !== null) clearTimeout(timer)
      unsubscribe?.()
      signal.removeEventListener('abort', done)
      resolve()
    }
    if (signal.aborted) { resolve(); return }
    unsubscribe = pool.source.subscribe(done)
    if (Number.isFinite(until)) {
      timer = setTimeout(done, Math.min(MAX_TIMER_MS, Math.max(0, until - now())))
      timer.unref()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}

function notReady (pool: BackendPool, cause: unknown): ProxyError {
  return new ProxyError('ERR_SPAWN_NOT_READY', `no process of ${pool.name} became routable in time`, { phase: 'connect', cause: cause ?? undefined })
}
