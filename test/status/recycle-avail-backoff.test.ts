/**
 * Availability while a healthy spawn recycles (maxRequests) against a real php-cgi: it is the share
 * of the wanted processes that can take requests, so neither a successor that is still booting nor
 * a retired predecessor still being stopped may lower it. The snapshot is taken synchronously at
 * the moments that matter: the manager's `spawn` event of a successor (it boots; its predecessor
 * serves) and its `recycle` event (the swap: the successor serves, the predecessor drains), and
 * after every response.
 */
import t from 'tap'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import type { StatusSnapshot } from '../../src/status/index.js'
import { scrape, snapshot, statusRig } from './harness.js'

const PHP = '/usr/bin/php-cgi'

t.test('php-cgi recycling at maxRequests 4: availability stays 100 % while one process serves', { skip: existsSync(PHP) ? false : `${PHP} not installed` }, async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const root = mkdtempSync(join(tmpdir(), 'pc-recycle-avail-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  writeFileSync(join(root, 'pid.php'), '<?php echo getmypid();')
  const rig = await statusRig(t, {
    spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '0' }, maxRequests: 4, minProcs: 1, maxProcs: 1, idleTimeout: 0, stopTimeout: '5s' } },
    routes: [{ name: 'php', match: { prefix: '/' }, protocol: 'fastcgi', spawn: 'php', docroot: root }],
  })
  let s: StatusSnapshot = await snapshot(rig)
  t.ok(await waitFor(async () => { s = await snapshot(rig); return s.spawns[0].ready === 1 }, 15_000), 'php ready')
  const m = rig.proxy.spawns!
  const samples: Array<{ at: string, states: string, spawn: number | null, route: number | null, capacity: number, ready: number }> = []
  const sample = (at: string): void => {
    const snap = rig.status.snapshot()
    const sp = snap.spawns[0]
    const r = snap.routes[0]
    samples.push({ at, states: sp.processes.map((p) => p.state).join(','), spawn: sp.availPercent, route: r.availPercent, capacity: r.capacity, ready: sp.ready })
  }
  let successors = 0
  let recycles = 0
  m.on('spawn', () => { successors++; sample('successor spawned') })
  m.on('recycle', () => { recycles++; sample('swap') })
  const pids = new Set<string>()
  for (let i = 0; i < 20; i++) {
    const res = await get(`${rig.url}/pid.php`)
    t.equal(res.status, 200)
    pids.add(res.body.toString())
    sample(`after response ${i + 1}`)
  }
  t.ok(successors >= 4 && recycles >= 4, `recycled (${successors} successors, ${recycles} swaps, ${pids.size} pids)`)
  const whileServing = samples.filter((x) => x.ready === 1)
  t.ok(whileServing.some((x) => x.at === 'successor spawned' && x.states.includes('starting')), 'sampled with a successor booting')
  t.ok(whileServing.some((x) => x.at === 'swap' && /draining|stopping/.test(x.states)), 'sampled with a predecessor draining')
  const low = whileServing.filter((x) => x.spawn !== 100 || x.route !== 100 || x.capacity !== 1)
  t.same(low, [], `one process serving, one wanted: 100 % in every sample (${whileServing.length} of ${samples.length} samples with one ready)`)
  t.ok(samples.every((x) => x.capacity === 1), 'capacity is the one wanted process throughout')
  // Request 20 was a process's last: wait until its successor serves (it may still boot, `held`).
  t.ok(await waitFor(async () => { s = await snapshot(rig); return s.spawns[0].ready === 1 }, 15_000), 'a process serves')
  const mt = await scrape(rig)
  t.equal(mt.values.get('proxycore_route_available_ratio{route="php"}'), 1, 'metrics: route available ratio 1')
})
