/**
 * File-level leak oracle built on test/helpers/leaks.ts. `guardLeaks(t)` asserts from `t.teardown`,
 * which tap 21 rejects ("assertion after automatic end"), so these files take a baseline when they
 * load and assert in a last subtest instead (tap runs a file's subtests in order).
 *
 *   const baseline = leakBaseline()          // top of the file, before any socket or process
 *   ...tests...
 *   t.test('no leaks', (t) => assertNoLeaks(t, baseline))   // last
 */
import type { Test } from 'tap'
import { childrenOf, openFds, waitFor, type ProcInfo } from '../helpers/leaks.js'


export interface LeakBaseline { readonly fds: Map<number, string> }

export function leakBaseline (): LeakBaseline {
  return { fds: openFds() }
}

export async function assertNoLeaks (t: Test, baseline: LeakBaseline, timeoutMs = 5000): Promise<void> {
  let extra: string[] = []
  const fdsOk = await waitFor(() => {
    extra = [...openFds()].filter(([fd, target]) => baseline.fds.get(fd) !== target).map(([fd, target]) => `${fd} -> ${target}`)
    return extra.length === 0
  }, timeoutMs)
  t.ok(fdsOk, 'no leaked fd', { leaked: extra })
  let kids: ProcInfo[] = []
  const kidsOk = await waitFor(() => { kids = childrenOf(); return kids.length === 0 }, timeoutMs)
  t.ok(kidsOk, 'no leaked child or zombie', { children: kids.map((k) => `${k.pid} ${k.comm} ${k.state}`) })
}
