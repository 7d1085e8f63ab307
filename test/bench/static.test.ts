/**
 * The bench's static-file scenario: `--only static` runs proxycore's static adapter side by side
 * with nginx `root`, lighttpd mod_staticfile and the static Node floor on the same files, in a
 * docroot the bench creates and removes; there is no "direct" row and no target, so the ratios are
 * shown and never judged (no pass/fail, no row in the Targets summary). Not a performance test: no
 * number is asserted beyond "requests went through without errors". A peer that is not installed
 * is skipped locally and fails under CI=true (like big.test.ts).
 */
import t from 'tap'
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { benchLeftovers, ensureDist, runBench } from './run-bench.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { findWrk } from '../../bench/lib/load.mjs'

guardLeaks(t)

interface Ratio { peer: string, target: number | null, pass: boolean | null, bySize?: Record<string, number | null>, rssMiB?: number }
interface Row { id: string, direct: boolean, bySize: Record<string, { runs: number, median: number, errors: number }> }
interface Scenario { id: string, title: string, note?: string, skip?: string, rows: Row[], ratios: Ratio[], skipped: Array<{ id: string, reason: string }> }
interface Sample { rps: number, p50: number, p99: number, rssKiB: number, cpu: number, errors: number, non2xx: number }

// plain JS modules without types: a string-typed specifier keeps tsc from looking for them
const scenariosMod: string = '../../bench/lib/scenarios.mjs'
const reportMod: string = '../../bench/lib/report.mjs'

t.test('the static scenario: in the full run, last; no targets, so nothing judged', async (t) => {
  const { ALL, staticFiles } = await import(scenariosMod) as { ALL: Array<{ id: string }>, staticFiles: { id: string, note: string, comparisons: Array<{ peer: string, target?: number }>, rssTarget: null } }
  const { summarize, renderMarkdown } = await import(reportMod) as {
    summarize: (sc: unknown, targets: unknown[], samples: Map<string, Map<number, Sample[]>>, sizes: number[]) => { rows: Row[], ratios: Ratio[] }
    renderMarkdown: (rep: unknown) => string
  }
  t.same(ALL.map((s) => s.id), ['http', 'fastcgi', 'scgi', 'cgi', 'spawn', 'static'], 'one more scenario, after the others')
  t.same(staticFiles.comparisons.map((c) => c.peer), ['nginx', 'lighttpd', 'floor'])
  t.ok(staticFiles.comparisons.every((c) => c.target === undefined), 'no ratio target')

  // Two runs of made-up measurements: proxycore at half of each peer's rate.
  const sizes = [100, 65536]
  const rate: Record<string, number> = { proxycore: 5000, nginx: 10000, lighttpd: 10000, floor: 10000 }
  const samples = new Map(Object.keys(rate).map((id) => [id, new Map(sizes.map((n) => [n, [1, 2].map(() => ({ rps: rate[id], p50: 1, p99: 2, rssKiB: 100 * 1024, cpu: 0.9, errors: 0, non2xx: 0 }))]))]))
  const targets = Object.keys(rate).map((id) => ({ id, label: id }))
  const sum = summarize(staticFiles, targets, samples, sizes)
  t.same(sum.ratios.map((q) => q.peer), ['nginx', 'lighttpd', 'floor', 'rss'], 'proxycore ÷ nginx, lighttpd, floor, and its RSS')
  for (const q of sum.ratios.filter((x) => x.peer !== 'rss')) t.same(q.bySize, { 100: 0.5, 65536: 0.5 }, `÷ ${q.peer}: proxycore's median over the peer's`)
  t.ok(sum.ratios.every((q) => q.target === null && q.pass === null), 'no target and no pass/fail, RSS included (100 MiB would fail the 80 MiB of the others)')
  t.equal(sum.ratios.find((q) => q.peer === 'rss')?.rssMiB, 100)

  const md = renderMarkdown({
    date: '2026-01-01T00:00:00.000Z', facts: { proxycore: '0', nproc: 2, cpu: 'cpu', memGiB: '1', kernel: 'k', node: 'v20', peers: {} },
    runs: 2, seconds: 5, connections: 32, tool: 'wrk', sizes, big: null,
    scenarios: [{ id: 'static', title: 'Static files from a docroot', note: staticFiles.note, ...sum, skipped: [] }],
  })
  t.notMatch(md, '## Targets', 'no Targets summary: nothing in it to judge')
  t.match(md, staticFiles.note, 'the note says why there is no direct row')
  t.match(md, /no "direct" row/)
  t.match(md, '| proxycore ÷ floor | 0.50× | 0.50× | none |  |', 'a ratio row: the ratios, target none, no mark')
  t.match(md, '| proxycore RSS under load (MiB, max) | 100.0 MiB |  | none |  |', 'the RSS row: no target either')
  t.notMatch(md, /[✓✗]/, 'no pass or fail mark anywhere')
})

