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

export async function fetchStatus (url: string): Promise<StatusJson> {
  const u = new URL(url)
  if (!u.searchParams.has('format')) u.searchParams.set('format', 'json')
  const res = await fetch(u, { headers: { accept: 'application/json' } })
  if (!res.ok) throw new Error(`${u.href}: HTTP ${res.status}`)
  return await res.json() as StatusJson
}
