/**
 * manager.status() while a crashed process waits out its restart backoff: the process was reaped,
 * so the spawn reports the crash itself (lastCrash: signal or exit code, when, which process, or
 * why its start failed), its restart count, the pending restart (when it is due) and how many
 * processes it wants. Real programs: a shell that kills itself with SIGSEGV, and a binary that does
 * not exist (exec fails with ENOENT).
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { manager, nextEvent } from './fixtures/manager.js'

leakTest(t, 'a process killed by a signal: the signal, the time and the next start are reported', async (t, defer) => {
  const m = manager(defer)
  m.add('segv', { binPath: ['/bin/sh', '-c', 'echo "segv: boom" >&2; kill -SEGV $$'], socketName: '127.0.0.1:0', minProcs: 1, restart: { initialDelay: 20_000, maxDelay: 20_000, maxStarts: 5, window: 60_000 }, stopTimeout: 1000 })
  const restart = nextEvent(m, 'restart')
  const exit = nextEvent(m, 'exit')
  await m.start()
  const e = await exit
  const r = await restart
  const st = m.status()[0]
  t.equal(st.state, 'backoff')
  t.same(st.processes, [], 'the crashed process was reaped')
  t.equal(st.restarts, 1)
  t.equal(st.wanted, 1, 'the crashed process is still wanted')
  t.equal(st.lastCrash?.signal, 'SIGSEGV', 'the signal')
  t.equal(st.lastCrash?.code, null)
  t.equal(st.lastCrash?.pid, e.pid, 'the pid that crashed')
  t.equal(st.lastCrash?.error, null, 'it started; it crashed')
  t.equal(st.pendingRestarts?.length, 1)
  const p = st.pendingRestarts![0]
  t.equal(p.kind, 'restart')
  t.equal(p.address, '127.0.0.1:0', 'the configured address of the slot')
  t.equal(p.lastExit?.signal, 'SIGSEGV')
  t.ok(p.at - (st.lastCrash?.at ?? 0) >= r.delay && p.at - Date.now() > 15_000, 'due after the delay')
})

leakTest(t, 'a program that cannot be executed: the start error is reported with the crash', async (t, defer) => {
  const m = manager(defer)
  m.add('nope', { binPath: ['/nonexistent/proxycore-no-such-binary'], socketName: '127.0.0.1:0', minProcs: 1, restart: { initialDelay: 20_000, maxDelay: 20_000, maxStarts: 5, window: 60_000 } })
  const restart = nextEvent(m, 'restart')
  await m.start()
  await restart
  const st = m.status()[0]
  t.equal(st.state, 'backoff')
  t.match(st.lastCrash?.error, /proxycore-no-such-binary/, `the start error: ${st.lastCrash?.error}`)
  t.equal(st.lastCrash?.pid, null, 'it never ran')
})
