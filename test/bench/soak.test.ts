/**
 * `npm run soak` (AC-99, docs/soak.md): (a) the verdict, `evaluate()`, flags each kind of made-up
 * violation and passes clean data, so the soak's checks can fail; (b) a 15-second soak against
 * the real peers exits 0 with every adapter and every fault kind exercised, and leaves nothing
 * behind (no process, no temp dir with its sockets).
 */
import t from 'tap'
import { existsSync } from 'node:fs'
import { evaluate, FAULTS, type SoakResult, type SoakSample } from '../../bench/lib/soak-check.mjs'
import { ADAPTERS, missingPeers } from '../../bench/lib/soak-setup.mjs'
import { guardLeaks } from '../helpers/leaks.js'
import { runNode } from '../helpers/run-node.js'
import { benchLeftovers, ensureDist, repo } from './run-bench.js'

guardLeaks(t)

const EXPECTED = { 'php-cgi': 4, fcgiwrap: 3, node: 1, 'proxycore-fork-': 1 }
const PEERS = { 'php-fpm:php-fpm8.2': 5, 'uwsgi:uwsgi': 5 }
const MiB = 1024

/** Ten samples 10 s apart, warm-up 20 s: flat RSS (70 MiB, +1 MiB of noise), 40 fds ±2. */
function cleanSamples (): SoakSample[] {
  return Array.from({ length: 10 }, (_, i) => ({
    t: i * 10_000, alive: true, rssKiB: (70 + (i % 2)) * MiB, fds: 40 + ((i * 3) % 5) - 2, zombies: 0,
    counts: { ...EXPECTED }, expected: EXPECTED, peers: { ...PEERS }, peersExpected: PEERS, pending: false,
  }))
}

/** Normal requests to every adapter, all 200 with a matching sha, and one correct fault of each kind. */
function cleanResults (): SoakResult[] {
  const out: SoakResult[] = []
  let at = 0
  for (const ad of ADAPTERS) out.push({ kind: 'normal', adapter: ad.id, method: 'GET', url: `${ad.prefix}x?100`, start: at, end: (at += 50), status: 200, shaOk: true })
  const good: Record<string, Partial<SoakResult>> = {
    'abort-upload': { status: null },
    'abort-download': { status: 200, bytes: 65536 },
    kill: { status: null, restoredMs: 150 },
    slow: { status: 504, code: 'ERR_HEADERS_TIMEOUT' },
    'oversized-header': { status: 431, closed: true },
    'smuggle-cl-te': { status: 400, closed: true },
    'smuggle-two-cl': { status: 400, closed: true },
    'smuggle-bad-chunk': { status: 400, closed: true },
  }
  for (const fault of Object.keys(FAULTS)) out.push({ kind: 'fault', fault, adapter: 'php-fpm', start: at, end: (at += 50), status: null, ...good[fault] })
  return out
}

const OPTS = { warmupMs: 20_000 }
const checks = (r: ReturnType<typeof evaluate>): string[] => r.violations.map((v) => v.check)

t.test('evaluate: clean data passes', async (t) => {
  const r = evaluate(cleanSamples(), cleanResults(), OPTS)
  t.same(r.violations, [])
  t.ok(r.ok)
  t.equal(r.summary.samplesAfterWarmup, 8)
  t.equal(r.summary.normal.ok, ADAPTERS.length)
  t.same(Object.keys(r.summary.faults).sort(), Object.keys(FAULTS).sort())
  t.ok(Object.values(r.summary.faults).every((f) => f.ok === 1 && f.wrong === 0))
})

t.test('evaluate: RSS growth of 60 MiB after warm-up is flagged; 49 MiB is not; growth during warm-up is not', async (t) => {
  const s = cleanSamples()
  s[9].rssKiB = s[2].rssKiB + 60 * MiB
  t.same(checks(evaluate(s, cleanResults(), OPTS)), ['rss-growth'])
  s[9].rssKiB = s[2].rssKiB + 49 * MiB
  t.same(checks(evaluate(s, cleanResults(), OPTS)), [])
  const w = cleanSamples()
  w[0].rssKiB = 10 * MiB // warm-up: from 10 MiB to 70 is start-up, not growth
  t.same(checks(evaluate(w, cleanResults(), OPTS)), [])
})

t.test('evaluate: a descriptor drift of 6 is flagged, 5 is not', async (t) => {
  const s = cleanSamples()
  s[7].fds = s[2].fds + 6
  const r = evaluate(s, cleanResults(), OPTS)
  t.same(checks(r), ['fd-drift'])
  t.equal(r.summary.fdDrift, 6)
  s[7].fds = s[2].fds - 5
  t.same(checks(evaluate(s, cleanResults(), OPTS)), [])
})

t.test('evaluate: a zombie is flagged', async (t) => {
  const s = cleanSamples()
  s[5].zombies = 1
  t.same(checks(evaluate(s, cleanResults(), OPTS)), ['zombies'])
})

t.test('evaluate: a descendant count off is flagged, unless a restart was pending (then counted)', async (t) => {
  const s = cleanSamples()
  s[4].counts = { ...EXPECTED, fcgiwrap: 2 }
  t.same(checks(evaluate(s, cleanResults(), OPTS)), ['descendants'])
  s[4].counts = { ...EXPECTED, node: 2 } // one too many (an orphan) is as wrong as one missing
  t.same(checks(evaluate(s, cleanResults(), OPTS)), ['descendants'])
  s[4].pending = true
  const r = evaluate(s, cleanResults(), OPTS)
  t.same(checks(r), [])
  t.equal(r.summary.samplesExcludedPendingRestart, 1)
  const p = cleanSamples()
  p[6].peers = { ...PEERS, 'uwsgi:uwsgi': 4 }
  t.same(checks(evaluate(p, cleanResults(), OPTS)), ['peer-processes'])
})

