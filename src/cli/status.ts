/**
 * `proxycore status [url]`: the gateway's JSON status as a table, like `systemctl status` for the
 * spawns and a one-line-per-route summary.
 */
import type { StatusSnapshot as StatusJson } from '../status/model.js'

function pad (rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n')
}

export function statusTable (j: StatusJson): string {
  const out = [`${j.software}  up ${j.uptimeSeconds}s  in flight ${j.inflight}`, '']
  out.push(pad([
    ['ROUTE', 'PROTOCOL', 'BACKENDS', 'REQUESTS', 'ERRORS', 'DROPPED', 'ACTIVE', 'P99'],
    ...j.routes.map((r) => [r.name, r.protocol, r.spawn ?? `${r.available}/${r.capacity}`, String(r.requests), String(r.errors), String(r.dropped), String(r.active), r.latency.p99Ms === null ? '-' : `${r.latency.p99Ms}ms`]),
  ]))
  if (j.spawns.length > 0) {
    out.push('')
    out.push(pad([
      ['SPAWN', 'STATE', 'PID', 'PROCESS', 'ADDRESS', 'REQUESTS', 'INFLIGHT', 'UPTIME'],
      ...j.spawns.flatMap((s) => {
        const state = s.reason !== null ? `${s.state} (${s.reason})` : s.state
        if (s.processes.length === 0) return [[s.name, state, '-', s.pipeChildren > 0 ? `${s.pipeChildren} cgi` : '-', '-', '-', '-', '-']]
        return s.processes.map((p) => [s.name, state, String(p.pid ?? '-'), p.state, p.address, String(p.requests), String(p.inflight), `${p.uptimeSeconds}s`])
      }),
    ]))
  }
  return out.join('\n')
}

/** How long `proxycore status` waits for the whole answer by default (`--timeout=` changes it). */
export const STATUS_TIMEOUT_MS = 10_000

/** The page answered, but not with proxycore's status JSON (another server, a wrong path). */
export class NotStatusError extends Error {}

export async function fetchStatus (url: string, timeoutMs = STATUS_TIMEOUT_MS): Promise<StatusJson> {
  const u = new URL(url)
  if (!u.searchParams.has('format')) u.searchParams.set('format', 'json')
  // One deadline for connect, head and body: a server that accepts and never answers (or trickles
  // its body) must not hang the command.
  const res = await fetch(u, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs) })
  if (!res.ok) throw new Error(`${u.href}: HTTP ${res.status}`)
  const type = res.headers.get('content-type') ?? '(none)'
  const text = await res.text()
  let j: unknown
  try { j = JSON.parse(text) } catch {
    throw new NotStatusError(`${u.href} is not a proxycore status page: the answer is not JSON (content-type ${type})`)
  }
  const o = j as Partial<StatusJson> | null
  if (typeof o !== 'object' || o === null || typeof o.software !== 'string' || !Array.isArray(o.routes) || !Array.isArray(o.spawns)) {
    throw new NotStatusError(`${u.href} is not a proxycore status page: the JSON has no software, routes and spawns`)
  }
  return o as StatusJson
}
