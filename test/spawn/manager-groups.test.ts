/**
 * SpawnManager.groups(), the kill list of `proxycore serve`'s second SIGTERM: a running CGI child's
 * group (either launcher) and the fork server's helper are listed; a child reaped while something
 * it started still runs in its group stays listed until that is gone too, and not a moment longer
 * (its pid may then be anyone's); after close() nothing is.
 */
import t from 'tap'
import { once } from 'node:events'
import { leakTest } from './fixtures/guard.js'
import { manager } from './fixtures/manager.js'
import { childrenOf, processGroup, waitFor } from '../helpers/leaks.js'
import type { PipeChild } from '../../src/spawn/fork-server.js'

// The leader waits on a sleep that ignores SIGTERM, so its group outlives a killed leader until
// the stop ladder's SIGKILL (stopTimeout away) or ours.
const ARGV = ['-c', 'trap "" TERM; sleep 300 & wait']

for (const launcher of ['direct', 'fork-server'] as const) {
  leakTest(t, `groups() of a pipe spawn (launcher: ${launcher})`, async (t, defer) => {
    const m = manager(defer)
    m.add('cgi', { socketType: 'pipe', binPath: '/bin/sh', launcher, stopTimeout: 60_000 })
    await m.start()
    t.same(m.groups(), [], 'nothing runs yet')
    const child: PipeChild = m.pipeStarter('cgi').launch({ argv: ARGV, env: {}, cwd: '/', stdin: 'null' })
    child.on('error', () => {})
    if (child.pid === undefined) await once(child, 'spawn')
    const pid = child.pid as number
    t.ok(await waitFor(() => processGroup(pid).some((p) => p.comm === 'sleep')), 'the child runs its sleep, in its group')
    const exited = once(child, 'exit')
    t.ok(m.groups().includes(pid), 'the running child\'s group is listed')
    const helper = childrenOf().find((p) => p.comm.startsWith('proxycore-fork') || p.comm === 'perl')
    if (launcher === 'fork-server') {
      t.ok(helper !== undefined && m.groups().includes(helper.pid), 'and the fork server\'s')
    } else {
      t.equal(helper, undefined, 'no fork server')
    }

    process.kill(pid, 'SIGKILL')
    await exited
    const sleep = processGroup(pid).find((p) => p.comm === 'sleep' && p.state !== 'Z')
    t.ok(sleep !== undefined, 'the leader is reaped, its sleep still runs')
    t.ok(m.groups().includes(pid), 'so its group is still listed')
    process.kill((sleep as { pid: number }).pid, 'SIGKILL')
    t.ok(await waitFor(() => !m.groups().includes(pid)), 'once the group is empty, it is not')
    t.ok(await waitFor(() => m.status()[0].pipeChildren === 0), 'and the child is forgotten')

    await m.close()
    t.same(m.groups(), [], 'after close(), nothing is listed')
  })
}
