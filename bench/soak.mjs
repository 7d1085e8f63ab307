/**
 * AC-99, the soak with injected faults (docs/soak.md): `npm run soak -- [--minutes 20] [--rate 10]
 * [--fault-ratio 0.1] [--sample-ms 10000] [--json] [--write-docs]`.
 *
 * proxycore (`node dist/cli/main.js serve`) in front of php-fpm, php-cgi, fcgiwrap, a shell CGI,
 * uWSGI (SCGI) and a Node HTTP backend, under an open-loop load of checked requests with a share of
 * faults; proxycore's RSS, descriptors and process tree sampled every --sample-ms. Exit 0 only
 * when every expectation held (bench/lib/soak-check.mjs), else 1 with each violation named.
 */
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { genSha256 } from './lib/gen.mjs'
import { seqSha256 } from './lib/seq.mjs'
import { killAll, sleep } from './lib/proc.mjs'
import { evaluate, FAULTS } from './lib/soak-check.mjs'
import { countByComm, descendants, fdCount, fdKinds, isAlive, procTable, processesNaming, rssKiB } from './lib/soak-proc.mjs'
import { ADAPTERS, CLI, NODE_COMM, REPO, SPAWNED, TRANSIENT, missingPeers, startWorld } from './lib/soak-setup.mjs'

// --- options --------------------------------------------------------------------------------

function parseArgs (argv) {
  const o = { minutes: 20, rate: 10, faultRatio: 0.1, sampleMs: 10_000, json: false, writeDocs: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const num = (name) => {
      const raw = a.includes('=') ? a.split('=')[1] : argv[++i]
      const n = Number(raw)
      if (!Number.isFinite(n) || n < 0) throw new Error(`${name} needs a number ≥ 0, got ${raw}`)
      return n
    }
    if (a.startsWith('--minutes')) o.minutes = num('--minutes')
    else if (a.startsWith('--rate')) o.rate = num('--rate')
    else if (a.startsWith('--fault-ratio')) o.faultRatio = num('--fault-ratio')
    else if (a.startsWith('--sample-ms')) o.sampleMs = num('--sample-ms')
    else if (a === '--json') o.json = true
    else if (a === '--write-docs') o.writeDocs = true
    else throw new Error(`unknown option ${a} (--minutes N --rate R --fault-ratio F --sample-ms MS --json --write-docs)`)
  }
  if (o.rate <= 0) throw new Error('--rate must be > 0')
  if (o.faultRatio > 1) throw new Error('--fault-ratio is a share: 0 to 1')
  if (o.sampleMs < 200) throw new Error('--sample-ms must be ≥ 200')
  return o
}

// --- requests -------------------------------------------------------------------------------

const SIZES = [0, 100, 4096, 65536, 262144]
const BODIES = new Map(SIZES.map((n) => { const b = randomBytes(n); return [n, { body: b, sha: createHash('sha256').update(b).digest('hex') }] }))
const GET_SHA = { gen: new Map(SIZES.map((n) => [n, genSha256(n)])), seq: new Map(SIZES.map((n) => [n, seqSha256(n)])) }
const DOWNLOAD_ABORT_SIZE = 4 * 1024 * 1024
const CLIENT_TIMEOUT_MS = 60_000

/** A small deterministic PRNG (mulberry32): the same run mixes the same requests. */
function prng (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const pathOf = (ad, q) => `${ad.prefix}${ad.script}${q === undefined ? '' : `?${q}`}`
const codeOf = (text) => /\b(ERR_[A-Z0-9_]+)\b/.exec(text)?.[1] ?? null

/** One HTTP exchange on a fresh connection; resolves { status, body, error }. */
function exchange (port, method, path, body, { onResponse } = {}) {
  return new Promise((resolve) => {
    const headers = body ? { 'content-type': 'application/octet-stream', 'content-length': body.length } : {}
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false })
    let done = false
    const finish = (r) => { if (!done) { done = true; clearTimeout(t); resolve(r) } }
    const t = setTimeout(() => { req.destroy(); finish({ status: null, body: null, error: 'client timeout' }) }, CLIENT_TIMEOUT_MS)
    req.on('error', (err) => finish({ status: null, body: null, error: err.code ?? err.message }))
    req.on('response', (res) => {
      if (onResponse) { onResponse(req, res, finish); return }
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('error', (err) => finish({ status: res.statusCode, body: null, error: err.code ?? err.message }))
      res.on('aborted', () => finish({ status: res.statusCode, body: null, error: 'response aborted' }))
      res.on('end', () => finish({ status: res.statusCode, body: Buffer.concat(chunks), error: null }))
    })
    req.end(body)
  })
}