t.test('evaluate: a non-fault request with a wrong sha or a 502 is flagged; a casualty of a kill is not', async (t) => {
  const res = cleanResults()
  res[1] = { ...res[1], shaOk: false }
  const r = evaluate(cleanSamples(), res, OPTS)
  t.same(checks(r), ['non-fault'])
  t.match(r.violations[0].message, /wrong sha256/)
  const res2 = cleanResults()
  res2[2] = { ...res2[2], status: 502, code: 'ERR_BACKEND_CLOSED', shaOk: false }
  t.same(checks(evaluate(cleanSamples(), res2, OPTS)), ['non-fault'])
  // the same 502 while the adapter's backend was SIGKILLed: a casualty, reported apart
  const kills = [{ adapter: res2[2].adapter, at: res2[2].start + 10 }]
  const c = evaluate(cleanSamples(), res2, { ...OPTS, kills })
  t.same(checks(c), [])
  t.equal(c.summary.normal.casualties, 1)
  t.same(c.summary.casualties, { [`${res2[2].adapter} 502 ERR_BACKEND_CLOSED`]: 1 })
  // a kill of another adapter, or before the request started, makes no casualty
  t.same(checks(evaluate(cleanSamples(), res2, { ...OPTS, kills: [{ adapter: 'other', at: res2[2].start + 10 }] })), ['non-fault'])
  t.same(checks(evaluate(cleanSamples(), res2, { ...OPTS, kills: [{ adapter: res2[2].adapter, at: res2[2].start - 1 }] })), ['non-fault'])
})

t.test('evaluate: each fault kind with a wrong outcome is flagged', async (t) => {
  const wrong: Record<string, Partial<SoakResult>> = {
    'abort-upload': { status: 502 },
    'abort-download': { status: 502, bytes: 0 },
    kill: { restoredMs: null, error: 'not replaced within 30 s' },
    slow: { status: 502, code: 'ERR_BACKEND_CLOSED' },
    'oversized-header': { status: 200, closed: true },
    'smuggle-cl-te': { status: 400, closed: false },
    'smuggle-two-cl': { status: 200, closed: true },
    'smuggle-bad-chunk': { status: null, closed: false },
  }
  for (const [fault, bad] of Object.entries(wrong)) {
    const res = cleanResults().map((r) => r.fault === fault ? { ...r, ...bad } : r)
    const r = evaluate(cleanSamples(), res, OPTS)
    t.same(checks(r), ['fault-outcome'], fault)
    t.equal(r.summary.faults[fault].wrong, 1, fault)
  }
})

t.test('evaluate: a dead proxy, an uncaught exception, no samples after warm-up', async (t) => {
  const s = cleanSamples()
  s[8].alive = false
  t.same(checks(evaluate(s, cleanResults(), OPTS)), ['proxy-alive'])
  t.same(checks(evaluate(cleanSamples(), cleanResults(), { ...OPTS, uncaught: ['{"level":60,"msg":"uncaughtException"}'] })), ['uncaught'])
  t.same(checks(evaluate(cleanSamples(), cleanResults(), { ...OPTS, proxyExit: { code: 1, signal: null } })), ['uncaught'])
  t.same(checks(evaluate(cleanSamples(), cleanResults(), { warmupMs: 1e9 })), ['samples'])
})

// --- the real thing, short ----------------------------------------------------------------------

interface Report {
  ok: boolean
  violations: Array<{ check: string, message: string }>
  summary: { normal: { total: number, failed: number }, faults: Record<string, { total: number, ok: number }>, byAdapter: Record<string, { normal: number, faults: number }>, samples: number }
}

t.test('a 15 s soak against the real peers: exit 0, every adapter and fault kind exercised, nothing left', { timeout: 110_000 }, async (t) => {
  const missing = missingPeers()
  if (missing.length > 0) {
    if (process.env.CI === 'true') t.fail(`soak peers missing in CI: ${missing.join('; ')}`)
    else t.plan(0, missing.join('; '))
    return
  }
  t.equal(await ensureDist(), 0, 'dist built')
  const r = await runNode(['bench/soak.mjs', '--minutes', '0.25', '--rate', '20', '--sample-ms', '2000', '--json'], { cwd: repo })
  const dir = /temp dir (\S+)/.exec(r.stderr)?.[1]
  let report: Report | null = null
  try { report = JSON.parse(r.stdout) as Report } catch { t.fail(`no JSON report on stdout:\n${r.stdout.slice(0, 2000)}\n${r.stderr.slice(-3000)}`) }
  t.equal(r.code, 0, `exit 0; violations: ${JSON.stringify(report?.violations ?? r.stderr.slice(-3000))}`)
  if (report === null) return
  t.same(report.violations, [])
  t.ok(report.ok)
  t.ok(report.summary.samples >= 3, `${report.summary.samples} samples`)
  for (const ad of ADAPTERS) t.ok((report.summary.byAdapter[ad.id]?.normal ?? 0) > 0, `${ad.id} got normal requests`)
  for (const kind of Object.keys(FAULTS)) t.ok((report.summary.faults[kind]?.total ?? 0) > 0, `fault ${kind} exercised`)
  t.equal(report.summary.normal.failed, 0)
  t.ok(dir, 'the soak named its temp dir')
  if (dir !== undefined) {
    t.notOk(existsSync(dir), 'temp dir (with its sockets) removed')
    t.same(benchLeftovers(dir), [], 'no process of the soak left')
  }
})
