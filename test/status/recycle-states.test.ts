/**
 * The status page, its JSON and the Prometheus gauges tell processes recycling keeps out of
 * rotation from ready ones: a predecessor held at maxRequests while its successor boots is `held`,
 * a successor up before its predecessor's limit is `standby`. Neither counts as ready, in the
 * spawn's `ready` count, the route's `available` or `proxycore_spawn_processes{kind="ready"}`.
 * Real spawned Node backends (createProxy({ spawns })), the first one listening at once, every
 * later one only once the test writes `go`.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import type { StatusSnapshot } from '../../src/status/index.js'
import { fetchText, scrape, snapshot, statusRig } from './harness.js'
import { GATED } from '../spawn/fixtures/gated.js'


t.test('held and standby processes: own states in JSON, HTML and metrics; not counted as ready', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-status-recycle-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'gated.mjs'), GATED)
  const rig = await statusRig(t, {
    spawns: {
      app: { binPath: [process.execPath, join(dir, 'gated.mjs'), dir], socketName: '127.0.0.1:0', handoff: 'self', minProcs: 1, maxProcs: 1, idleTimeout: 0, maxRequests: 3, startTimeout: '60s', stopTimeout: '2s' },
    },
    routes: [{ name: 'app', match: { prefix: '/app/' }, protocol: 'http', spawn: 'app' }],
  })
  let s: StatusSnapshot = await snapshot(rig)
  const app = () => s.spawns.find((x) => x.name === 'app')!
  const route = () => s.routes.find((r) => r.name === 'app')!
  t.ok(await waitFor(async () => { s = await snapshot(rig); return app().ready === 1 }, 15_000), 'app ready')
  const oldPid = app().processes[0].pid as number

  // Requests 1 and 2: the second starts the successor, which cannot listen yet.
  for (let i = 0; i < 2; i++) t.equal((await get(`${rig.url}/app/x`)).body.toString(), String(oldPid))
  t.ok(await waitFor(async () => { s = await snapshot(rig); return app().processes.length === 2 }, 15_000), 'the successor was started')
  // Request 3 (maxRequests): the old process leaves rotation, held until its successor is up.
  t.equal((await get(`${rig.url}/app/x`)).body.toString(), String(oldPid))
  s = await snapshot(rig)
  t.same(app().processes.map((p) => p.state), ['held', 'starting'], 'held, successor starting')
  t.ok(alive(oldPid), 'the held process is alive')
  t.same([app().alive, app().ready, app().idle, app().held, app().standby], [2, 0, 0, 1, 0], 'alive 2, ready 0, held 1')
  t.equal(route().available, 0, 'nothing routable for the route')
  t.equal(route().availPercent, 0)
  let m = await scrape(rig)
  t.equal(m.values.get('proxycore_spawn_processes{spawn="app",kind="ready"}'), 0, 'metrics: ready 0')
  t.equal(m.values.get('proxycore_spawn_processes{spawn="app",kind="held"}'), 1, 'metrics: held 1')
  t.equal(m.values.get('proxycore_spawn_processes{spawn="app",kind="standby"}'), 0, 'metrics: standby 0')
  let html = (await fetchText(`${rig.url}/server-status`)).body
  t.match(html, /class="badge warn">HELD</, 'HELD badge on the page')
  t.match(html, / · held <b>1<\/b>/, 'held count on the page')

  writeFileSync(join(dir, 'go'), '')
  t.ok(await waitFor(async () => { s = await snapshot(rig); return app().alive === 1 && app().ready === 1 }, 15_000), 'the successor took over, the old process is gone')
  t.notOk(alive(oldPid), 'old process gone')
  const newPid = app().processes[0].pid as number

  // Requests 1 and 2 of the new process: its successor starts and, `go` written, is up at once.
  for (let i = 0; i < 2; i++) t.equal((await get(`${rig.url}/app/x`)).body.toString(), String(newPid))
  t.ok(await waitFor(async () => { s = await snapshot(rig); return app().processes.some((p) => p.state === 'standby') }, 15_000), 'a successor on standby')
  const standby = app().processes.find((p) => p.state === 'standby')!
  t.ok(alive(standby.pid as number), 'the standby process is alive')
  t.same(app().processes.map((p) => [p.pid, p.state]), [[newPid, 'ready'], [standby.pid, 'standby']])
  t.same([app().alive, app().ready, app().idle, app().held, app().standby], [2, 1, 1, 0, 1], 'alive 2, ready 1, standby 1')
  t.equal(app().availPercent, 100, 'a spare on standby does not lower availability')
  t.same([route().available, route().capacity, route().availPercent], [1, 1, 100], 'route: one routable process of one')
  m = await scrape(rig)
  t.equal(m.values.get('proxycore_spawn_processes{spawn="app",kind="ready"}'), 1, 'metrics: ready 1')
  t.equal(m.values.get('proxycore_spawn_processes{spawn="app",kind="standby"}'), 1, 'metrics: standby 1')
  t.equal(m.values.get('proxycore_route_available_ratio{route="app"}'), 1)
  html = (await fetchText(`${rig.url}/server-status`)).body
  t.match(html, /class="badge info">STANDBY</, 'STANDBY badge on the page')
  t.match(html, / · standby <b>1<\/b>/, 'standby count on the page')
})
