#!/usr/bin/env node
/**
 * proxycore benchmark: starts every server itself (loopback, temp dir, one process each), drives
 * them side by side with wrk (or autocannon), and prints/writes medians, spread, ratios and RSS.
 *
 *   npm run bench                      all scenarios, 3 runs of 5 s, writes docs/benchmarks.md
 *   npm run bench -- --runs 5          more runs
 *   npm run bench -- --quick           1 run of 2 s
 *   npm run bench -- --only http,scgi  some scenarios
 *                                      (http, fastcgi, scgi, cgi, spawn, static, big)
 *   npm run bench -- --big             + 1 GiB upload/download through every adapter (sha256, RSS growth)
 *   npm run bench -- --only big        only that (writes bench/results/big-latest.json and the
 *                                      "Memory: large bodies" section of docs/benchmarks.md)
 *   npm run bench -- --only big --big-size 64MiB --big-backends http,cgi   smaller, some backends
 *   npm run bench -- --profile         proxycore HTTP path under --cpu-prof; top self-time functions
 *   npm run bench -- --profile --only fastcgi   the same for one scenario's proxycore
 *   npm run bench -- --survivors       what each request leaves for the old generation (bytes per
 *                                      request by allocation site; also with --only SCENARIO)
 *   npm run bench -- --allocations     the same for everything a request allocates, the objects
 *                                      that die young included (what sets the scavenges' pace)
 *   npm run bench -- --profile --sizes 100   the profiling modes at some body sizes only
 *                                      (default 100,65536)
 *   node bench/ab.mjs                  CPU µs per request of proxycore builds side by side with the
 *                                      undici floor (--module PATH, repeatable; see its header)
 *   node bench/run.mjs --smoke --json  1 s, direct vs proxycore, JSON on stdout (the tap smoke test)
 *
 * Only numbers from one invocation compare (see the noise note in docs/benchmarks.md).
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { load, loadTool } from './lib/load.mjs'
import { killAll, sampleRss, sleep, treeCpuTicks } from './lib/proc.mjs'
import { ALL, NODE_PROXY_ENV, NODE_PROXY_FLAGS, SIZES } from './lib/scenarios.mjs'
import { machineFacts, renderMarkdown, spliceBigSection, renderConsole, renderSvg, summarize } from './lib/report.mjs'
import { parseBigSize, runBig } from './lib/big.mjs'
import { runProfile } from './lib/profile.mjs'
import { runSurvivors } from './lib/survivors.mjs'

const repo = fileURLToPath(new URL('..', import.meta.url))

const { values: opt } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    duration: { type: 'string' },
    connections: { type: 'string', default: '32' },
    quick: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    only: { type: 'string' },
    big: { type: 'boolean', default: false },
    'big-size': { type: 'string', default: String(1024 ** 3) },
    'big-backends': { type: 'string' },
    profile: { type: 'boolean', default: false },
    survivors: { type: 'boolean', default: false },
    allocations: { type: 'boolean', default: false },
    sizes: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
    module: { type: 'string' },
    render: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
})

if (opt.help) {
  console.log(`options: --runs N --duration S --connections C --quick --smoke --json --only a,b (${ALL.map((s) => s.id).join(',')},big) --big [--big-size BYTES] [--big-backends http,php-fpm,php-cgi,uwsgi,cgi] --profile --survivors --allocations --sizes 100,65536 --no-write --module PATH --render results.json`)
  process.exit(0)
}

if (opt.render) {
  // re-render docs from a saved bench/results/*.json (no measuring)
  const { readFileSync } = await import('node:fs')
  const rep = JSON.parse(readFileSync(opt.render, 'utf8'))
  writeFileSync(join(repo, 'docs', 'benchmarks.svg'), renderSvg(rep))
  writeFileSync(join(repo, 'docs', 'benchmarks.md'), renderMarkdown(rep))
  console.log(renderConsole(rep))
  process.exit(0)
}

const runs = opt.smoke || opt.quick ? 1 : Math.max(1, Number(opt.runs))
const seconds = Number(opt.duration ?? (opt.smoke ? 1 : opt.quick ? 2 : 5))
const connections = Number(opt.connections)
const log = opt.json ? (...a) => console.error(...a) : (...a) => console.log(...a)

// --only big (alone) = the large-body checks only; `big` in --only = --big.
const onlyList = opt.only ? opt.only.split(',') : null
const wantBig = (opt.big || (onlyList?.includes('big') ?? false)) && !opt.smoke
const bigOnly = wantBig && onlyList !== null && onlyList.every((id) => id === 'big')

const tool = bigOnly ? { name: 'none' } : await loadTool()
if (tool === null) {
  console.error('bench: no load generator — install wrk (apt-get install wrk) or `npm i -D autocannon`')
  process.exit(2)
}

const tmp = mkdtempSync(join(tmpdir(), 'proxycore-bench-'))
process.on('exit', () => { killAll(); try { rmSync(tmp, { recursive: true, force: true }) } catch {} })
// Never hang: a hard ceiling on the whole invocation.
const ceilingMs = opt.smoke ? 60_000 : 3_600_000
setTimeout(() => { console.error(`bench: exceeded ${ceilingMs / 1000} s, giving up`); killAll(); process.exit(3) }, ceilingMs).unref()

const resultsDir = join(repo, 'bench', 'results')
mkdirSync(resultsDir, { recursive: true })

const mod = opt.module ?? join(repo, 'dist', 'index.js')
const api = await import(new URL(`file://${mod}`).href)
const adapters = ['http', 'fastcgi', 'scgi', 'cgi', 'static'].filter((n) => {
  try { return api.getAdapter?.(n) !== undefined || api[`${n}Adapter`] !== undefined } catch { return false }
})
const ctx = { tmp, adapters, smoke: opt.smoke, module: opt.module, nodeArgs: [] }

// The profiling modes: one proxycore (the HTTP one, or --only's), sampled under load.
if (opt.profile || opt.survivors || opt.allocations) {
  const scenario = opt.only ? ALL.find((s) => s.id === opt.only) ?? null : null
  const profileSizes = opt.sizes ? opt.sizes.split(',').map(Number) : SIZES
  const args = { ctx, tool, seconds: Number(opt.duration ?? 8), connections, resultsDir, log, scenario, sizes: profileSizes }
  if (opt.profile) await runProfile(args)
  else await runSurvivors({ ...args, all: opt.allocations })
  process.exit(0)
}

let scenarios = ALL
if (opt.smoke) scenarios = ALL.filter((s) => s.id === 'http')
else if (onlyList) {
  const want = new Set(onlyList)
  scenarios = ALL.filter((s) => want.has(s.id))
}
const sizes = opt.smoke ? [100] : SIZES

/** GET once: must be 200 with `size` body bytes, else the target is dropped with the reason. */
async function check (url, size) {
  const ac = new AbortController()
  const t = setTimeout(() => ac.abort(), 10_000)
  try {
    const r = await fetch(url, { signal: ac.signal })
    const b = Buffer.from(await r.arrayBuffer())
    if (r.status !== 200) return `status ${r.status}: ${b.toString('latin1').replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 120)}`
    if (b.length !== size) return `body ${b.length} bytes, expected ${size}`
    return null
  } catch (err) { return String(err.cause?.message ?? err.message) } finally { clearTimeout(t) }
}

