/**
 * The soak's verdict (AC-99, docs/soak.md), as pure functions of what the soak recorded, so a test
 * can feed it made-up data and see every check fail.
 *
 * samples: [{ t, alive, rssKiB, fds, zombies, counts, expected, pending, inflight }]
 *   t: ms since the load started; counts/expected: { comm: n } of proxycore's long-lived
 *   descendants (per-request CGI processes left out); zombies: persistent zombies among all of its
 *   descendants; pending: a SIGKILLed backend was not back yet (the sample is left out of the
 *   process checks, and counted); peers/peersExpected: the same for php-fpm and uWSGI.
 * results: [{ kind: 'normal' | 'fault', fault, adapter, start, end, status, code, shaOk, closed,
 *   bytes, restoredMs, error }]
 * opts: { warmupMs, rssLimitKiB, fdTolerance, kills: [{ adapter, at }], uncaught: [line],
 *   proxyExit: { code, signal } | null (an exit before the soak stopped it) }
 */

export const DEFAULTS = { rssLimitKiB: 50 * 1024, fdTolerance: 5 }

/** What each fault must produce: the documented answer (docs/reference/errors.md, docs/soak.md). */
export const FAULTS = {
  'abort-upload': { expect: 'no response; the client cut its upload half way', ok: (r) => r.status === null },
  'abort-download': { expect: '200 head and some body, then the client cut the download', ok: (r) => r.status === 200 && r.bytes > 0 },
  kill: { expect: 'the SIGKILLed process is replaced (by proxycore, php-fpm or the uWSGI master) within 30 s', ok: (r) => typeof r.restoredMs === 'number' },
  slow: { expect: '504 ERR_HEADERS_TIMEOUT (timeouts.headers 3 s, backend answers after 6 s)', ok: (r) => r.status === 504 && r.code === 'ERR_HEADERS_TIMEOUT' },
  'oversized-header': { expect: '431 and the connection closed (a 20 KiB header, over node maxHeaderSize 16 KiB)', ok: (r) => r.status === 431 && r.closed === true },
  'smuggle-cl-te': { expect: '400 and the connection closed (Content-Length with Transfer-Encoding)', ok: (r) => r.status === 400 && r.closed === true },
  'smuggle-two-cl': { expect: '400 and the connection closed (two different Content-Length)', ok: (r) => r.status === 400 && r.closed === true },
  'smuggle-bad-chunk': { expect: '400 and the connection closed (chunk size "zz")', ok: (r) => r.status === 400 && r.closed === true },
}

/** A request is a casualty of a kill when its adapter's backend was SIGKILLed while it was in flight. */
export function isCasualty (r, kills) {
  return kills.some((k) => k.adapter === r.adapter && k.at >= r.start && k.at <= r.end)
}

const sameCounts = (a, b) => {
  const keys = new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})])
  for (const k of keys) if ((a?.[k] ?? 0) !== (b?.[k] ?? 0)) return false
  return true
}
const fmt = (c) => Object.entries(c ?? {}).map(([k, v]) => `${k}=${v}`).join(' ')

