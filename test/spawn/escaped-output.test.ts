/**
 * A program that leaves its process group (setsid) keeps the backend's stdout/stderr open. The
 * manager cannot stop it (not its group), but must not keep the pipes, and with them fds and a
 * live event loop, for as long as that program runs.
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, backendScript } from './fixtures/manager.js'
import { alive, openFds, waitFor } from '../helpers/leaks.js'

leakTest(t, 'close(): stdout/stderr held by a setsid grandchild are released, output before that still logged', async (t, defer) => {
  const baseline = openFds().size
  const m = manager(defer)
  // The escaped sleep inherits stdout and stderr; it prints its pid, then the leader execs the backend.
  const script = `setsid sleep 300 & echo "escaped $!"; echo "to stderr" >&2; exec "${process.execPath}" "${backendScript}" serve`
  m.add('esc', { binPath: ['/bin/sh', '-c', script], socketName: '127.0.0.1:0', stopTimeout: 500 })
  let out = ''
  let err = ''
  m.on('stderr', (e) => { if (e.stream === 'stdout') out += e.chunk.toString(); else err += e.chunk.toString() })
  await m.start()
  await ensure(m, 'esc')
  t.ok(await waitFor(() => /escaped \d+/.test(out) && err.includes('to stderr'), 5000), 'output of the program captured')
  const escaped = Number(/escaped (\d+)/.exec(out)?.[1])
  defer(async () => {
    try { process.kill(escaped, 'SIGKILL') } catch { /* gone */ }
    await waitFor(() => !alive(escaped), 5000)
  })
  await m.close()
  t.ok(alive(escaped), 'the escaped program still runs (outside the group, not the manager\'s to kill)')
  t.ok(await waitFor(() => openFds().size <= baseline, 3000), `no pipe kept open for it (fds ${openFds().size}, before ${baseline})`)
})
