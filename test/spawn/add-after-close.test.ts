/**
 * add() on a manager whose close() began: close() is idempotent (the same promise), so a spawn
 * added then would run with nothing left to stop it — its process outlived close(), an
 * unsupervised child and its pipes. It is refused instead: ERR_SPAWN_NOT_READY (shutting down).
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { manager, nodeBackend } from './fixtures/manager.js'

for (const when of ['after close() resolved', 'while close() runs'] as const) {
  leakTest(t, `add() ${when}: refused, nothing started, close() still stops everything`, async (t, defer) => {
    const m = manager(defer)
    m.add('a', { binPath: nodeBackend(), socketName: '127.0.0.1:0' })
    await m.start()
    const closing = m.close()
    if (when === 'after close() resolved') await closing
    t.throws(() => m.add('b', { binPath: nodeBackend(), socketName: '127.0.0.1:0' }), { code: 'ERR_SPAWN_NOT_READY', message: /closed/ })
    t.throws(() => m.add('c', { socketType: 'pipe' }), { code: 'ERR_SPAWN_NOT_READY' }, 'a pipe spawn too')
    await closing
    await m.close()
    t.same(m.status().map((s) => [s.name, s.state]), [['a', 'stopped']], 'not registered')
  })
}
