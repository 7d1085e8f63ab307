import t from 'tap'
import { RestartPolicy } from '../../src/spawn/backoff.js'

const spec = { initialDelay: 100, maxDelay: 400, stableAfter: 1000, maxStarts: 4, window: 10_000 }

t.test('delays double up to maxDelay; a stable run resets them (PM2 EXP_BACKOFF_RESET_TIMER)', async (t) => {
  const p = new RestartPolicy({ ...spec, maxStarts: 100 })
  const delays = [0, 1, 2, 3].map((i) => p.onCrash(i * 10, 5))
  t.same(delays.map((d) => d.action === 'restart' ? d.delay : -1), [100, 200, 400, 400])
  t.same(p.onCrash(100, 1000), { action: 'restart', delay: 100 }, 'uptime >= stableAfter resets')
})

t.test('start-rate limit: more than maxStarts within window fails, older starts age out', async (t) => {
  const p = new RestartPolicy(spec)
  for (let i = 0; i < 4; i++) t.equal(p.onCrash(i, 0).action, 'restart')
  const d = p.onCrash(5, 0)
  t.equal(d.action, 'fail')
  t.match(d.action === 'fail' ? d.reason : '', /^start-limit-hit: 4 restarts within 10000 ms/)
  t.equal(p.onCrash(20_000, 0).action, 'restart', 'window slid past the old starts')
  p.reset()
  t.same(p.onCrash(20_001, 0), { action: 'restart', delay: 100 }, 'reset() forgets the history')
})
