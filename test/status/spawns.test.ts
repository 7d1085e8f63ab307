/**
 * Status of real spawned processes (createProxy({ spawns })): PIDs that exist in /proc, the uid/gid
 * they run as, requests that move, a SIGKILLed process replaced with counters that never go down,
 * a spawn that cannot start shown as FAILED with its reason and stderr tail, and no secret from a
 * spawn's environment anywhere (RELIABILITY K, AC-97).
 */
import t from 'tap'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { findForkServer } from '../../src/spawn/fork-server.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import type { StatusSnapshot } from '../../src/status/index.js'
import { appScript, decreasedCounters, fetchText, liveClient, scrape, snapshot, statusRig } from './harness.js'

const node = process.execPath

t.test('spawned processes: pids, identity, requests, a crash, FAILED with stderr, no secrets', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const rig = await statusRig(t, {
    spawns: {
      app: { binPath: [node, appScript], socketName: '127.0.0.1:0', minProcs: 2, maxProcs: 2, idleTimeout: 0, maxRequests: 1000, environment: { DB_PASSWORD: 'hunter2' }, stopTimeout: '2s' },
      broken: { binPath: [node, appScript, 'fail'], socketName: '127.0.0.1:0', restart: { initialDelay: '100ms', maxDelay: '200ms', maxStarts: 2, window: '30s' }, environment: { DB_PASSWORD: 'hunter2' } },
    },
    routes: [
      { name: 'app', match: { prefix: '/app/' }, protocol: 'http', spawn: 'app' },
      { name: 'broken', match: { prefix: '/broken/' }, protocol: 'http', spawn: 'broken' },
    ],
  })
  let s: StatusSnapshot = await snapshot(rig)
  const find = (name: string) => s.spawns.find((x) => x.name === name)
  t.ok(await waitFor(async () => { s = await snapshot(rig); return find('app')?.ready === 2 && find('broken')?.failed === true }, 15_000), 'app ready x2, broken FAILED')

  const pids = new Set<string>()
  for (let i = 0; i < 20; i++) {
    const r = await get(`${rig.url}/app/x`)
    t.equal(r.status, 200)
    pids.add(r.body.toString())
  }
  s = await snapshot(rig)
  const app = find('app')!
  t.same([app.state, app.failed, app.alive, app.ready, app.idle], ['running', false, 2, 2, 2])
  t.same(app.processes.map((p) => String(p.pid)).sort(), [...pids].sort(), 'the pids that served are the pids shown')
  for (const p of app.processes) {
    t.ok(p.pid !== null && existsSync(`/proc/${p.pid}`), `pid ${p.pid} exists in /proc`)
    t.equal(p.state, 'ready')
    t.match(p.address, /^127\.0\.0\.1:[1-9]\d*$/)
    t.equal(p.uid, process.getuid?.(), 'uid from /proc')
    t.equal(p.gid, process.getgid?.(), 'gid from /proc')
    t.ok(p.cpuSeconds !== null && p.cpuSeconds >= 0)
    t.ok(p.rssBytes !== null && p.rssBytes > 1024 * 1024, 'rss from /proc')
    t.ok(p.uptimeSeconds >= 0)
  }
  t.equal(app.processes.reduce((n, p) => n + p.requests, 0), 20, 'requests served add up')
  t.equal(app.max, 2, 'max: maxProcs over its addresses, as configured')
  t.same(app.processes.map((p) => p.maxRequests), [1000, 1000], 'the recycle limit of each process')
  t.match(await fetchText(`${rig.url}/metrics`).then((r) => r.body), /proxycore_spawn_processes\{spawn="app",kind="max"\} 2\n/, 'and the max series')
  const appRoute = s.routes.find((r) => r.name === 'app')!
  t.equal(appRoute.spawn, 'app', 'route linked to its spawn')
  t.equal(appRoute.requests, 20)
  t.equal(appRoute.available, 2)
  t.equal(appRoute.availPercent, 100)

  const broken = find('broken')!
  t.equal(broken.state, 'failed')
  t.ok(broken.reason !== null && broken.reason.length > 0, `reason given: ${broken.reason}`)
  t.equal(broken.alive, 0)
  t.match(broken.stderrTail.join('\n'), /cannot connect to database <db\.internal>/, 'stderr tail kept')
  t.equal(s.routes.find((r) => r.name === 'broken')?.availPercent, 0, 'no capacity on a FAILED spawn')

  const html = await fetchText(`${rig.url}/server-status`)
  t.match(html.body, /<section class="spawn failed">/, 'the FAILED spawn is marked')
  t.match(html.body, /class="badge bad">FAILED</)
  t.match(html.body, /&#60;db\.internal&#62;/, 'stderr escaped')
  t.notMatch(html.body, /<db\.internal>/)
  for (const pid of pids) t.match(html.body, new RegExp(`<code>${pid}</code>`), `pid ${pid} on the page`)

  const m1 = await scrape(rig)
  t.equal(m1.values.get('proxycore_spawn_state{spawn="broken",state="failed"}'), 1)
  t.equal(m1.values.get('proxycore_spawn_state{spawn="app",state="running"}'), 1)
  t.equal(m1.values.get('proxycore_spawn_processes{spawn="app",kind="ready"}'), 2)
  for (const p of app.processes) {
    t.equal(m1.values.get(`proxycore_process_requests_total{spawn="app",id="${p.id}",pid="${p.pid}"}`), p.requests)
    t.ok((m1.values.get(`proxycore_process_resident_memory_bytes{spawn="app",id="${p.id}",pid="${p.pid}"}`) ?? 0) > 0)
  }

  // Fault: SIGKILL one process. The supervisor replaces it; no counter goes down.
  const victim = app.processes[0]
  process.kill(victim.pid!, 'SIGKILL')
  t.ok(await waitFor(async () => {
    s = await snapshot(rig)
    const a = find('app')!
    return a.ready === 2 && !a.processes.some((p) => p.pid === victim.pid)
  }, 15_000), 'killed process replaced')
  for (let i = 0; i < 10; i++) t.equal((await get(`${rig.url}/app/y`)).status, 200)
  s = await snapshot(rig)
  const replaced = find('app')!.processes.find((p) => p.restarts > 0)
  t.ok(replaced, 'restart counted on the slot')
  t.equal(replaced?.lastExit?.signal, 'SIGKILL', 'last exit: SIGKILL')
  t.match(replaced?.lastExit?.at ?? '', /^\d{4}-\d\d-\d\dT/)
  const m2 = await scrape(rig)
  t.same(decreasedCounters(m1, m2), [], 'no counter went down across the crash')
  t.equal(m2.values.get('proxycore_route_requests_total{route="app"}'), 30)
  t.ok((m2.values.get('proxycore_spawn_exits_total{spawn="app",expected="false"}') ?? 0) >= 1, 'crash exit counted')
  t.ok((m2.values.get('proxycore_spawn_restarts_total{spawn="app"}') ?? 0) >= 1, 'restart counted')

  // AC-97: the spawn's environment never leaks (JSON, HTML, metrics, live view).
  const live = await liveClient(`ws://127.0.0.1:${rig.port}/server-status/live`)
  const pushed = JSON.stringify(await live.next())
  await live.close()
  const json = await fetchText(`${rig.url}/server-status?format=json`)
  for (const [what, text] of [['json', json.body], ['html', (await fetchText(`${rig.url}/server-status`)).body], ['metrics', m2.text], ['live', pushed]]) {
    t.notMatch(text, /hunter2|DB_PASSWORD/, `${what}: no secret`)
  }
})