/** Raw bytes over a fresh connection: { status, closed, got } once closed or after timeoutMs. */
function raw (port, data, timeoutMs = 15_000) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let got = ''
    let closed = false
    const t = setTimeout(() => { s.destroy(); done() }, timeoutMs)
    const done = () => {
      clearTimeout(t)
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(got)
      resolve({ status: m ? Number(m[1]) : null, closed, code: codeOf(got), error: m ? null : (got ? 'unparsable answer' : 'no answer') })
    }
    s.on('data', (c) => { if (got.length < 4096) got += c.toString('latin1') })
    s.on('error', () => {})
    s.on('close', () => { closed = true; done() })
    s.write(data)
  })
}

// --- the run ----------------------------------------------------------------------------------

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  const say = (msg) => process.stderr.write(`${msg}\n`)
  if (!existsSync(CLI)) throw new Error(`${CLI} missing: run \`npm run build\` (npm run soak does)`)
  const missing = missingPeers()
  if (missing.length) {
    const report = { ok: false, skipped: missing, violations: missing.map((m) => ({ check: 'peers', message: m })) }
    if (opts.json) process.stdout.write(`${JSON.stringify(report)}\n`)
    say(`soak: cannot run: ${missing.join('; ')}`)
    return 1
  }
  const durationMs = Math.round(opts.minutes * 60_000)
  const warmupMs = Math.min(60_000, Math.round(durationMs / 5))
  const total = Math.round(durationMs / 1000 * opts.rate)
  const interval = 1000 / opts.rate
  const dir = mkdtempSync(join(tmpdir(), 'proxycore-soak-'))
  let cleaned = false
  const cleanup = () => { if (!cleaned) { cleaned = true; killAll(); rmSync(dir, { recursive: true, force: true }) } }
  process.on('exit', cleanup)

  say(`soak: ${opts.minutes} min at ${opts.rate} req/s (${total} requests, ${Math.round(opts.faultRatio * 100)} % faults), samples every ${opts.sampleMs} ms, warm-up ${warmupMs} ms; temp dir ${dir}`)
  const world = await startWorld(dir)
  const { proxy, port, logLines } = world
  const proxyPid = proxy.pid
  let proxyExit = null
  let stopping = false
  world.exited.then((e) => { if (!stopping) proxyExit = e })

  // Preflight: every adapter answers a checked GET and POST before anything is measured (this
  // also starts the CGI fork server, which proxycore starts on the first CGI request).
  const results = []
  for (const ad of ADAPTERS) {
    for (const method of ['GET', 'POST']) {
      const r = await normalRequest(port, ad, method, 4096, 0)
      if (r.status !== 200 || !r.shaOk) throw new Error(`preflight ${method} ${pathOf(ad)} failed: ${r.status} ${r.code ?? ''} ${r.error ?? ''}`)
    }
  }

  // What proxycore should keep running: its socket spawns (SPAWNED), plus the helpers it runs for
  // itself (the CGI fork server), as found now; php-fpm and uWSGI, as found now.
  const table0 = procTable()
  const expected = { ...SPAWNED }
  for (const p of descendants(proxyPid, table0)) {
    if (p.ppid === proxyPid && !(p.comm in SPAWNED) && !TRANSIENT.test(p.comm)) expected[p.comm] = (expected[p.comm] ?? 0) + 1
  }
  const peerCounts = (table) => ({
    ...prefixKeys('php-fpm:', countByComm(world.fpm.pid, /^$/, table, true)),
    ...prefixKeys('uwsgi:', countByComm(world.uwsgi.pid, /^$/, table, true)),
  })
  const peersExpected = peerCounts(table0)
  const counts0 = countByComm(proxyPid, TRANSIENT, table0)
  say(`soak: proxycore pid ${proxyPid} on port ${port}; backends ${fmtCounts(counts0)} (expected ${fmtCounts(expected)}); peers ${fmtCounts(peersExpected)}`)

  // --- faults ---
  const kills = []
  const killLog = []
  const pending = new Set()
  const rand = prng(99)
  const faultKinds = Object.keys(FAULTS)
  const kindTurn = new Map()
  let faultTurn = 0
  // each kind takes turns over the adapters, starting from a different one per kind
  const nextAdapter = (kind) => { const i = kindTurn.get(kind) ?? faultKinds.indexOf(kind); kindTurn.set(kind, i + 1); return ADAPTERS[i % ADAPTERS.length] }
  const KILL_TARGETS = [
    { id: 'php-cgi master', adapter: 'php-cgi', byProxy: true, find: (tb) => tb.filter((p) => p.ppid === proxyPid && p.comm === 'php-cgi') },
    { id: 'php-fpm worker', adapter: 'php-fpm', find: (tb) => tb.filter((p) => p.ppid === world.fpm.pid && p.state !== 'Z') },
    { id: 'fcgiwrap', adapter: 'fcgiwrap', byProxy: true, find: (tb) => tb.filter((p) => p.ppid === proxyPid && p.comm === 'fcgiwrap') },
    { id: 'uwsgi worker', adapter: 'uwsgi-scgi', find: (tb) => tb.filter((p) => p.ppid === world.uwsgi.pid && p.state !== 'Z') },
    { id: 'node backend', adapter: 'node-http', byProxy: true, find: (tb) => tb.filter((p) => p.ppid === proxyPid && p.comm === NODE_COMM) },
    { id: 'php-cgi worker', adapter: 'php-cgi', byProxy: true, find: (tb) => { const m = tb.find((p) => p.ppid === proxyPid && p.comm === 'php-cgi'); return m ? tb.filter((p) => p.ppid === m.pid && p.state !== 'Z') : [] } },
  ]
  let killTurn = 0

  async function kill (start) {
    const target = KILL_TARGETS[killTurn++ % KILL_TARGETS.length]
    const tb = procTable()
    const cands = target.find(tb)
    const r = { kind: 'fault', fault: 'kill', adapter: target.adapter, target: target.id, start, end: start, status: null, restoredMs: null }
    if (cands.length === 0) { r.error = `no ${target.id} process found`; r.end = now(); return r }
    const victim = cands[Math.floor(rand() * cands.length)]
    pending.add(r)
    const at = now()
    try { process.kill(victim.pid, 'SIGKILL') } catch (err) { r.error = `kill ${victim.pid}: ${err.code}` }
    kills.push({ adapter: target.adapter, at, target: target.id, pid: victim.pid })
    // Back when the victim is gone (reaped) and every count is what it was.
    const deadline = at + 30_000
    for (;;) {
      const t2 = procTable()
      const gone = !t2.some((p) => p.pid === victim.pid)
      const back = target.byProxy ? sameCounts(countByComm(proxyPid, TRANSIENT, t2), expected) : sameCounts(peerCounts(t2), peersExpected)
      if (gone && back) { r.restoredMs = Math.round(now() - at); break }
      if (now() > deadline || proxyExit) { r.error = `not replaced within 30 s (${target.byProxy ? fmtCounts(countByComm(proxyPid, TRANSIENT, t2)) : fmtCounts(peerCounts(t2))})`; break }
      await sleep(50)
    }
    pending.delete(r)
    r.end = now()
    killLog.push({ target: target.id, pid: victim.pid, at: Math.round(at - loadStart), restoredMs: r.restoredMs })
    return r
  }

  async function fault (start) {
    let kind = faultKinds[faultTurn++ % faultKinds.length]
    if (kind === 'kill' && pending.size > 0) kind = faultKinds[faultTurn++ % faultKinds.length]
    if (kind === 'kill') return kill(start)
    const ad = nextAdapter(kind)
    const base = { kind: 'fault', fault: kind, adapter: ad.id, start }
    const path = pathOf(ad)
    let r
    switch (kind) {
      case 'abort-upload': {
        const body = BODIES.get(262144).body
        r = await new Promise((resolve) => {
          const req = request({ host: '127.0.0.1', port, method: 'POST', path, agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': body.length } })
          let status = null
          req.on('response', (res) => { status = res.statusCode; res.resume() })
          req.on('error', () => {})
          req.on('close', () => resolve({ status, error: null }))
          req.write(body.subarray(0, body.length / 2), () => setImmediate(() => req.destroy()))
        })
        break
      }
      case 'abort-download': {
        const q = String(DOWNLOAD_ABORT_SIZE)
        r = await exchange(port, 'GET', pathOf(ad, q), null, {
          onResponse: (req, res, finish) => {
            res.once('data', (c) => { req.destroy(); finish({ status: res.statusCode, bytes: c.length, error: null }) })
            res.on('error', () => {})
            res.once('end', () => finish({ status: res.statusCode, bytes: 0, error: 'the download ended before it was cut' }))
          },
        })
        break
      }
      case 'slow': {
        const x = await exchange(port, 'GET', pathOf(ad, 'slow'), null)
        r = { status: x.status, code: x.body ? codeOf(x.body.toString('latin1')) : null, error: x.error }
        break
      }
      case 'oversized-header':
        r = await raw(port, `GET ${pathOf(ad, '100')} HTTP/1.1\r\nHost: soak\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)
        break
      case 'smuggle-cl-te':
        r = await raw(port, `POST ${path} HTTP/1.1\r\nHost: soak\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET ${pathOf(ad, '100')} HTTP/1.1\r\nHost: soak\r\n\r\n`)
        break
      case 'smuggle-two-cl':
        r = await raw(port, `POST ${path} HTTP/1.1\r\nHost: soak\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`)
        break
      case 'smuggle-bad-chunk':
        r = await raw(port, `POST ${path} HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n`)
        break
    }
    return { ...base, ...r, end: now() }
  }

  // --- load and samples ---
  const samples = []
  let inflight = 0
  let loadStart = 0
  let paused = 0 // ms of load time spent in sample pauses
  const now = () => performance.now()
  const loadTime = () => now() - loadStart - paused

  async function takeSample (t, final = false) {
    const tb = procTable()
    const desc = descendants(proxyPid, tb)
    let zombies = desc.filter((p) => p.state === 'Z').map((p) => p.pid)
    // A process that exited a moment ago is a zombie until its parent reaps it: only those still
    // zombies 2 s later count.
    if (zombies.length) {
      const deadline = now() + 2000
      while (zombies.length && now() < deadline) {
        await sleep(50)
        const still = new Set(procTable().filter((p) => p.state === 'Z').map((p) => p.pid))
        zombies = zombies.filter((z) => still.has(z))
      }
    }
    const s = {
      t, final, alive: proxyExit === null && isAlive(proxyPid), rssKiB: rssKiB(proxyPid), fds: fdCount(proxyPid),
      zombies: zombies.length, fdKinds: fdKinds(proxyPid), counts: countByComm(proxyPid, TRANSIENT, tb), expected,
      peers: peerCounts(tb), peersExpected, pending: pending.size > 0, inflight,
    }
    samples.push(s)
    if (!opts.json || process.env.SOAK_VERBOSE) say(`sample t=${(t / 1000).toFixed(1)}s rss=${(s.rssKiB / 1024).toFixed(1)}MiB fds=${s.fds} (${fmtCounts(s.fdKinds)}) zombies=${s.zombies} backends=${fmtCounts(s.counts)}${s.pending ? ' (restart pending)' : ''} inflight=${inflight} done=${results.length}`)
  }

  async function quiesce (limitMs) {
    const deadline = now() + limitMs
    while (inflight > 0 && now() < deadline) await sleep(10)
  }

  const track = (p) => { inflight++; return p.then((r) => { results.push(r); return r }, (err) => { results.push({ kind: 'fault', fault: 'internal', adapter: '-', status: null, error: String(err?.stack ?? err) }) }).finally(() => { inflight-- }) }
  const mix = prng(20)
  let faultsSoFar = 0
  loadStart = now()
  const startedAt = new Date().toISOString()
  let nextSample = opts.sampleMs
  const all = []
  for (let i = 0; i < total && proxyExit === null; i++) {
    const due = i * interval
    while (loadTime() < due) await sleep(Math.max(1, Math.min(50, due - loadTime())))
    if (loadTime() >= nextSample) {
      const p0 = now()
      const t = Math.round(loadTime())
      await quiesce(10_000)
      await takeSample(t)
      paused += now() - p0
      nextSample += opts.sampleMs
    }
    const start = now()
    const wantFaults = Math.floor((i + 1) * opts.faultRatio)
    if (wantFaults > faultsSoFar) {
      faultsSoFar = wantFaults
      all.push(track(fault(start)))
    } else {
      const ad = ADAPTERS[Math.floor(mix() * ADAPTERS.length)]
      const method = mix() < 0.5 ? 'GET' : 'POST'
      const size = SIZES[Math.floor(mix() * SIZES.length)]
      all.push(track(normalRequest(port, ad, method, size, start)))
    }
  }
  // the end: every request answered, every restart done, one last quiet sample
  await Promise.race([Promise.all(all), unrefSleep(CLIENT_TIMEOUT_MS + 35_000)])
  const restDeadline = now() + 35_000
  while (pending.size > 0 && now() < restDeadline) await sleep(50)
  const loadMs = Math.round(loadTime())
  await takeSample(loadMs, true)

  // uncaught exceptions: a fatal line, any line naming an uncaught exception or unhandled
  // rejection, or a stack trace printed outside the JSON log
  const uncaught = logLines.filter((l) => (l.level ?? 0) >= 60 || /uncaught|unhandled/i.test(JSON.stringify(l)) || (l.raw && /Error|at .*:\d+:\d+/.test(l.msg))).map((l) => JSON.stringify(l))

  // stop: SIGTERM, a clean exit 0, then nothing of the run left
  stopping = true
  const stopped = proxyExit === null
  let stopExit = null
  if (stopped) {
    try { process.kill(proxyPid, 'SIGTERM') } catch {}
    stopExit = await Promise.race([world.exited, unrefSleep(30_000).then(() => null)])
  }
  await world.fpm.stop()
  await world.uwsgi.stop()
  await proxy.stop('SIGKILL')
  const leftDeadline = now() + 10_000
  let leftovers = processesNaming(dir, new Set([process.pid]))
  while (leftovers.length && now() < leftDeadline) { await sleep(50); leftovers = processesNaming(dir, new Set([process.pid])) }
  for (const l of leftovers) { try { process.kill(l.pid, 'SIGKILL') } catch {} }

  const verdict = evaluate(samples, results, { warmupMs, kills, uncaught, proxyExit })
  if (stopped && (stopExit === null || stopExit.code !== 0)) verdict.violations.push({ check: 'stop', message: `proxycore did not stop cleanly on SIGTERM: ${JSON.stringify(stopExit)}` })
  for (const l of leftovers) verdict.violations.push({ check: 'leftovers', message: `process ${l.pid} outlived the soak: ${l.cmd}` })
  verdict.ok = verdict.violations.length === 0
  cleanup()
  const leftTemp = existsSync(dir)
  if (leftTemp) verdict.violations.push({ check: 'leftovers', message: `temp dir ${dir} could not be removed` })

  const report = {
    ok: verdict.ok,
    violations: verdict.violations,
    summary: {
      ...verdict.summary,
      minutes: opts.minutes, rate: opts.rate, faultRatio: opts.faultRatio, sampleMs: opts.sampleMs, warmupMs,
      requests: results.length, loadMs, achievedRate: Number((results.length / (loadMs / 1000)).toFixed(2)),
      expectedBackends: expected, expectedPeers: peersExpected, killLog,
      node: process.version, startedAt,
    },
    samples,
  }
  if (opts.writeDocs) writeDocs(report)
  if (opts.json) process.stdout.write(`${JSON.stringify(report)}\n`)
  else process.stdout.write(`${text(report)}\n`)
  return report.ok ? 0 : 1
}

/** A delay that does not keep the process alive (the bound of a race). */
function unrefSleep (ms) { return new Promise((resolve) => setTimeout(resolve, ms).unref()) }
function prefixKeys (p, o) { return Object.fromEntries(Object.entries(o).map(([k, v]) => [p + k, v])) }
function sameCounts (a, b) {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)])
  for (const k of keys) if ((a[k] ?? 0) !== (b[k] ?? 0)) return false
  return true
}
function fmtCounts (c) { return Object.entries(c).map(([k, v]) => `${k}×${v}`).join(' ') }

async function normalRequest (port, ad, method, size, start) {
  const q = method === 'GET' ? String(size) : undefined
  const url = pathOf(ad, q)
  const b = method === 'POST' ? BODIES.get(size) : null
  const x = await exchange(port, method, url, b ? b.body : null)
  const r = { kind: 'normal', adapter: ad.id, method, url, size, start, end: performance.now(), status: x.status, error: x.error, code: null, shaOk: false }
  if (x.body === null) return r
  if (x.status !== 200) { r.code = codeOf(x.body.toString('latin1')); return r }
  if (method === 'GET') r.shaOk = createHash('sha256').update(x.body).digest('hex') === GET_SHA[ad.pattern].get(size)
  else r.shaOk = x.body.toString('latin1').split(/\s/)[0] === b.sha
  return r
}

// --- output -----------------------------------------------------------------------------------

const mib = (k) => k === null ? '-' : (k / 1024).toFixed(1)

function text (report) {
  const s = report.summary
  const lines = []
  lines.push(`soak: ${report.ok ? 'PASS' : 'FAIL'} — ${s.requests} requests in ${(s.loadMs / 60000).toFixed(1)} min of load (${s.achievedRate} req/s), ${s.samples} samples`)
  lines.push(`  RSS after warm-up: ${mib(s.rssBaseKiB)} → max ${mib(s.rssMaxKiB)}, last ${mib(s.rssLastKiB)} MiB (growth ${mib(s.rssGrowthKiB)} MiB)`)
  lines.push(`  fds after warm-up: base ${s.fdBase}, min ${s.fdMin}, max ${s.fdMax} (largest drift ${s.fdDrift})`)
  lines.push(`  normal: ${s.normal.ok}/${s.normal.total} ok, ${s.normal.casualties} casualties of kills, ${s.normal.failed} failed`)
  for (const [k, n] of Object.entries(s.casualties)) lines.push(`    casualty ${k}: ${n}`)
  for (const [k, f] of Object.entries(s.faults)) lines.push(`  fault ${k}: ${f.ok}/${f.total} as expected`)
  lines.push(`  samples left out of the process checks while a restart was pending: ${s.samplesExcludedPendingRestart}`)
  for (const v of report.violations) lines.push(`  VIOLATION ${v.check}: ${v.message}`)
  return lines.join('\n')
}

export const DOC_START = '<!-- soak:results:start -->'
export const DOC_END = '<!-- soak:results:end -->'

function docBlock (report) {
  const s = report.summary
  const rows = [
    ['when', `${s.startedAt.slice(0, 16).replace('T', ' ')} UTC, Node ${s.node}, ${s.minutes} min at ${s.rate} req/s, ${Math.round(s.faultRatio * 100)} % faults, a sample every ${s.sampleMs / 1000} s`],
    ['verdict', report.ok ? 'PASS (every expectation held)' : `FAIL: ${report.violations.length} violation(s)`],
    ['requests', `${s.requests} (${s.achievedRate} req/s over ${(s.loadMs / 60000).toFixed(1)} min of load)`],
    ['non-fault requests', `${s.normal.ok} of ${s.normal.total} answered 200 with a matching sha256; ${s.normal.casualties} casualties of kills; ${s.normal.failed} failed`],
    ['casualties (adapter, status, code)', Object.entries(s.casualties).map(([k, n]) => `${k}: ${n}`).join('; ') || 'none'],
    ['faults as expected', Object.entries(s.faults).map(([k, f]) => `${k} ${f.ok}/${f.total}`).join(', ')],
    ['kills, time to replacement', s.killLog.length ? `${s.killLog.length} kills; replaced in ${Math.min(...s.killLog.map((k) => k.restoredMs ?? Infinity))}–${Math.max(...s.killLog.map((k) => k.restoredMs ?? Infinity))} ms` : 'none'],
    ['proxycore RSS after warm-up', `${mib(s.rssBaseKiB)} MiB → max ${mib(s.rssMaxKiB)} MiB, last ${mib(s.rssLastKiB)} MiB (growth ${mib(s.rssGrowthKiB)} MiB, limit < 50)`],
    ['proxycore descriptors after warm-up', `base ${s.fdBase}, min ${s.fdMin}, max ${s.fdMax} (largest drift ${s.fdDrift}, limit ±5)`],
    ['backends expected', `${fmtCounts(s.expectedBackends)}; peers ${fmtCounts(s.expectedPeers)}`],
    ['samples', `${s.samples}, ${s.samplesExcludedPendingRestart} left out of the process checks (restart pending)`],
  ]
  const out = ['| | |', '|---|---|', ...rows.map(([a, b]) => `| ${a} | ${b} |`)]
  if (report.violations.length) {
    out.push('', 'Violations:', '')
    for (const v of report.violations.slice(0, 40)) out.push(`- \`${v.check}\`: ${v.message.replace(/\|/g, '\\|')}`)
    if (report.violations.length > 40) out.push(`- … and ${report.violations.length - 40} more`)
  }
  return out.join('\n')
}

function writeDocs (report) {
  const file = join(REPO, 'docs', 'soak.md')
  const doc = readFileSync(file, 'utf8')
  const a = doc.indexOf(DOC_START)
  const b = doc.indexOf(DOC_END)
  if (a < 0 || b < a) throw new Error(`docs/soak.md has no ${DOC_START} … ${DOC_END} block`)
  writeFileSync(file, `${doc.slice(0, a + DOC_START.length)}\n${docBlock(report)}\n${doc.slice(b)}`)
}

main().then((code) => { process.exitCode = code }, (err) => {
  process.stderr.write(`soak: ${err?.stack ?? err}\n`)
  if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify({ ok: false, violations: [{ check: 'run', message: String(err?.message ?? err) }] })}\n`)
  process.exitCode = 1
})