const noWrk = findWrk() === null
if (noWrk && process.env.CI === 'true') throw new Error('wrk missing in CI (scripts/install-peers.sh installs it)')

t.test('--only static: proxycore, nginx, lighttpd and the floor on the same files; nothing left behind', { skip: noWrk ? 'wrk not installed' : false, timeout: 120_000 }, async (t) => {
  t.equal(await ensureDist(), 0, 'dist/ is built')
  // The bench's temp dir (docroot, configs) goes under our own TMPDIR: afterwards it must be gone,
  // and so must every process with it on its command line.
  const tmp = mkdtempSync(join(tmpdir(), 'pc-bench-static-'))
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }))
  const { code, out, err } = await runBench(['--only', 'static', '--runs', '1', '--duration', '1', '--connections', '8', '--no-write', '--json'], { ...process.env, TMPDIR: tmp })
  t.equal(code, 0, `exit 0\n${err}`)
  const report = JSON.parse(out.trim().split('\n').pop() ?? '{}') as { scenarios: Scenario[] }
  t.same(report.scenarios.map((s) => s.id), ['static'], 'only the static scenario ran')
  const sc = report.scenarios[0]
  t.equal(sc.skip, undefined, `not skipped ${sc.skip ?? ''}`)
  for (const s of sc.skipped) {
    if (process.env.CI === 'true' || !/not installed/.test(s.reason)) t.fail(`${s.id}: ${s.reason}`)
    else t.comment(`${s.id} skipped: ${s.reason}`)
  }
  t.notOk(sc.rows.some((r) => r.direct || r.id === 'direct'), 'no direct row: there is no backend')
  for (const row of sc.rows) {
    for (const n of ['100', '65536']) {
      t.equal(row.bySize[n].runs, 1, `${row.id} ${n} B: one run`)
      t.ok(row.bySize[n].median > 0, `${row.id} ${n} B: requests went through`)
      t.equal(row.bySize[n].errors, 0, `${row.id} ${n} B: no errors, no non-2xx`)
    }
  }
  const ids = sc.rows.map((r) => r.id)
  t.ok(ids.includes('proxycore') && ids.includes('floor'), `proxycore and the floor measured (${ids.join(', ')})`)
  t.same(sc.ratios.map((q) => q.peer), ['nginx', 'lighttpd', 'floor', 'rss'])
  t.ok(sc.ratios.every((q) => q.target === null && q.pass === null), 'nothing judged')
  for (const q of sc.ratios.filter((x) => ids.includes(x.peer))) {
    t.ok(Object.values(q.bySize ?? {}).every((v) => typeof v === 'number' && v > 0), `÷ ${q.peer}: a ratio at both sizes`)
  }

  t.ok(await waitFor(() => !existsSync(tmp) || readdirSync(tmp).length === 0, 5000, 50), 'the bench removed its temp dir, the docroot with it')
  let left: string[] = []
  t.ok(await waitFor(() => { left = benchLeftovers(tmp); return left.length === 0 }, 5000, 50), `every process the bench started is gone ${left.join('; ')}`)
})
