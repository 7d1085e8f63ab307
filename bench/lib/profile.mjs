/**
 * --profile [--only SCENARIO]: proxycore's HTTP path (or that scenario's) under `node --cpu-prof`
 * (100 B then 64 KiB, or `sizes`), the profile saved in
 * bench/results/, and the top self-time functions printed.
 */
import { readdirSync, readFileSync, writeFileSync, mkdtempSync, renameSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { load } from './load.mjs'
import { start } from './proc.mjs'
import { startProxycore } from './scenarios.mjs'

const META = new Set(['(idle)', '(program)', '(garbage collector)', '(root)'])

/** A frame as `function file:line`, the file relative to `root` (the repo) when under it. */
export function keyOf (f, root) {
  let url = f.url.replace(/^file:\/\//, '')
  if (root && url.startsWith(root)) url = relative(root, url)
  return `${f.functionName || '(anonymous)'} ${url ? `${url}:${f.lineNumber + 1}` : '(native)'}`
}

/** Which part of the process a frame is in: the areas that --profile and --survivors total. */
export function areaOf (f) {
  const url = f.url
  if (f.functionName === '(garbage collector)') return 'garbage collector'
  if (url.includes('/dist/') && !url.includes('node_modules')) return 'proxycore'
  if (url.includes('node_modules/undici')) return 'undici'
  if (url.startsWith('node:')) return 'node internals'
  if (url === '' && !META.has(f.functionName)) return 'native (syscalls, encoders)'
  return 'other'
}

/**
 * Aggregate a .cpuprofile by function (name + file + line). Returns self ms and % of busy samples
 * (idle excluded), each with the JS function that called it most (useful for native frames like
 * writev), plus totals per area (proxycore dist/, undici, node internals, native, GC).
 */
export function topSelf (profile, n = 15, root = '') {
  const dt = profile.samples.length > 0 ? (profile.endTime - profile.startTime) / profile.samples.length / 1000 : 0
  const byId = new Map(profile.nodes.map((x) => [x.id, x]))
  const parent = new Map()
  for (const x of profile.nodes) for (const c of x.children ?? []) parent.set(c, x.id)
  const counts = new Map()
  for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1)
  const agg = new Map()
  const areas = { proxycore: 0, undici: 0, 'node internals': 0, 'native (syscalls, encoders)': 0, 'garbage collector': 0, other: 0 }
  let busy = 0
  let idle = 0
  for (const [id, c] of counts) {
    const f = byId.get(id).callFrame
    if (f.functionName === '(idle)') { idle += c; continue }
    busy += c
    const key = keyOf(f, root)
    let e = agg.get(key)
    if (!e) { e = { fn: key, count: 0, callers: new Map() }; agg.set(key, e) }
    e.count += c
    const p = parent.get(id)
    if (p !== undefined) { const pk = keyOf(byId.get(p).callFrame, root); e.callers.set(pk, (e.callers.get(pk) ?? 0) + c) }
    areas[areaOf(f)] += c
  }
  const pct = (c) => busy === 0 ? 0 : c / busy * 100
  const sorted = [...agg.values()].sort((a, b) => b.count - a.count)
  const row = (e) => {
    const top = [...e.callers].sort((a, b) => b[1] - a[1])[0]
    return { fn: e.fn, ms: e.count * dt, pct: pct(e.count), caller: top ? top[0] : '' }
  }
  return {
    busyMs: busy * dt, idleMs: idle * dt,
    top: sorted.filter((e) => !META.has(e.fn.split(' ')[0])).slice(0, n).map(row),
    ours: sorted.filter((e) => /\bdist\//.test(e.fn) && !e.fn.includes('node_modules')).slice(0, n).map(row),
    areas: Object.entries(areas).map(([area, c]) => ({ area, ms: c * dt, pct: pct(c) })),
  }
}

/**
 * Start proxycore for one scenario (HTTP when `scenario` is null) with extra node arguments, the
 * scenario's peers stopped again so only proxycore's backend runs. Returns the process (with
 * `url(n)`), the scenario id and the stops to run afterwards.
 */
export async function startProfiled (ctx, scenario, nodeArgs) {
  const stops = []
  const c = { ...ctx, nodeArgs }
  if (scenario === null) {
    const be = await start('backend', process.execPath, [fileURLToPath(new URL('../servers/backend.mjs', import.meta.url))])
    stops.push(() => be.stop())
    const pc = await startProxycore(c, 'proxycore-profile', { routes: [{ protocol: 'http', backends: [`127.0.0.1:${be.port}`] }] })
    pc.url = (n) => `http://127.0.0.1:${pc.port}/${n}`
    return { pc, id: 'http', stops }
  }
  // Any scenario: its own setup; only proxycore is loaded.
  const setup = await scenario.setup(c)
  if (setup.skip) throw new Error(`profile ${scenario.id}: ${setup.skip}`)
  const t = setup.targets.find((x) => x.id === 'proxycore')
  if (!t) throw new Error(`profile ${scenario.id}: proxycore did not start: ${setup.skipped.map((x) => x.reason).join('; ')}`)
  const pc = t.proc
  pc.url = t.url
  // Stop the peers the setup started too, as a full run does (lighttpd's php-cgi, php-fpm, …).
  for (const x of setup.targets) if (x !== t) stops.push(() => x.proc.stop())
  for (const e of setup.extras ?? []) stops.push(() => e.stop())
  if (setup.backend) stops.push(() => setup.backend.stop())
  return { pc, id: scenario.id, stops }
}

export async function runProfile ({ ctx, tool, seconds, connections, resultsDir, log, scenario = null, sizes = [100, 65536] }) {
  const profDir = mkdtempSync(join(ctx.tmp, 'prof-'))
  const { pc, id, stops } = await startProfiled(ctx, scenario, ['--cpu-prof', '--cpu-prof-dir', profDir])
  for (const n of sizes) {
    const r = await load(tool, pc.url(n), { connections, seconds })
    log(`profile ${id} load ${n} B: ${r.rps.toFixed(0)} req/s`)
  }
  await pc.stop('SIGTERM', 10_000)
  for (const stop of stops) await stop()
  const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'))
  if (!file) throw new Error(`no .cpuprofile written:\n${pc.log()}`)
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const dest = join(resultsDir, `proxycore-${id}-${stamp}.cpuprofile`)
  renameSync(join(profDir, file), dest)
  const repo = fileURLToPath(new URL('../..', import.meta.url))
  const prof = topSelf(JSON.parse(readFileSync(dest, 'utf8')), 15, repo)
  const fmt = (t) => `${t.ms.toFixed(0).padStart(7)}  ${t.pct.toFixed(1).padStart(6)}  ${t.fn}${t.caller ? `   ← ${t.caller}` : ''}`
  const lines = [
    `busy ${prof.busyMs.toFixed(0)} ms, idle ${prof.idleMs.toFixed(0)} ms; % below = share of busy samples`,
    '', 'by area:', ...prof.areas.map((a) => `${a.ms.toFixed(0).padStart(7)}  ${a.pct.toFixed(1).padStart(6)}  ${a.area}`),
    '', 'top self time (all code; ← = most frequent caller):', 'self ms   self %  function', ...prof.top.map(fmt),
    '', 'top self time in proxycore (dist/):', ...prof.ours.map(fmt),
  ]
  writeFileSync(dest.replace(/\.cpuprofile$/, '.top.txt'), `${lines.join('\n')}\n`)
  log(`\nprofile: ${relative(repo, dest)} (open in Chrome DevTools › Performance, or speedscope)\n`)
  log(lines.join('\n'))
  return prof
}
