/**
 * restart / healthCheck fields of a programmatic SpawnSpec: a field given as undefined takes its
 * default (it used to override it: no start limit, NaN backoff delays), and a value the supervisor
 * cannot use is ERR_SPAWN_BAD_SPEC at add(), not a crash loop or a busy probe loop later.
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { manager, nextEvent } from './fixtures/manager.js'
import { resolveSpec, SPAWN_DEFAULTS } from '../../src/spawn/spec.js'

const base = { binPath: '/bin/true', socketName: '127.0.0.1:0' }

t.test('undefined restart and healthCheck fields take their defaults', async (t) => {
  const s = resolveSpec('x', { ...base, restart: { initialDelay: undefined, maxStarts: undefined, window: 5000 } })
  t.same(s.restart, { ...SPAWN_DEFAULTS.restart, window: 5000 })
  const h = resolveSpec('x', { ...base, healthCheck: { type: 'connect', interval: undefined, failures: 2 } })
  t.same({ interval: h.healthCheck?.interval, timeout: h.healthCheck?.timeout, failures: h.healthCheck?.failures }, { interval: 10_000, timeout: 2000, failures: 2 })
})

t.test('unusable numbers are ERR_SPAWN_BAD_SPEC naming the field', async (t) => {
  const bad: Array<[string, Record<string, unknown>]> = [
    ['restart.initialDelay', { restart: { initialDelay: -5 } }],
    ['restart.maxStarts', { restart: { maxStarts: Number.NaN } }],
    ['restart.maxDelay', { restart: { maxDelay: null } }],
    ['healthCheck.interval', { healthCheck: { type: 'connect', interval: 0 } }],
    ['healthCheck.timeout', { healthCheck: { type: 'connect', timeout: Number.POSITIVE_INFINITY } }],
    ['healthCheck.failures', { healthCheck: { type: 'connect', failures: 0 } }],
  ]
  for (const [field, extra] of bad) {
    t.throws(() => resolveSpec('x', { ...base, ...extra }), { code: 'ERR_SPAWN_BAD_SPEC', message: new RegExp(`spawns\\.x\\.${field.replace('.', '\\.')}:`) }, field)
  }
  t.doesNotThrow(() => resolveSpec('x', { ...base, restart: { maxStarts: 0 } }), 'maxStarts 0 (FAILED at the first crash) stays valid')
})

leakTest(t, 'a crash loop with restart.maxStarts given as undefined still ends in FAILED', async (t, defer) => {
  const m = manager(defer)
  m.add('loop', { binPath: ['/bin/sh', '-c', 'exit 3'], socketName: '127.0.0.1:0', restart: { initialDelay: 5, maxDelay: 20, maxStarts: undefined, window: 60_000 } })
  let restarts = 0
  m.on('restart', () => { restarts++ })
  const failed = nextEvent(m, 'failed', () => true, 10_000)
  await m.start()
  const e = await failed
  t.match(e.reason, /start-limit-hit/)
  t.equal(restarts, SPAWN_DEFAULTS.restart.maxStarts, 'the default limit applied')
})
