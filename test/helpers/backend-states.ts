/**
 * The backend:* / pool:* events the core publishes on diagnostics_channel
 * (`proxycore:backend:state`) while a test runs: passive health's disables and re-enables.
 */
import { channel } from 'node:diagnostics_channel'
import type { Test } from 'tap'

export interface StateEvent { kind: string, pool: string, backend: string, reason?: string }

/** Every state event published from now until the test ends. */
export function recordStates (t: Test): StateEvent[] {
  const seen: StateEvent[] = []
  const ch = channel('proxycore:backend:state')
  const fn = (m: unknown): void => { seen.push(m as StateEvent) }
  ch.subscribe(fn)
  t.teardown(() => { ch.unsubscribe(fn) })
  return seen
}
