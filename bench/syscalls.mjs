#!/usr/bin/env node
/**
 * System calls per request of each proxy process (not its backends), for the HTTP→node:http,
 * FastCGI→php-fpm, SCGI→uWSGI and spawned php-cgi scenarios: every target of the scenario (bench/lib/scenarios.mjs)
 * is loaded with wrk (-c32, one at a time) while `perf stat -e 'syscalls:sys_enter_*'` counts the
 * system calls of its serving process (nginx: its worker) and the counts are divided by the
 * requests wrk completed. Needs perf with tracepoint access (root or perf_event_paranoid <= -1).
 *
 *   node bench/syscalls.mjs [--scenario http|fastcgi|scgi|spawn] (repeatable; all four by default)
 *                           [--seconds S (4)] [--size BYTES (100)] [--connections C (32)] [--module PATH]
 */
import { execFileSync, spawn as spawnChild } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { load, loadTool } from './lib/load.mjs'
import { killAll, sleep, tree } from './lib/proc.mjs'
import { fastcgi, http, scgi, spawn } from './lib/scenarios.mjs'

const { values: opt } = parseArgs({
  options: {
    scenario: { type: 'string', multiple: true },
    seconds: { type: 'string', default: '4' },
    size: { type: 'string', default: '100' },
    connections: { type: 'string', default: '32' },
    module: { type: 'string' },
  },
})
const SCENARIOS = { http, fastcgi, scgi, spawn }
const tool = await loadTool()
if (tool?.name !== 'wrk') { console.error('syscalls: needs wrk'); process.exit(2) }
const tmp = mkdtempSync(join(tmpdir(), 'proxycore-sys-'))
process.on('exit', () => { killAll(); rmSync(tmp, { recursive: true, force: true }) })
const ctx = { tmp, adapters: ['http', 'fastcgi', 'scgi', 'cgi', 'static'], module: opt.module, nodeArgs: [] }
const seconds = Number(opt.seconds)
const connections = Number(opt.connections)
const size = Number(opt.size)

/** The process that serves: nginx's single worker, else the target's own process. */
function servingPid (t) {
  if (!/^nginx/.test(t.id)) return t.proc.pid
  const w = tree(t.proc.pid).find((p) => p.pid !== t.proc.pid && p.comm === 'nginx')
  return w ? w.pid : t.proc.pid
}

/** Count syscalls of `pid` (all its threads) while `during()` runs; { name: count }. */
async function countSyscalls (pid, during) {
  const out = join(tmp, `perf-${pid}.csv`)
  const perf = spawnChild('perf', ['stat', '-x', ',', '-o', out, '-e', 'syscalls:sys_enter_*', '-p', String(pid)], { stdio: 'ignore' })
  await sleep(1500)   // perf attaches all tracepoints
  const r = await during()
  perf.kill('SIGINT')
  await new Promise((resolve) => perf.once('exit', resolve))
  const counts = {}
  for (const line of readFileSync(out, 'utf8').split('\n')) {
    const f = line.split(',')
    const m = /syscalls:sys_enter_(\w+)/.exec(f[2] ?? '')
    if (m && Number(f[0]) > 0) counts[m[1]] = Number(f[0])
  }
  return { counts, r }
}

for (const name of opt.scenario ?? Object.keys(SCENARIOS)) {
  const s = SCENARIOS[name]
  const set = await s.setup(ctx)
  if (set.skip) { console.log(`${name}: skipped (${set.skip})`); continue }
  const rows = []
  for (const t of set.targets) {
    if (t.direct) continue
    const url = t.url(size)
    await load(tool, url, { connections, seconds: 2 })
    const pid = servingPid(t)
    const { counts, r } = await countSyscalls(pid, () => load(tool, url, { connections, seconds }))
    rows.push({ id: t.id, requests: r.requests, rps: r.rps, counts })
    await sleep(200)
  }
  const names = [...new Set(rows.flatMap((x) => Object.keys(x.counts)))]
  const per = (x, n) => (x.counts[n] ?? 0) / x.requests
  names.sort((a, b) => Math.max(...rows.map((x) => per(x, b))) - Math.max(...rows.map((x) => per(x, a))))
  console.log(`\n${name} (${size} B, -c${connections}, ${seconds} s): system calls per request`)
  console.log(`  ${'syscall'.padEnd(18)}${rows.map((x) => x.id.padStart(15)).join('')}`)
  for (const n of names) {
    if (rows.every((x) => per(x, n) < 0.005)) continue
    console.log(`  ${n.padEnd(18)}${rows.map((x) => per(x, n).toFixed(2).padStart(15)).join('')}`)
  }
  const total = (x) => Object.values(x.counts).reduce((a, b) => a + b, 0) / x.requests
  console.log(`  ${'total'.padEnd(18)}${rows.map((x) => total(x).toFixed(2).padStart(15)).join('')}`)
  console.log(`  ${'req/s'.padEnd(18)}${rows.map((x) => x.rps.toFixed(0).padStart(15)).join('')}`)
  for (const t of [...set.targets].reverse()) await t.proc.stop()
  for (const e of set.extras ?? []) await e.stop()
  await set.backend?.stop()
}
process.exit(0)