/** Every check; returns { ok, violations: [{ check, message }], summary }. */
export function evaluate (samples, results, opts = {}) {
  const o = { ...DEFAULTS, warmupMs: 0, kills: [], uncaught: [], proxyExit: null, ...opts }
  const violations = []
  const v = (check, message) => violations.push({ check, message })

  // --- samples ---
  const after = samples.filter((s) => s.t >= o.warmupMs && s.alive)
  for (const s of samples) if (!s.alive) v('proxy-alive', `proxycore was not running at the sample at ${s.t} ms`)
  let rssGrowthKiB = null
  let fdDrift = null
  let base = null
  if (after.length === 0) v('samples', `no sample after the ${o.warmupMs} ms warm-up: nothing to judge growth by`)
  else {
    base = after[0]
    rssGrowthKiB = Math.max(...after.map((s) => s.rssKiB)) - base.rssKiB
    if (rssGrowthKiB >= o.rssLimitKiB) v('rss-growth', `proxycore RSS grew ${(rssGrowthKiB / 1024).toFixed(1)} MiB after warm-up (from ${(base.rssKiB / 1024).toFixed(1)} MiB; limit < ${o.rssLimitKiB / 1024} MiB)`)
    fdDrift = 0
    for (const s of after) {
      const d = s.fds - base.fds
      if (Math.abs(d) > Math.abs(fdDrift)) fdDrift = d
      if (Math.abs(d) > o.fdTolerance) v('fd-drift', `proxycore had ${s.fds} fds at ${s.t} ms, ${d > 0 ? '+' : ''}${d} from ${base.fds} after warm-up (tolerance ±${o.fdTolerance})`)
    }
  }
  let excluded = 0
  for (const s of samples) {
    if (!s.alive) continue
    if (s.pending) { excluded++; continue }
    if (s.zombies > 0) v('zombies', `${s.zombies} zombie(s) among proxycore's descendants at ${s.t} ms`)
    if (!sameCounts(s.counts, s.expected)) v('descendants', `proxycore's backends at ${s.t} ms: ${fmt(s.counts)}; expected ${fmt(s.expected)}`)
    if (s.peersExpected && !sameCounts(s.peers, s.peersExpected)) v('peer-processes', `php-fpm/uWSGI processes at ${s.t} ms: ${fmt(s.peers)}; expected ${fmt(s.peersExpected)}`)
  }

  // --- exceptions, exits ---
  for (const line of o.uncaught) v('uncaught', `proxycore logged: ${String(line).slice(0, 300)}`)
  if (o.proxyExit) v('uncaught', `proxycore exited during the soak (code ${o.proxyExit.code}, signal ${o.proxyExit.signal})`)

  // --- requests ---
  const normal = { total: 0, ok: 0, failed: 0, casualties: 0 }
  const casualties = {}
  const faults = {}
  const byAdapter = {}
  for (const r of results) {
    byAdapter[r.adapter] ??= { normal: 0, faults: 0 }
    if (r.kind === 'normal') {
      byAdapter[r.adapter].normal++
      normal.total++
      const good = r.status === 200 && r.shaOk === true
      if (good) { normal.ok++; continue }
      if (isCasualty(r, o.kills)) {
        normal.casualties++
        const key = `${r.adapter} ${r.status ?? '-'} ${r.code ?? r.error ?? ''}`.trim()
        casualties[key] = (casualties[key] ?? 0) + 1
        continue
      }
      normal.failed++
      v('non-fault', `${r.method ?? ''} ${r.url ?? r.adapter} → ${r.status ?? 'no response'}${r.code ? ` ${r.code}` : ''}${r.status === 200 ? ' with a wrong sha256' : ''}${r.error ? ` (${r.error})` : ''}`)
    } else {
      byAdapter[r.adapter].faults++
      const f = (faults[r.fault] ??= { total: 0, ok: 0, wrong: 0 })
      f.total++
      const spec = FAULTS[r.fault]
      if (spec && spec.ok(r)) f.ok++
      else {
        f.wrong++
        v('fault-outcome', `${r.fault} on ${r.adapter}: got ${r.status ?? 'no response'}${r.code ? ` ${r.code}` : ''}${r.closed === false ? ', connection left open' : ''}${r.error ? ` (${r.error})` : ''}; expected ${spec ? spec.expect : 'a known fault kind'}`)
      }
    }
  }
  return {
    ok: violations.length === 0,
    violations,
    summary: {
      samples: samples.length,
      samplesAfterWarmup: after.length,
      samplesExcludedPendingRestart: excluded,
      rssBaseKiB: base?.rssKiB ?? null,
      rssMaxKiB: after.length ? Math.max(...after.map((s) => s.rssKiB)) : null,
      rssLastKiB: after.length ? after[after.length - 1].rssKiB : null,
      rssGrowthKiB,
      fdBase: base?.fds ?? null,
      fdMin: after.length ? Math.min(...after.map((s) => s.fds)) : null,
      fdMax: after.length ? Math.max(...after.map((s) => s.fds)) : null,
      fdDrift,
      normal,
      casualties,
      faults,
      byAdapter,
      kills: o.kills.length,
    },
  }
}
