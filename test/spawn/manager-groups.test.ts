/**
 * SpawnManager.groups(), the kill list of `proxycore serve`'s second SIGTERM: a running CGI child's
 * group (either launcher) and the fork server's helper are listed; a child reaped while something
 * it started still runs in its group stays listed until that is gone too, and not a moment longer
 * (its pid may then be anyone's); after close() nothing is. A running health-check command's group
 * is listed too.
 */
import t from 'tap'
import { once } from 'node:events'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, nodeBackend } from './fixtures/manager.js'
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

leakTest(t, 'groups() lists a running health-check command, until it ends', async (t, defer) => {
  const m = manager(defer)
  // A check that hangs well past the test: only its group's kill ends it before its timeout.
  m.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0', healthCheck: { type: 'command', command: ['/bin/sh', '-c', 'sleep 300 & wait'], interval: 20, timeout: 120_000, failures: 100 } })
  await m.start()
  await ensure(m, 'web')
  const backend = m.status()[0].processes[0].pid as number
  let check: number | undefined
  t.ok(await waitFor(() => {
    check = childrenOf().find((p) => p.comm === 'sh' && processGroup(p.pid).some((q) => q.comm === 'sleep'))?.pid
    return check !== undefined
  }), 'the check command runs, its sleep in its group')
  const listed = m.groups()
  t.ok(listed.includes(check as number), 'its group is listed (the second signal kills it)')
  t.ok(listed.includes(backend), 'with the backend\'s')
  process.kill(-(check as number), 'SIGKILL')
  t.ok(await waitFor(() => !m.groups().includes(check as number)), 'once it ended, it is not')
  let next: number | undefined
  t.ok(await waitFor(() => { next = m.groups().find((g) => g !== backend); return next !== undefined }), 'the next check runs')
  // close() ends it rather than waiting out its 120 s timeout.
  const closed = await Promise.race([m.close().then(() => true), new Promise<false>((resolve) => { const h = setTimeout(resolve, 30_000, false); defer(() => clearTimeout(h)) })])
  t.ok(closed, 'close() did not wait for the hung check')
  t.same(m.groups(), [], 'nothing is listed after close()')
})
