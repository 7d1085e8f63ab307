/**
 * A crash-looping backend on the status page, JSON and metrics while it waits out its restart
 * backoff, and once it is FAILED. The crashed process is gone from `processes` then (it was
 * reaped), so the spawn itself must say why: the state, the last crash (exit code or signal and
 * when), the restart count, when the next start is due, and the stderr tail. The backend is a
 * real one that cannot start: Python raising at import (ModuleNotFoundError, exit code 1).
 */
import t from 'tap'
import { once } from 'node:events'
import { guardLeaks } from '../helpers/leaks.js'
import type { SpawnEvents } from '../../src/spawn/types.js'
import { fetchText, scrape, snapshot, statusRig } from './harness.js'

const python = ['python3', '-c', 'import proxycore_no_such_module_xyz']

t.test('backoff: the state, last crash, restart count, next start and stderr tail are shown', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const rig = await statusRig(t, {
    spawns: {
      // Delays 1 s, then 2 s: the test samples the page during the second one.
      py: { binPath: python, socketName: '127.0.0.1:0', minProcs: 1, restart: { initialDelay: '1s', maxDelay: '30s', maxStarts: 10, window: '60s' }, stopTimeout: '2s' },
    },
    routes: [{ name: 'py', match: { prefix: '/py/' }, protocol: 'http', spawn: 'py' }],
  })
  const m = rig.proxy.spawns!
  // The second restart is scheduled once the second process crashed: 2 s of backoff from here.
  for (;;) {
    const [e] = await once(m, 'restart', { signal: AbortSignal.timeout(20_000) }) as SpawnEvents['restart']
    if (e.restarts >= 2) break
  }
  const before = Date.now()
  const s = await snapshot(rig)
  const sp = s.spawns.find((x) => x.name === 'py')!
  t.equal(sp.state, 'backoff', 'the spawn is in backoff')
  t.same(sp.processes, [], 'the crashed process was reaped: no process listed')
  t.equal(sp.restarts, 2, 'restart count of the spawn')
  t.ok(sp.lastCrash !== null && sp.lastCrash !== undefined, 'the last crash is shown')
  t.equal(sp.lastCrash?.code, 1, 'exit code 1 (Python: uncaught exception)')
  t.equal(sp.lastCrash?.signal, null)
  t.match(sp.lastCrash?.id, /^py#\d+$/)
  t.ok(typeof sp.lastCrash?.pid === 'number', 'the pid that crashed')
  const crashedAt = Date.parse(sp.lastCrash?.at ?? '')
  t.ok(crashedAt <= before && before - crashedAt < 10_000, `crash time ${sp.lastCrash?.at}`)
  t.ok(sp.nextRestartAt !== null, 'when the next start is due')
  const due = Date.parse(sp.nextRestartAt ?? '')
  t.ok(due > before - 100 && due - crashedAt >= 1900 && due - crashedAt < 4000, `next start ${sp.nextRestartAt}, 2 s after the crash ${sp.lastCrash?.at}`)
  t.equal(sp.pendingRestarts.length, 1, 'one slot waits for its restart')
  t.equal(sp.pendingRestarts[0].kind, 'restart')
  t.equal(sp.pendingRestarts[0].restarts, 2)
  t.equal(sp.pendingRestarts[0].lastExit?.code, 1)
  t.equal(sp.pendingRestarts[0].at, sp.nextRestartAt)
  t.ok(sp.pendingRestarts[0].inSeconds > 0 && sp.pendingRestarts[0].inSeconds <= 2, `due in ${sp.pendingRestarts[0].inSeconds} s`)
  t.match(sp.stderrTail.join('\n'), /ModuleNotFoundError: No module named 'proxycore_no_such_module_xyz'/, 'the traceback in the stderr tail')
  t.equal(sp.availPercent, 0, 'nothing can take requests')

  const html = (await fetchText(`${rig.url}/server-status`)).body
  t.match(html, /class="badge warn">BACKOFF</, 'BACKOFF badge')
  const crash = /<p class="crash">(.*?)<\/p>/.exec(html)?.[1] ?? ''
  t.match(crash, /exited with code 1 at .* · 2 restarts · next start in [0-9.]+ s/, `the page says how it crashed, how often, and when it is started again (${crash})`)
  t.match(html, /<tr class="pending"><td class="n">–<\/td><td><span class="badge warn">BACKOFF<\/span>/, 'and a BACKOFF row for the slot')
  t.match(html, /ModuleNotFoundError/, 'and shows the stderr tail')

  const mt = await scrape(rig)
  t.equal(mt.values.get('proxycore_spawn_state{spawn="py",state="backoff"}'), 1, 'metrics: state backoff')
  t.equal(mt.values.get('proxycore_spawn_restarts_total{spawn="py"}'), 2, 'metrics: restarts')
  t.ok(Date.now() - before < 1900, `sampled within the backoff (${Date.now() - before} ms)`)
})

t.test('FAILED: the last crash and the stderr tail stay on the page', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const rig = await statusRig(t, {
    spawns: {
      py: { binPath: python, socketName: '127.0.0.1:0', minProcs: 1, restart: { initialDelay: '50ms', maxDelay: '50ms', maxStarts: 1, window: '60s' }, stopTimeout: '2s' },
    },
    routes: [{ name: 'py', match: { prefix: '/py/' }, protocol: 'http', spawn: 'py' }],
  })
  const m = rig.proxy.spawns!
  if (m.status()[0].state !== 'failed') await once(m, 'failed', { signal: AbortSignal.timeout(20_000) })
  const s = await snapshot(rig)
  const sp = s.spawns.find((x) => x.name === 'py')!
  t.equal(sp.state, 'failed')
  t.match(sp.reason, /start-limit-hit/)
  t.same(sp.processes, [], 'no process left')
  t.equal(sp.restarts, 1, 'one restart before the limit')
  t.equal(sp.lastCrash?.code, 1, 'the last exit code is shown')
  t.ok(sp.lastCrash !== null && Number.isFinite(Date.parse(sp.lastCrash.at)), 'with its time')
  t.equal(sp.nextRestartAt, null, 'nothing is due: FAILED waits for an operator')
  t.same(sp.pendingRestarts, [])
  t.match(sp.stderrTail.join('\n'), /ModuleNotFoundError/, 'the stderr tail')
  const html = (await fetchText(`${rig.url}/server-status`)).body
  // (The page also ships its renderer's source for the live view: look at the rendered paragraph.)
  const crash = /<p class="crash">(.*?)<\/p>/.exec(html)?.[1] ?? ''
  t.match(crash, /exited with code 1 at <time datetime="[^"]+">/, 'the page shows the last exit code and when')
  t.match(crash, /1 restart(?!s)/, 'and the restart count')
  t.notMatch(crash, /next start/, 'and no next start')
  const mt = await scrape(rig)
  t.equal(mt.values.get('proxycore_spawn_state{spawn="py",state="failed"}'), 1)
})
