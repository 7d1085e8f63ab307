/**
 * `proxycore status [url]`: the gateway's JSON status as a table, like `systemctl status` for the
 * spawns and a one-line-per-route summary.
 */
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { TSchema } from '@sinclair/typebox'
import type { StatusSnapshot as StatusJson } from '../status/model.js'

/**
 * Control characters (C0 with tab, DEL, C1) as `\xHH`, as the CLI's readable log writes them: the
 * strings come from a config (a quoted route name may hold any character) or from whatever server
 * the URL names, and a line break forged rows while ESC reached the terminal.
 */
function clean (s: string): string {
  return s.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'))
}

function pad (cells: string[][]): string {
  const rows = cells.map((r) => r.map((c) => clean(String(c))))
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n')
}

export function statusTable (j: StatusJson): string {
  const out = [clean(`${j.software}  up ${j.uptimeSeconds}s  in flight ${j.inflight}`), '']
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

/**
 * The largest answer `proxycore status` reads: a status page of thousands of routes and processes
 * is a few MiB. A server sending more (or without end) is not one; reading it whole ate 2 GB in 5 s.
 */
export const STATUS_MAX_BYTES = 16 * 1024 * 1024

/** The page answered, but not with proxycore's status JSON (another server, a wrong path). */
export class NotStatusError extends Error {}

export async function fetchStatus (url: string, timeoutMs = STATUS_TIMEOUT_MS): Promise<StatusJson> {
  const u = new URL(url)
  // The command reads JSON: a page URL copied from the browser (`?format=html`) still gets it.
  u.searchParams.set('format', 'json')
  // fetch() followed redirects (an http:// URL behind a front server that sends clients to
  // https://, a moved path); so does this, up to 5, within the one deadline.
  const deadline = Date.now() + timeoutMs
  let res = await getText(u, timeoutMs)
  for (let hops = 0; hops < 5 && [301, 302, 303, 307, 308].includes(res.status) && res.location !== undefined; hops++) {
    res = await getText(new URL(res.location, res.url), Math.max(1, deadline - Date.now()))
  }
  if (res.status < 200 || res.status > 299) {
    // A bare "HTTP 403" left the operator guessing: a proxycore answers 403 to a peer not in its
    // status.allow, and 404 (ERR_NO_ROUTE) at a path that is not its status page.
    if (res.status === 403) throw new Error(`${u.href}: HTTP 403 Forbidden (is this host in the server's status.allow?)`)
    throw new NotStatusError(`${u.href} is not a proxycore status page: HTTP ${res.status}${res.status === 404 ? ' (a wrong path, or no status in its config?)' : ''}`)
  }
  const type = res.type
  const text = res.text
  let j: unknown
  try { j = JSON.parse(text) } catch {
    throw new NotStatusError(`${u.href} is not a proxycore status page: the answer is not JSON (content-type ${type})`)
  }
  const o = j as Partial<StatusJson> | null
  if (typeof o !== 'object' || o === null || typeof o.software !== 'string' || !Array.isArray(o.routes) || !Array.isArray(o.spawns)) {
    throw new NotStatusError(`${u.href} is not a proxycore status page: the JSON has no software, routes and spawns`)
  }
  // Every field the table prints, so another server's JSON (or another version's) is named as
  // such instead of a TypeError (`reading 'p99Ms'`) or `undefined` cells with exit 0.
  const problem = await shapeProblem(o)
  if (problem !== null) throw new NotStatusError(`${u.href} is not a proxycore status page: ${problem}`)
  return o as StatusJson
}

/**
 * The fields `statusTable` prints, each of the type it prints (a TypeBox schema of part of
 * StatusSnapshot). Made when `status` runs: the CLI module is also `serve`'s, which never loads
 * TypeBox (~13 MiB, and dozens of files opened at start: test/config/no-typebox.test.ts).
 */
async function printedSchema (): Promise<TSchema> {
  const { Type } = await import('@sinclair/typebox')
  const nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])
  return Type.Object({
    software: Type.String(),
    uptimeSeconds: Type.Number(),
    inflight: Type.Number(),
    routes: Type.Array(Type.Object({
      name: Type.String(),
      protocol: Type.String(),
      spawn: nullable(Type.String()),
      available: Type.Number(),
      capacity: Type.Number(),
      requests: Type.Number(),
      errors: Type.Number(),
      dropped: Type.Number(),
      active: Type.Number(),
      latency: Type.Object({ p99Ms: nullable(Type.Number()) }),
    })),
    spawns: Type.Array(Type.Object({
      name: Type.String(),
      state: Type.String(),
      reason: nullable(Type.String()),
      pipeChildren: Type.Number(),
      processes: Type.Array(Type.Object({
        pid: nullable(Type.Number()),
        state: Type.String(),
        address: Type.String(),
        requests: Type.Number(),
        inflight: Type.Number(),
        uptimeSeconds: Type.Number(),
      })),
    })),
  })
}

const ARTICLE: Record<string, string> = { object: 'an object', array: 'an array', string: 'a string', number: 'a number', null: 'null' }

/** A part of printedSchema() in words: `a number or null`. */
function describe (schema: TSchema): string {
  if (Array.isArray(schema.anyOf)) return (schema.anyOf as TSchema[]).map(describe).join(' or ')
  return ARTICLE[String(schema.type)] ?? String(schema.type)
}

/** What `statusTable` would trip over, as `/routes/0/latency: expected an object`; null if none. */
async function shapeProblem (j: unknown): Promise<string | null> {
  const { Value } = await import('@sinclair/typebox/value')
  const first = Value.Errors(await printedSchema(), j).First()
  return first === undefined ? null : `${first.path}: expected ${describe(first.schema)}`
}

/**
 * GET with node's http client, not fetch(): fetch refuses the ports the Fetch standard blocks for
 * browsers ("bad port": 6000, 6665-6669, 10080, 2049, ...) before connecting, and a proxycore may
 * listen on one. One deadline for connect, head and body: a server that accepts and never answers
 * (or trickles its body) must not hang the command; it fails with a TimeoutError.
 */
async function getText (u: URL, timeoutMs: number): Promise<{ url: URL, status: number, type: string, location?: string, text: string }> {
  return await new Promise((resolve, reject) => {
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, { headers: { accept: 'application/json' }, agent: false }, (res) => {
      const tooLarge = (why: string): void => {
        fail(new NotStatusError(`${u.href} is not a proxycore status page: the answer is larger than ${STATUS_MAX_BYTES / 1024 / 1024} MiB${why}`))
        req.destroy()
      }
      const length = Number(res.headers['content-length'])
      if (length > STATUS_MAX_BYTES) { tooLarge(` (Content-Length ${length})`); return }
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => {
        size += c.length
        if (size > STATUS_MAX_BYTES) { chunks.length = 0; tooLarge(''); return }
        chunks.push(c)
      })
      res.on('end', () => {
        clearTimeout(timer)
        resolve({ url: u, status: res.statusCode ?? 0, type: res.headers['content-type'] ?? '(none)', location: res.headers.location, text: Buffer.concat(chunks).toString('utf8') })
      })
      res.on('error', fail)
    })
    function fail (err: Error): void { clearTimeout(timer); reject(err) }
    const timer = setTimeout(() => {
      const e = new Error(`no answer within ${timeoutMs} ms`)
      e.name = 'TimeoutError'
      req.destroy(e)
    }, timeoutMs)
    req.on('error', fail)
    req.end()
  })
}