t.test('pipe spawns show how their CGI programs start: which fork server, or Node\'s spawn()', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-status-cgi-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'hi.sh'), '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nhi"\n', { mode: 0o755 })
  const rig = await statusRig(t, {
    spawns: {
      cgi: { socketType: 'pipe' },
      direct: { socketType: 'pipe', launcher: 'direct' },
      app: { binPath: [node, appScript], socketName: '127.0.0.1:0', minProcs: 1, maxProcs: 1, stopTimeout: '2s' },
    },
    routes: [
      { match: { prefix: '/cgi/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir, stripPrefix: true },
      { match: { prefix: '/direct/' }, protocol: 'cgi', spawn: 'direct', docroot: dir, stripPrefix: true },
      { match: { prefix: '/app/' }, protocol: 'http', spawn: 'app' },
    ],
  })
  for (const p of ['/cgi/hi.sh', '/direct/hi.sh', '/app/x']) t.equal((await get(`${rig.url}${p}`)).status, 200, p)
  // A CGI response ends when the script closes its stdout; its exit is reported a moment later.
  t.ok(await waitFor(async () => (await snapshot(rig)).spawns.every((sp) => sp.pipeChildren === 0)), 'the scripts have exited')
  const expected = findForkServer()?.kind ?? null
  const s = await snapshot(rig)
  const row = (name: string) => { const x = s.spawns.find((sp) => sp.name === name); return [x?.launcher, x?.forkServer] }
  t.same(row('cgi'), expected === null ? ['direct', null] : ['fork-server', expected], `the default: the ${expected ?? 'no'} fork server`)
  t.same(row('direct'), ['direct', null], 'launcher: direct')
  t.same(row('app'), [null, null], 'a socket spawn: neither')
  const html = (await fetchText(`${rig.url}/server-status`)).body
  if (expected !== null) t.match(html, `started by <b>${expected} fork server</b>`, 'on the page')
  t.match(html, 'CGI children <b>0</b> · started by <b>Node\'s spawn()</b>', 'the direct one too')
  t.same(s.spawns.map((sp) => [sp.name, sp.availPercent]), [['cgi', null], ['direct', null], ['app', 100]], 'availability: only where processes are kept')
  const info = [...(await scrape(rig)).values].filter(([k]) => k.startsWith('proxycore_spawn_launcher_info{')).map(([k, v]) => `${k} ${v}`).sort()
  t.same(info, [
    expected === null ? 'proxycore_spawn_launcher_info{spawn="cgi",launcher="direct",fork_server="none"} 1' : `proxycore_spawn_launcher_info{spawn="cgi",launcher="fork-server",fork_server="${expected}"} 1`,
    'proxycore_spawn_launcher_info{spawn="direct",launcher="direct",fork_server="none"} 1',
  ], 'metrics: one info series per pipe spawn, none for the socket spawn')
})
