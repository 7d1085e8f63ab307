/**
 * Audit R2-D: a program that crashes at once, many times (real /bin/sh, exit 1). Restarts stay
 * bounded (delays double to maxDelay, as documented; the host's CPU stays low), the spawn reaches
 * FAILED at the start limit, and a stable run (uptime >= stableAfter) resets the delay.
 */
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { manager, nextEvent, tempDir } from './fixtures/manager.js'

leakTest(t, '60 instant crashes: delays double to maxDelay, low host CPU, then FAILED', async (t, defer) => {
  const m = manager(defer)
  const maxStarts = 60
  m.add('crash', { binPath: ['/bin/sh', '-c', 'exit 1'], socketName: '127.0.0.1:0', restart: { initialDelay: 2, maxDelay: 32, maxStarts, window: 600_000 } })
  const delays: number[] = []
  m.on('restart', (e) => { delays.push(e.delay) })
  const failed = nextEvent(m, 'failed', () => true, 120_000)
  const cpu0 = process.cpuUsage()
  const t0 = Date.now()
  await m.start()
  const f = await failed
  const wall = Date.now() - t0
  const cpu = process.cpuUsage(cpu0)
  t.match(f.reason, /start-limit-hit/, `FAILED: ${f.reason}`)
  t.equal(delays.length, maxStarts, 'one restart per allowed start')
  t.same(delays.slice(0, 6), [2, 4, 8, 16, 32, 32], 'delays double from initialDelay and stop at maxDelay')
  t.ok(delays.every((d) => d <= 32), 'never above maxDelay')
  t.ok(wall >= delays.reduce((a, b) => a + b, 0), `the delays were waited (${wall} ms for ${delays.reduce((a, b) => a + b, 0)} ms of delays)`)
  // Host CPU per restart: a spin would burn the whole wall time.
  const ms = (cpu.user + cpu.system) / 1000
  t.ok(ms < wall * 0.9 + 2000, `host CPU ${Math.round(ms)} ms over ${wall} ms wall`)
  t.equal(m.status()[0].state, 'failed', 'status shows failed')
  t.equal(m.status()[0].processes.length, 0, 'nothing left running')
})

leakTest(t, 'a stable run resets the delay to initialDelay', async (t, defer) => {
  const dir = tempDir(defer)
  const count = join(dir, 'count')
  writeFileSync(count, '0')
  // Crashes at once 3 times (delays 5, 10, 20), then stays up 600 ms (> stableAfter 200) before crashing again.
  const script = `n=$(cat ${count}); echo $((n+1)) > ${count}; if [ "$n" = 3 ]; then sleep 0.6; fi; exit 1`
  const m = manager(defer)
  m.add('flap', { binPath: ['/bin/sh', '-c', script], socketName: '127.0.0.1:0', restart: { initialDelay: 5, maxDelay: 10_000, stableAfter: 200, maxStarts: 100, window: 600_000 } })
  const delays: number[] = []
  m.on('restart', (e) => { delays.push(e.delay) })
  const fifth = nextEvent(m, 'restart', () => delays.length >= 5, 30_000)
  await m.start()
  await fifth
  t.same(delays.slice(0, 5), [5, 10, 20, 5, 10], `delays ${JSON.stringify(delays)}: doubled, then reset after the stable run`)
  t.ok(Number(readFileSync(count, 'utf8')) >= 5, 'the program ran each time')
  await m.close()
})
