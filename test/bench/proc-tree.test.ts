/**
 * The bench's process-tree accounting (bench/lib/proc.mjs `tree`), on a real process tree: perl
 * forks one child that stays perl (a program between fork and exec) and one that execs sleep.
 * `exclude` drops backends by name; `preExec` also drops the child that still has its parent's
 * name, as the CGI scenario does for lighttpd's and the fork server's children.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { tree } from '../../bench/lib/proc.mjs'
import { guardLeaks, waitFor } from '../helpers/leaks.js'

guardLeaks(t)

t.test('exclude by name, and children between fork and exec', async (t) => {
  const script = 'my $k = fork; if (!$k) { sleep 60; exit 0 } my $s = fork; if (!$s) { exec "sleep", "60" } sleep 60'
  const p = spawn('perl', ['-e', script], { detached: true, stdio: 'ignore' })
  await once(p, 'spawn')
  const pid = p.pid as number
  t.teardown(async () => {
    try { process.kill(-pid, 'SIGKILL') } catch {}
    if (p.exitCode === null && p.signalCode === null) await once(p, 'exit')
  })
  const names = (exclude: RegExp | null, preExec: boolean): string[] => tree(pid, exclude, preExec).map((q) => q.comm).sort()
  t.ok(await waitFor(() => names(null, false).join() === 'perl,perl,sleep'), 'perl, its perl child and its sleep child')
  t.same(names(/^sleep$/, false), ['perl', 'perl'], 'exclude drops the backend by name')
  t.same(names(/^sleep$/, true), ['perl'], 'preExec also drops the child with its parent\'s name')
  t.same(names(null, true), ['perl', 'sleep'])
  t.same(names(/^perl$/, false), ['perl', 'sleep'], 'the root is never excluded')
  t.equal(tree(pid, /^sleep$/, true)[0].pid, pid)
})
