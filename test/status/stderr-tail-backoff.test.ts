/**
 * The stderr tail of a crash-looping program whose last line has no newline (a shell's printf, a
 * Node process.stderr.write before process.exit): each process's last line ends with its pipe, so
 * the next process's output is not glued onto it, and the FAILED spawn shows one line per run.
 */
import t from 'tap'
import { leakTest } from '../spawn/fixtures/guard.js'
import { manager, nextEvent } from '../spawn/fixtures/manager.js'
import { StderrTail } from '../../src/status/stderr-tail.js'
import { waitFor } from '../helpers/leaks.js'

leakTest(t, 'a last line without a newline ends with its process\'s stderr', async (t, defer) => {
  const m = manager(defer)
  const tail = new StderrTail()
  tail.attach(m)
  defer(() => tail.detach())
  // 0xC3 at the end: a character cut by the exit is shown as U+FFFD, as on the rest of the page.
  m.add('php', { binPath: ['/bin/sh', '-c', "printf 'PHP Fatal: cannot open php.ini caf\\303' >&2; exit 2"], socketName: '127.0.0.1:0', minProcs: 1, restart: { initialDelay: 20, maxDelay: 20, maxStarts: 2, window: 60_000 } })
  const failed = nextEvent(m, 'failed')
  await m.start()
  await failed
  // FAILED is reported at the last exit; its pipe may end a moment later.
  const want = Array(3).fill('PHP Fatal: cannot open php.ini caf\uFFFD')
  await waitFor(() => JSON.stringify(tail.lines('php')) === JSON.stringify(want), 5000)
  t.same(tail.lines('php'), want, 'one line per run')
})
