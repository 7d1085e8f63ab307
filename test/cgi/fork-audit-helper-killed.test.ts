/**
 * Audit: the fork server killed (SIGKILL) while the proxy has not yet read the reports of the
 * programs it just started, with both helpers. The proxy learns a program's pid only from its S
 * report; a helper killed between its fork and that report left the program running for good,
 * reparented to init (a batch of 60 requests: 24-52 programs left, 5 runs out of 6). Each child
 * now has PR_SET_PDEATHSIG SIGKILL: no program outlives its helper.
 *
 * The event loop is held (a synchronous poll, bounded) from the frames' write to the kill, so no
 * report can be read before the helper dies.
 */
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { withHelperEnv } from './harness.js'
import { ForkServer, findForkServer } from '../../src/spawn/fork-server.js'
import { realClock } from '../../src/spawn/backoff.js'

/** Live processes whose environment has `mark`, and of those, the ones whose parent is `ppid`. */
function marked (mark: string, ppid?: number): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const [state, parent] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (state === 'Z' || (ppid !== undefined && Number(parent) !== ppid)) continue
      if (readFileSync(`/proc/${name}/environ`, 'utf8').split('\0').includes(mark)) out.push(Number(name))
    } catch {}
  }
  return out
}

const compiled = withHelperEnv(undefined, () => findForkServer())
const perl = withHelperEnv('perl', () => findForkServer())

for (const [kind, helper] of [['compiled', compiled], ['perl', perl]] as const) {
  const skip = helper?.kind === kind ? false : `no ${kind} fork server here`
  t.test(`${kind}: the helper killed before its reports were read leaves no program running`, { skip }, async (t) => {
    guardLeaks(t)
    const mark = `FORK_AUDIT=${process.pid}-${kind}`
    t.teardown(() => { for (const pid of marked(mark)) { try { process.kill(pid, 'SIGKILL') } catch {} } })
    const fs = new ForkServer({ helper: helper as NonNullable<typeof helper>, clock: realClock })
    t.teardown(() => fs.close())
    // Started and idle first: the batch below is written to a running helper.
    const first = fs.spawn({ file: '/bin/true', args: [], env: {}, cwd: '/' }, true)
    first.on('spawn', () => { first.stdout?.resume(); first.stderr?.resume() })
    await new Promise((resolve) => first.once('exit', resolve))
    const hp = fs.pid as number
    const children = []
    for (let i = 0; i < 60; i++) {
      // The mark is in its environment, which the exec keeps (no grandchild: the shell execs).
      const c = fs.spawn({ file: '/bin/sh', args: ['-c', 'exec sleep 120'], env: { PATH: '/usr/bin:/bin', FORK_AUDIT: mark.slice('FORK_AUDIT='.length) }, cwd: '/' }, true)
      c.on('error', () => {})
      children.push(c)
    }
    // The stream writes what queued behind its first write on the next ticks, before any I/O.
    const stdin = (fs as unknown as { helper: { proc: { stdin: { writableLength: number } } } }).helper.proc.stdin
    for (let i = 0; i < 100 && stdin.writableLength > 0; i++) await new Promise((resolve) => process.nextTick(resolve))
    t.equal(stdin.writableLength, 0, 'every frame written')
    // Held here, the loop reads no report: kill the helper once its first programs run.
    const deadline = Date.now() + 10_000
    let running = 0
    while ((running = marked(mark, hp).length) < 1 && Date.now() < deadline) { /* bounded poll */ }
    process.kill(hp, 'SIGKILL')
    t.ok(running >= 1, 'programs were running when the helper was killed')
    await Promise.all(children.map((c) => c.exited))
    const gone = await waitFor(() => marked(mark).length === 0, 10_000)
    t.ok(gone, `no program outlives the helper (left: ${marked(mark).length})`)
    // The next request starts a new helper.
    const next = fs.spawn({ file: '/bin/sh', args: ['-c', 'exit 9'], env: {}, cwd: '/' }, true)
    next.on('spawn', () => { next.stdout?.resume(); next.stderr?.resume() })
    const [code] = await new Promise<unknown[]>((resolve) => next.once('exit', (...a) => resolve(a)))
    t.equal(code, 9, 'the next request runs')
    t.not(fs.pid, hp, 'on a new helper')
  })
}
