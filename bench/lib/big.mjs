/**
 * --big: a large upload and a large download (1 GiB by default) through every proxycore adapter —
 * HTTP (node:http backend), FastCGI (php-fpm, php-cgi), SCGI (uWSGI) and CGI (sh script) — sha256
 * checked end to end, proxy RSS growth measured. One fresh proxycore per backend.
 *
 * Uploads carry Content-Length (never chunked): HTTP streams the body from the client socket to
 * the backend; the CGI family reads it whole first (requestBuffering, the default: an unlinked
 * temp file past 64 KiB) and then sends it. The backend answers with the sha256 of what it read;
 * the bench compares it with the digest of the stream it sent (lib/gen.mjs). Downloads are a
 * deterministic stream whose digest the bench computes itself (lib/gen.mjs or lib/seq.mjs).
 */
import { request } from 'node:http'
import { createHash } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { genSha256, genStream } from './gen.mjs'
import { seqSha256 } from './seq.mjs'
import { sampleRss, treeRssKiB } from './proc.mjs'
import { startProxycore } from './scenarios.mjs'
import { BIG_BACKENDS } from './big-backends.mjs'
import { runRecycle } from './recycle.mjs'

/** The target: proxy RSS grows by less than this during one transfer, and sha256 is intact. */
export const BIG_GROWTH_TARGET_MIB = 32

/** "1073741824", "64MiB", "1GiB", "512k" → bytes. */
export function parseBigSize (s) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?\s*$/i.exec(String(s))
  if (!m) throw new Error(`--big-size: not a size: ${s}`)
  return Math.round(Number(m[1]) * 1024 ** ' kmg'.indexOf((m[2] || ' ').toLowerCase()))
}

/**
 * One request on a fresh connection. `size` !== null sends that many lib/gen.mjs bytes with
 * Content-Length. Resolves { status, bytes, sha256, text } once the response ended; rejects on a
 * socket error, an early close, or after `timeoutMs`.
 */
