#!/usr/bin/env node
/**
 * CPU per request, side by side: the undici floor (bench/servers/floor-undici.mjs) and proxycore
 * built from one or more trees, all behind one node:http backend, loaded in turn (the order rotates
 * every round) with wrk at one body size. Each round gives every target's process CPU time
 * (utime + stime from /proc) divided by the requests it served: on a shared machine that moves far
 * less than requests per second, and the targets of one round see the same load from elsewhere.
 *
 *   node bench/ab.mjs --module /tmp/a/dist/index.js --module /tmp/b/dist/index.js --rounds 6
 *   node bench/ab.mjs                       the working tree's dist/ against the floor
 *   node bench/ab.mjs --scenario fastcgi    the same for FastCGI → php-fpm (also scgi, spawn)
 *   options: --module PATH (repeatable) --rounds N (5) --seconds S (4) --size BYTES (100)
 *            --connections C (32) --scenario http|fastcgi|scgi|spawn (http) --no-floor --json
 *
 * With --scenario other than http, each proxycore (and the floor, from the first) is set up as
 * bench/lib/scenarios.mjs does for that scenario, with its own backend (php-fpm pool, uWSGI,
 * spawned php-cgi) in its own temp dir; the scenario's other peers are stopped at once (their idle
 * backends at the end), and a target's CPU leaves out the backend processes it spawned.
 *
 * Prints per target the median, min and max µs of CPU per request, the median over the rounds of
 * its CPU per request divided by the floor's in the same round (the steadier figure on a busy
 * machine), the same two for user time alone (JavaScript, GC; kernel time follows the machine's
 * load more than the code), and the median req/s.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { load, loadTool } from './lib/load.mjs'
import { killAll, sleep, start, treeCpuTicks } from './lib/proc.mjs'
import { fastcgi, scgi, spawn, startNodeProxy, startProxycore } from './lib/scenarios.mjs'

const { values: opt } = parseArgs({
  options: {
    module: { type: 'string', multiple: true },
    rounds: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '4' },
    size: { type: 'string', default: '100' },
    connections: { type: 'string', default: '32' },
    scenario: { type: 'string', default: 'http' },
    'no-floor': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
})

const here = (p) => fileURLToPath(new URL(p, import.meta.url))
const TICK_HZ = 100
const tool = await loadTool()
if (tool === null) { console.error('ab: no load generator (wrk or autocannon)'); process.exit(2) }
const tmp = mkdtempSync(join(tmpdir(), 'proxycore-ab-'))
process.on('exit', () => { killAll(); rmSync(tmp, { recursive: true, force: true }) })
const log = opt.json ? (...a) => console.error(...a) : (...a) => console.log(...a)

const size = Number(opt.size)
const seconds = Number(opt.seconds)
const connections = Number(opt.connections)
const SCENARIOS = { fastcgi, scgi, spawn }
const targets = []
const modules = opt.module ?? [here('../dist/index.js')]
const label = (i, mod) => modules.length > 1 ? `proxycore#${i} ${mod}` : 'proxycore'
let be = null
const stops = []
if (opt.scenario === 'http') {
  be = await start('backend', process.execPath, [here('servers/backend.mjs')])
  if (!opt['no-floor']) {
    const p = await startNodeProxy('floor-undici', [here('servers/floor-undici.mjs'), String(be.port)])
    targets.push({ id: 'floor-undici', proc: p, path: (n) => `/${n}` })
  }
  for (const [i, mod] of modules.entries()) {
    const ctx = { tmp, module: mod, nodeArgs: [] }
    const p = await startProxycore(ctx, `proxycore-${i}`, { routes: [{ protocol: 'http', backends: [`127.0.0.1:${be.port}`] }] })
    targets.push({ id: label(i, mod), proc: p, path: (n) => `/${n}` })
  }
} else {
  const scenario = SCENARIOS[opt.scenario]
  if (scenario === undefined) { console.error(`ab: unknown scenario ${opt.scenario}`); process.exit(2) }
  for (const [i, mod] of modules.entries()) {
    const dir = join(tmp, String(i))
    mkdirSync(dir)
    const set = await scenario.setup({ tmp: dir, module: mod, nodeArgs: [], adapters: ['fastcgi', 'scgi'] })
    if (set.skip) { console.error(`ab: ${opt.scenario} skipped: ${set.skip}`); process.exit(2) }
    const keep = new Set(['proxycore', ...(i === 0 && !opt['no-floor'] ? ['floor'] : [])])
    for (const t of set.targets) {
      if (!keep.has(t.id)) { await t.proc.stop(); continue }
      const path = new URL(t.url(0)).pathname + new URL(t.url(0)).search
      const exclude = t.rss[0].exclude ?? null
      const x = { id: t.id === 'floor' ? 'floor' : label(i, mod), proc: t.proc, exclude, path: (n) => path.replace(/0$/, String(n)) }
      if (t.id === 'floor') targets.unshift(x)
      else targets.push(x)
    }
    stops.push(async () => { for (const e of set.extras ?? []) await e.stop(); await set.backend?.stop() })
  }
}

const url = (t) => `http://127.0.0.1:${t.proc.port}${t.path(size)}`
/** User-mode CPU ticks of one process: what JavaScript changes move; kernel time follows the load. */
function userTicks (pid) {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[11])
}
// warm-up: JIT, pools
for (const t of targets) await load(tool, url(t), { connections, seconds: 2 })
const samples = new Map(targets.map((t) => [t.id, []]))
const rounds = Number(opt.rounds)
for (let r = 0; r < rounds; r++) {
  for (let k = 0; k < targets.length; k++) {
    const t = targets[(k + r) % targets.length]
    const ticks0 = treeCpuTicks(t.proc.pid, t.exclude)
    const user0 = userTicks(t.proc.pid)
    const m = await load(tool, url(t), { connections, seconds })
    const ticks = treeCpuTicks(t.proc.pid, t.exclude) - ticks0
    const user = userTicks(t.proc.pid) - user0
    const requests = m.requests
    const us = requests > 0 ? ticks / TICK_HZ / requests * 1e6 : NaN
    const userUs = requests > 0 ? user / TICK_HZ / requests * 1e6 : NaN
    samples.get(t.id).push({ us, userUs, rps: m.rps, requests, errors: m.errors + m.non2xx })
    log(`round ${r + 1}/${rounds}  ${t.id.padEnd(20)} ${m.rps.toFixed(0).padStart(7)} req/s  ${us.toFixed(1).padStart(6)} µs CPU/request (user ${userUs.toFixed(1)})${m.errors || m.non2xx ? `  errors ${m.errors} non-2xx ${m.non2xx}` : ''}`)
    await sleep(200)
  }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2 }
