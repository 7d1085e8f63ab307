/**
 * A pipe (CGI) spawn's status() while close() is still stopping its children: `stopping`, with
 * the children still counted, and `stopped` only once they are gone (it said `stopped` from the
 * moment close() was called, while a child that ignores SIGTERM ran on for stopTimeout).
 */
import t from 'tap'
import { once } from 'node:events'
import { leakTest } from './fixtures/guard.js'
import { manager } from './fixtures/manager.js'
import { processGroup, waitFor } from '../helpers/leaks.js'
import type { PipeChild } from '../../src/spawn/fork-server.js'

const ARGV = ['-c', 'trap "" TERM; sleep 300 & wait']

leakTest(t, 'a pipe spawn is stopping while close() stops its children, stopped after', async (t, defer) => {
  const m = manager(defer)
  m.add('cgi', { socketType: 'pipe', binPath: '/bin/sh', launcher: 'direct', stopTimeout: 2000 })
  await m.start()
  t.equal(m.status()[0].state, 'running')
  const child: PipeChild = m.pipeStarter('cgi').launch({ argv: ARGV, env: {}, cwd: '/', stdin: 'null' })
  child.on('error', () => {})
  if (child.pid === undefined) await once(child, 'spawn')
  const pid = child.pid as number
  t.ok(await waitFor(() => processGroup(pid).some((p) => p.comm === 'sleep'), 10_000), 'the child runs its sleep')
  const closed = m.close()
  const st = m.status()[0]
  t.ok(processGroup(pid).some((p) => p.state !== 'Z'), 'the child\'s group is still running')
  t.equal(st.pipeChildren, 1, 'one child still counted')
  t.equal(st.state, 'stopping', 'stopping, not stopped, while it runs')
  await closed
  t.same(processGroup(pid).filter((p) => p.state !== 'Z'), [], 'the group is gone')
  t.same([m.status()[0].state, m.status()[0].pipeChildren], ['stopped', 0], 'stopped once close() is done')
})
