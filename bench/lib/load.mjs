/**
 * Load generation: wrk when installed (`-t1 -c32 -dNs --latency`), else autocannon (if it can be
 * imported). Both give the same result shape.
 */
import { existsSync } from 'node:fs'
import { run } from './proc.mjs'

export function findWrk () {
  for (const d of (process.env.PATH ?? '').split(':')) if (d && existsSync(`${d}/wrk`)) return `${d}/wrk`
  return null
}

const UNIT = { us: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }
const toMs = (v, u) => Number(v) * UNIT[u]
const SIZE = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 }

/**
 * Parse wrk's stdout (with --latency). Returns
 * { rps, requests, seconds, p50, p90, p99, maxMs, errors, non2xx, transferPerSec, tool: 'wrk' } or throws.
 */
export function parseWrk (text) {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text)
  const done = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)/.exec(text)
  if (!rps || !done) throw new Error(`unrecognised wrk output:\n${text}`)
  const pct = (p) => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m|h)`, 'm').exec(text)
    return m ? toMs(m[1], m[2]) : NaN
  }
  const lat = /Latency\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m|h)/.exec(text)
  let errors = 0
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  if (se) errors = se.slice(1).reduce((a, b) => a + Number(b), 0)
  const non = /Non-2xx or 3xx responses: (\d+)/.exec(text)
  const tr = /Transfer\/sec:\s+([\d.]+)(B|KB|MB|GB|TB)/.exec(text)
  return {
    tool: 'wrk',
    rps: Number(rps[1]),
    requests: Number(done[1]),
    seconds: toMs(done[2], done[3]) / 1000,
    p50: pct(50), p90: pct(90), p99: pct(99),
    maxMs: lat ? toMs(lat[1], lat[2]) : NaN,
    errors,
    non2xx: non ? Number(non[1]) : 0,
    transferPerSec: tr ? Number(tr[1]) * SIZE[tr[2]] : NaN,
  }
}

/** Map an autocannon result object to the same shape. */
export function parseAutocannon (r) {
  if (typeof r?.requests?.average !== 'number') throw new Error('unrecognised autocannon result')
  const seconds = r.duration
  return {
    tool: 'autocannon',
    rps: (r.requests.total ?? r.requests.average * seconds) / seconds,
    requests: r.requests.total,
    seconds,
    p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, maxMs: r.latency.max,
    errors: (r.errors ?? 0) + (r.timeouts ?? 0),
    non2xx: r.non2xx ?? 0,
    transferPerSec: r.throughput?.average ?? NaN,
  }
}

let autocannonMod
async function autocannon () {
  if (autocannonMod === undefined) {
    try { autocannonMod = (await import('autocannon')).default } catch { autocannonMod = null }
  }
  return autocannonMod
}

/** Which load tool is usable here, or null with a reason. */
export async function loadTool () {
  const wrk = findWrk()
  if (wrk) return { name: 'wrk', path: wrk }
  if (await autocannon()) return { name: 'autocannon' }
  return null
}

/** Drive `url` for `seconds` with `connections` keep-alive connections. */
export async function load (tool, url, { connections = 32, seconds = 5 } = {}) {
  if (tool.name === 'wrk') {
    const r = await run(tool.path, ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '--latency', url], { timeoutMs: (seconds + 30) * 1000 })
    if (r.code !== 0) throw new Error(`wrk failed (${r.code ?? r.signal}): ${r.stderr}${r.stdout}`)
    return parseWrk(r.stdout)
  }
  const ac = await autocannon()
  const res = await ac({ url, connections, duration: seconds, timeout: 10 })
  return parseAutocannon(res)
}
