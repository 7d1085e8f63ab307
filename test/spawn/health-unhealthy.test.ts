/**
 * A process the health check gave up on leaves rotation when its stop begins, not when its leader
 * finally exits: the ladder can take stopTimeout (2 × with a killSignal other than SIGTERM) against
 * a program that ignores the signals.
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, nextEvent, nodeBackend } from './fixtures/manager.js'
import { waitFor } from '../helpers/leaks.js'

leakTest(t, 'unhealthy process: out of list() as soon as it is being stopped, replaced after it exits', async (t, defer) => {
  const m = manager(defer)
  m.add('h', {
    binPath: nodeBackend('ignore-term'),
    // self: ready once the program answers, so its SIGTERM handler is in place by then.
    socketName: '127.0.0.1:0',
    handoff: 'self',
    stopTimeout: 1500,
    healthCheck: { type: 'command', command: ['/bin/false'], interval: 100, timeout: 1000, failures: 1 },
    restart: { initialDelay: 10 },
  })
  await m.start()
  await ensure(m, 'h')
  const src = m.source('h')
  const [first] = src.list()
  const exited = nextEvent(m, 'exit', (e) => e.id === first.id)
  const state = (): string | undefined => m.status()[0].processes.find((p) => p.id === first.id)?.state
  t.ok(await waitFor(() => state() !== 'ready', 5000), 'health check failed the process')
  t.equal(state(), 'stopping', 'being stopped (it ignores SIGTERM: the ladder waits stopTimeout)')
  t.notOk(src.list().some((e) => e.id === first.id), 'not routable while it is stopped')
  const e = await exited
  t.equal(e.expected, false, 'an unhealthy exit counts as a crash')
  await ensure(m, 'h')
  t.notOk(src.list().some((x) => x.id === first.id), 'a replacement serves')
})