async function measure (target, size, secs) {
  const rss = sampleRss(target.rss)
  const { pid, exclude, preExec } = target.rss[0]
  const ticks0 = treeCpuTicks(pid, exclude, preExec)
  const t0 = Date.now()
  try {
    const r = await load(tool, target.url(size), { connections, seconds: secs })
    const wall = (Date.now() - t0) / 1000
    if (r.requests === 0) throw new Error(`no request completed in ${secs} s; ${target.proc.name} log: ${target.proc.log().trim().split('\n').slice(-3).join(' | ').slice(0, 300)}`)
    r.rssKiB = rss.stop()
    r.cpu = (treeCpuTicks(pid, exclude, preExec) - ticks0) / 100 / wall
    return r
  } finally { rss.stop() }
}

const results = []
const started = new Date()
if (scenarios.length > 0 && !bigOnly) log(`proxycore bench: ${tool.name}, ${connections} connections, ${runs} run(s) × ${seconds} s, bodies ${sizes.join(' B, ')} B`)
for (const sc of scenarios) {
  log(`\n## ${sc.title}`)
  let setup
  try { setup = await sc.setup(ctx) } catch (err) { setup = { skip: String(err.message).split('\n')[0] } }
  if (setup.skip) {
    log(`  skipped: ${setup.skip}`)
    results.push({ id: sc.id, title: sc.title, note: sc.note, skip: setup.skip, rows: [], skipped: [] })
    continue
  }
  for (const s of setup.skipped) log(`  skipped ${s.label}: ${s.reason}`)
  const targets = []
  for (const t of setup.targets) {
    let bad = null
    for (const n of sizes) { bad ??= await check(t.url(n), n) }
    if (bad) { log(`  dropped ${t.label}: ${bad}`); setup.skipped.push({ id: t.id, label: t.label, reason: bad }) } else targets.push(t)
  }
  const samples = new Map(targets.map((t) => [t.id, new Map(sizes.map((n) => [n, []]))]))
  // warm-up: JIT, pools, connection reuse
  if (!opt.smoke) for (const t of targets) for (const n of sizes) await load(tool, t.url(n), { connections, seconds: 1 }).catch(() => {})
  for (let r = 0; r < runs; r++) {
    for (const n of sizes) {
      // rotate the order every run so no target always goes first after an idle pause
      const order = targets.map((_, i) => targets[(i + r) % targets.length])
      for (const t of order) {
        try {
          const m = await measure(t, n, seconds)
          samples.get(t.id).get(n).push(m)
          log(`  run ${r + 1}/${runs} ${String(n).padStart(5)} B  ${t.id.padEnd(15)} ${m.rps.toFixed(0).padStart(7)} req/s  p99 ${m.p99.toFixed(2)} ms  RSS ${(m.rssKiB / 1024).toFixed(1)} MiB  CPU ${(m.cpu * 100).toFixed(0)} %${m.errors || m.non2xx ? `  errors ${m.errors} non-2xx ${m.non2xx}` : ''}`)
        } catch (err) {
          log(`  run ${r + 1}/${runs} ${n} B ${t.id}: FAILED ${String(err.message).split('\n')[0]}`)
        }
        await sleep(200)
      }
    }
  }
  results.push({ id: sc.id, title: sc.title, note: sc.note, ...summarize(sc, targets, samples, sizes), skipped: setup.skipped })
  for (const t of [...setup.targets].reverse()) await t.proc.stop()
  for (const e of setup.extras ?? []) await e.stop()
  if (setup.backend) await setup.backend.stop()
}