// Each round's CPU per request over the floor's in the same round: the load from elsewhere,
// which moves all of them, mostly cancels out.
const floor = opt['no-floor'] ? null : samples.get(opt.scenario === 'http' ? 'floor-undici' : 'floor')
const summary = targets.map((t) => {
  const xs = samples.get(t.id)
  const us = xs.map((x) => x.us)
  const toFloor = floor === null ? null : median(xs.map((x, r) => x.us / floor[r].us))
  const userToFloor = floor === null ? null : median(xs.map((x, r) => x.userUs / floor[r].userUs))
  return { id: t.id, medianUs: median(us), minUs: Math.min(...us), maxUs: Math.max(...us), toFloor, userUs: median(xs.map((x) => x.userUs)), userToFloor, medianRps: median(xs.map((x) => x.rps)), errors: xs.reduce((a, x) => a + x.errors, 0) }
})
log(`\n${size} B, ${connections} connections, ${rounds} rounds × ${seconds} s; CPU µs per request (median [min–max]), ÷ the floor's in the same round (median); the same for user time alone; req/s median`)
for (const s of summary) log(`  ${s.id.padEnd(20)} ${s.medianUs.toFixed(1).padStart(6)} [${s.minUs.toFixed(1)}–${s.maxUs.toFixed(1)}]${s.toFloor === null ? '' : `  ×${s.toFloor.toFixed(3)}`}  user ${s.userUs.toFixed(1)}${s.userToFloor === null ? '' : ` ×${s.userToFloor.toFixed(3)}`}  ${s.medianRps.toFixed(0).padStart(7)} req/s${s.errors ? `  errors ${s.errors}` : ''}`)
if (opt.json) console.log(JSON.stringify({ size, connections, rounds, seconds, summary, samples: Object.fromEntries(samples) }))
for (const t of [...targets].reverse()) await t.proc.stop()
for (const stop of stops) await stop()
await be?.stop()
process.exit(0)
