/**
 * A programmatic spawn's `environment` that exec cannot pass as given is ERR_SPAWN_BAD_SPEC at
 * add() (the config schema refuses it already): a name with `=` reached the child split at the
 * first `=` (`A=B: c` became A=`B=c`, silently), a NUL was a failed start on every try, a crash
 * loop into FAILED with Node's uncoded message. A value with `=` is fine and arrives intact.
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, nodeBackend } from './fixtures/manager.js'
import { get } from './fixtures/http.js'

const base = { binPath: nodeBackend(), socketName: '127.0.0.1:0', handoff: 'self' as const }

leakTest(t, 'a name with = or NUL, or an empty name, or a value with NUL: ERR_SPAWN_BAD_SPEC at add()', async (t, defer) => {
  const m = manager(defer)
  for (const [environment, why] of [
    [{ 'A=B': 'c' }, /"A=B" is not a variable name/],
    [{ 'A\0B': 'c' }, /is not a variable name/],
    [{ '': 'c' }, /"" is not a variable name/],
    [{ X: 'a\0b' }, /environment\.X: a value cannot contain NUL/],
  ] as const) {
    t.throws(() => m.add('bad', { ...base, environment }), { code: 'ERR_SPAWN_BAD_SPEC', message: why }, JSON.stringify(environment))
  }
  t.same(m.status(), [], 'nothing registered')
})

leakTest(t, 'a value with = reaches the child intact', async (t, defer) => {
  const m = manager(defer)
  m.add('ok', { ...base, environment: { A: 'B=c', EMPTY: '' } })
  await m.start()
  await ensure(m, 'ok')
  const env = JSON.parse((await get(m.source('ok').list()[0].address, '/env')).body) as Record<string, string>
  t.same({ A: env.A, EMPTY: env.EMPTY }, { A: 'B=c', EMPTY: '' })
})