// Large bodies: measured now, or else the latest separate `--only big` run (so a full run keeps them).
const facts = await machineFacts(repo, tool)
const bigLatest = join(resultsDir, 'big-latest.json')
let big = null
if (wantBig) {
  big = await runBig({ ctx, size: parseBigSize(opt['big-size']), log, only: opt['big-backends']?.split(',') ?? null })
  big.facts = facts
  if (!opt['no-write']) writeFileSync(bigLatest, JSON.stringify(big, null, 2))
} else if (!opt.smoke) {
  const { existsSync, readFileSync } = await import('node:fs')
  if (existsSync(bigLatest)) { big = JSON.parse(readFileSync(bigLatest, 'utf8')); big.separate = true }
}

const report = { date: started.toISOString(), facts, nodeFlags: NODE_PROXY_FLAGS, nodeEnv: NODE_PROXY_ENV, runs, seconds, connections, tool: tool.name, sizes, scenarios: results, big }
writeFileSync(join(resultsDir, `bench-${started.toISOString().replace(/[:.]/g, '-')}.json`), JSON.stringify(report, null, 2))

if (opt.json) {
  console.log(JSON.stringify(report))
} else {
  console.log(`\n${renderConsole(report)}`)
}
if (bigOnly && !opt['no-write']) {
  // only the large-body section of docs/benchmarks.md changes; the rest stays from the last full run
  const { existsSync, readFileSync } = await import('node:fs')
  const file = join(repo, 'docs', 'benchmarks.md')
  const md = existsSync(file) ? readFileSync(file, 'utf8') : renderMarkdown({ ...report, big: null })
  const next = spliceBigSection(md, big)
  writeFileSync(file, next)
  log('\nwrote the large-body section of docs/benchmarks.md and bench/results/big-latest.json')
} else if (!opt.smoke && !opt['no-write']) {
  writeFileSync(join(repo, 'docs', 'benchmarks.svg'), renderSvg(report))
  writeFileSync(join(repo, 'docs', 'benchmarks.md'), renderMarkdown(report))
  log('\nwrote docs/benchmarks.md and docs/benchmarks.svg')
}
process.exit(0)
