/**
 * How an adapter learns that the core aborted an exchange (the client went away, a timeout).
 *
 * The core's own exchanges offer `setAbortHandler`: one function, no AbortController and no
 * EventTarget listener per request. Any other `Exchange` (a framework's own) has only `signal`.
 * These three calls pick the cheap path when it is there, so an adapter writes neither branch.
 */
import type { Exchange } from './types.js'

type Abortable = Pick<Exchange, 'signal' | 'aborted' | 'setAbortHandler'>

/** Aborted already? Without creating the core exchange's signal. */
export function isAborted (ex: Abortable): boolean {
  return ex.aborted ?? ex.signal.aborted
}

/** Call `fn` once when the exchange is aborted. One watcher per exchange: the adapter's. */
export function watchAbort (ex: Abortable, fn: () => void): void {
  if (ex.setAbortHandler !== undefined) ex.setAbortHandler(fn)
  else ex.signal.addEventListener('abort', fn, { once: true })
}

/** Stop watching (the exchange is over on the adapter's side). */
export function unwatchAbort (ex: Abortable, fn: () => void): void {
  if (ex.setAbortHandler !== undefined) ex.setAbortHandler(null)
  else ex.signal.removeEventListener('abort', fn)
}