function exchange (port, method, path, { size = null, timeoutMs }) {
  return new Promise((resolve, reject) => {
    let done = false
    let timer = null
    const finish = (err, v) => {
      if (done) return
      done = true
      clearTimeout(timer)
      if (err) { r.destroy(); reject(err) } else resolve(v)
    }
    const headers = size === null ? {} : { 'content-type': 'application/octet-stream', 'content-length': String(size) }
    const r = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const h = createHash('sha256')
      let bytes = 0
      let text = ''
      res.on('data', (c) => { bytes += c.length; h.update(c); if (text.length < 4096) text += c.toString('latin1') })
      res.on('end', () => finish(null, { status: res.statusCode, bytes, sha256: h.digest('hex'), text }))
      res.on('error', (e) => finish(e))
      res.on('close', () => { if (!res.complete) finish(new Error(`response closed after ${bytes} bytes (status ${res.statusCode})`)) })
    })
    timer = setTimeout(() => finish(new Error(`no complete response within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs)
    r.on('error', (e) => finish(e))
    if (size === null) r.end()
    // An upload the proxy refuses midway errors here; the response (413, 502…) explains it better,
    // so give it a moment before the socket error wins.
    else pipeline(genStream(size), r).catch((e) => { setTimeout(() => finish(e), 1000).unref() })
  })
}

const expectedCache = new Map()
function expected (pattern, size) {
  const k = `${pattern}:${size}`
  if (!expectedCache.has(k)) expectedCache.set(k, pattern === 'seq' ? seqSha256(size) : genSha256(size))
  return expectedCache.get(k)
}

/** Did `r` (an exchange result) carry `size` bytes of `pattern` intact? null if so, else why not. */
function verdict (direction, pattern, size, r) {
  if (direction === 'upload') {
    const [hash, n] = r.text.trim().split(/\s+/)
    const good = r.status === 200 && hash === expected('gen', size) && (n === undefined || Number(n) === size)
    if (good) return null
    return r.status !== 200 ? `status ${r.status}: ${r.text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 120)}` : `backend read ${n ?? '?'} bytes, sha256 ${hash === expected('gen', size) ? 'ok' : 'MISMATCH'}`
  }
  const good = r.status === 200 && r.bytes === size && r.sha256 === expected(pattern, size)
  if (good) return null
  return r.status !== 200 ? `status ${r.status}: ${r.text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 120)}` : `${r.bytes} bytes, sha256 ${r.sha256 === expected(pattern, size) ? 'ok' : 'MISMATCH'}`
}

const tail = (p) => p.log().trim().split('\n').slice(-2).join(' | ').slice(0, 200)

/**
 * The tree's RSS once it has settled: the median of 10 samples 100 ms apart. A single read right
 * after the warm-up caught V8's optimizing compiler mid-flight (tens of MiB for a few tens of ms)
 * in some runs and not in others, which moved "growth" by ±10 MiB between identical runs.
 */
async function settledRssKiB (pid, exclude, preExec) {
  const samples = []
  for (let i = 0; i < 10; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    samples.push(treeRssKiB(pid, exclude, preExec))
  }
  samples.sort((a, b) => a - b)
  return samples[5]
}

/**
 * Returns { date, bytes, upload: 'content-length', targetMiB, rows }, one row per backend ×
 * direction: { backend, adapter, label, direction, bytes, pattern, ok, error, seconds,
 * rssBeforeKiB, rssMaxKiB } or, when the backend could not run, { …, skip: reason }.
 * `only`: backend ids to run (default all).
 */
export async function runBig ({ ctx, size, log, only = null }) {
  log(`\n## Memory: ${size} B upload and download through every proxycore adapter`)
  const date = new Date().toISOString()
  const rows = []
  // 60 s plus 4 MiB/s: a transfer slower than that is a failure, not a measurement.
  const timeoutMs = 60_000 + size / (4 * 1048576) * 1000
  for (const be of BIG_BACKENDS) {
    if (only && !only.includes(be.id)) continue
    const base = { backend: be.id, adapter: be.adapter, label: be.label, bytes: size }
    const skipAll = (reason) => {
      for (const direction of ['upload', 'download']) rows.push({ ...base, direction, skip: reason })
      log(`  ${be.id}: not measured — ${reason}`)
    }
    const why = ctx.adapters.includes(be.adapter) ? be.need() : `proxycore has no \`${be.adapter}\` adapter`
    if (why) { skipAll(why); continue }
    const dir = join(ctx.tmp, `big-${be.id}`)
    mkdirSync(dir, { recursive: true })
    let setup = null
    let pc = null
    try {
      setup = await be.start(ctx, dir)
      pc = await startProxycore(ctx, `proxycore-big-${be.id}`, setup.config)
    } catch (err) {
      for (const p of [pc, ...(setup?.procs ?? [])]) await p?.stop()
      skipAll(`could not start: ${String(err.message).split('\n')[0]}`)
      continue
    }
    const procs = [pc, ...setup.procs]
    try {
      // Warm the process (JIT, pools, first spawn) so "before" is a steady state, and check the
      // path end to end on small bodies first: a broken backend fails in a second, not in minutes.
      let warm = null
      for (let i = 0; i < 20 && warm === null; i++) {
        const n = 65536 + i
        warm = verdict('download', setup.pattern, n, await exchange(pc.port, 'GET', setup.download(n), { timeoutMs: 10_000 }).catch((e) => ({ status: 0, text: e.message })))
      }
      for (let i = 0; i < 3 && warm === null; i++) {
        const n = 262144 + i
        warm = verdict('upload', setup.pattern, n, await exchange(pc.port, 'POST', setup.upload, { size: n, timeoutMs: 10_000 }).catch((e) => ({ status: 0, text: e.message })))
      }
      if (warm !== null) {
        const why = `small-body check failed: ${warm}; proxycore: ${tail(pc)}${setup.procs[0] ? `; ${setup.procs[0].name}: ${tail(setup.procs[0])}` : ''}`
        for (const direction of ['upload', 'download']) rows.push({ ...base, direction, pattern: setup.pattern, ok: false, error: why, seconds: 0, rssBeforeKiB: 0, rssMaxKiB: 0 })
        log(`  ${be.id}: ${why}`)
        continue
      }
      for (const direction of ['upload', 'download']) {
        expected(direction === 'upload' ? 'gen' : setup.pattern, size) // digest first, outside the timed part
        const before = await settledRssKiB(pc.pid, setup.exclude, setup.preExec)
        const rss = sampleRss([{ pid: pc.pid, exclude: setup.exclude, preExec: setup.preExec }], 50)
        const t0 = process.hrtime.bigint()
        let error = null
        let status = 0
        try {
          const r = direction === 'upload'
            ? await exchange(pc.port, 'POST', setup.upload, { size, timeoutMs })
            : await exchange(pc.port, 'GET', setup.download(size), { timeoutMs })
          status = r.status
          error = verdict(direction, setup.pattern, size, r)
        } catch (err) { error = err.message }
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9
        const max = rss.stop()
        if (pc.child.exitCode !== null || pc.child.signalCode !== null) error = `${error ?? ''} proxycore exited (${pc.child.exitCode ?? pc.child.signalCode}): ${tail(pc)}`.trim()
        const row = { ...base, direction, pattern: direction === 'upload' ? 'gen' : setup.pattern, ok: error === null, status, error, seconds, rssBeforeKiB: before, rssMaxKiB: max }
        rows.push(row)
        log(`  ${be.id.padEnd(8)} ${direction.padEnd(8)} ${error === null ? 'sha256 intact' : error}, ${seconds.toFixed(1)} s, ${(size / 1048576 / seconds).toFixed(0)} MiB/s, RSS ${(before / 1024).toFixed(1)} → max ${(max / 1024).toFixed(1)} MiB (growth ${((max - before) / 1024).toFixed(1)} MiB)`)
      }
    } finally {
      for (const p of procs) await p.stop()
    }
  }
  // Recycling under load belongs to the same memory/lifecycle checks (`--big-backends` may name it).
  let recycle = null
  if (!only || only.includes('recycle')) {
    try { recycle = await runRecycle({ ctx, log }) } catch (err) { recycle = { skip: String(err.message).split('\n')[0] } }
  }
  return { date, bytes: size, upload: 'content-length', targetMiB: BIG_GROWTH_TARGET_MIB, rows, recycle }
}
