/**
 * What the audit 37 and 38 reload tests share: a spawned node:http backend program answering `pid TAG`
 * (`/slow`: a body sent over seconds), a config of such spawns with a route each, and the probes
 * (pid and tag of a route's process, the status JSON's spawns, a slow request, a request loop).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { waitFor } from '../helpers/leaks.js'
import { PHP_CGI } from '../fastcgi/helpers/peers.js'
import type { Test } from 'tap'
import { getText, sighupReload, type Served } from './run.js'

/** The backend program: `/slow` sends `slowBytes` in 1000-byte writes every 100 ms; anything else answers `pid TAG`. */
export const backendProgram = (slowBytes: number): string => `import http from 'node:http'
http.createServer((req, res) => {
  if (req.url.endsWith('/slow')) {
    res.writeHead(200, { 'content-length': '${slowBytes}' })
    let n = 0
    const iv = setInterval(() => { res.write('x'.repeat(1000)); if (++n === ${slowBytes / 1000}) { clearInterval(iv); res.end() } }, 100)
    return
  }
  res.end(process.pid + ' ' + (process.env.TAG ?? ''))
}).listen(Number(process.env.PORT), process.env.HOST)
`

export interface Sp { name: string, tag: string, prog?: string, bin?: string, extra?: string }

export const spawnsYaml = (app: string, spawns: Sp[], routes = spawns.map((s) => s.name)): string => `listen: 127.0.0.1:0
drainTimeout: 60s
status: { path: /server-status }
spawns:
${spawns.map((s) => `  ${s.name}:
    binPath: ${s.bin ?? `[${JSON.stringify(process.execPath)}, ${JSON.stringify(s.prog ?? app)}]`}
    socketName: 127.0.0.1:0
    handoff: self
    startTimeout: 30s
    environment: { TAG: ${s.tag} }
${s.extra ?? ''}`).join('')}routes:
${routes.map((n) => `  - { name: ${n}, match: { prefix: /${n}/ }, protocol: http, spawn: ${n} }\n`).join('')}`

export async function pidTag (s: Served, name: string): Promise<[number, string]> {
  const r = await getText(`${s.url}/${name}/`)
  if (r.status !== 200) throw new Error(`/${name}/: ${r.status} ${r.body}`)
  const [pid, tag] = r.body.split(' ')
  return [Number(pid), tag ?? '']
}

export interface SpawnJson { name: string, state: string, processes: Array<{ pid: number | null }> }
export async function statusSpawns (s: Served): Promise<SpawnJson[]> {
  const r = await getText(`${s.url}/server-status?format=json`)
  return (JSON.parse(r.body) as { spawns: SpawnJson[] }).spawns
}

/** GET `/name/slow`: resolves with the status and byte count once it ended; `head` once its head came. */
export function slow (url: string): { head: Promise<void>, done: Promise<{ status: number, bytes: number, error?: string }> } {
  let headOk!: () => void
  const head = new Promise<void>((resolve) => { headOk = resolve })
  const done = new Promise<{ status: number, bytes: number, error?: string }>((resolve) => {
    const req = request(url, (res) => {
      headOk()
      let bytes = 0
      res.on('data', (c: Buffer) => { bytes += c.length })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes }))
      res.on('error', (err) => resolve({ status: res.statusCode ?? 0, bytes, error: err.message }))
      res.on('aborted', () => resolve({ status: res.statusCode ?? 0, bytes, error: 'aborted' }))
    })
    req.on('error', (err) => { headOk(); resolve({ status: 0, bytes: 0, error: err.message }) })
    req.end()
  })
  return { head, done }
}

/** Requests to every path in a loop until stopped: the statuses that were not 200. */
export function traffic (url: string, names: string[]): { stop: () => Promise<{ count: number, bad: string[] }> } {
  let on = true
  let count = 0
  const bad: string[] = []
  const loop = (async () => {
    while (on) {
      for (const n of names) {
        try {
          const r = await getText(`${url}/${n}/`)
          count++
          if (r.status !== 200) bad.push(`${n}: ${r.status} ${r.body.slice(0, 200)}`)
        } catch (err) { bad.push(`${n}: ${(err as Error).message}`) }
      }
    }
  })()
  return { stop: async () => { on = false; await loop; return { count, bad } } }
}

/**
 * `clients` loops requesting `url` at once, each its next request when the last ended, until
 * stopped: how many ended, those that were not 200 (status and body, or the error), and the
 * longest one in ms (a request held across a reload's handover waits that long).
 */
export function steady (url: string, clients: number): { count: () => number, stop: () => Promise<{ count: number, bad: string[], maxMs: number }> } {
  let on = true
  let count = 0
  let maxMs = 0
  const bad: string[] = []
  const loops = Array.from({ length: clients }, async () => {
    while (on) {
      const t0 = Date.now()
      try {
        const r = await getText(url)
        if (r.status !== 200) bad.push(`${r.status} ${r.body.slice(0, 200)}`)
      } catch (err) { bad.push((err as Error).message) }
      count++
      maxMs = Math.max(maxMs, Date.now() - t0)
    }
  })
  return { count: () => count, stop: async () => { on = false; await Promise.all(loops); return { count, bad, maxMs } } }
}

/**
 * A php-cgi docroot `www` under `dir`: `/pid.php` answers `pid TAG`, `/slow.php` sends `chunks`
 * 1000-byte pieces `gapUs` microseconds apart (in flight while a reload stops its process).
 */
export function phpReloadSite (dir: string, chunks: number, gapUs: number): string {
  const www = join(dir, 'www')
  mkdirSync(www)
  writeFileSync(join(www, 'pid.php'), '<?php echo getmypid() . " " . getenv("TAG");')
  writeFileSync(join(www, 'slow.php'), `<?php while (ob_get_level() > 0) ob_end_flush(); for ($i = 0; $i < ${chunks}; $i++) { echo str_repeat("x", 1000); flush(); usleep(${gapUs}); }`)
  return www
}

/** A config of one php-cgi spawn `php` on `socketName`, tagged `tag`, serving `www` (phpReloadSite). */
export const phpReloadYaml = (socketName: string, www: string, tag: string): string => `listen: 127.0.0.1:0
drainTimeout: 60s
spawns:
  php:
    binPath: ${PHP_CGI}
    socketName: ${socketName}
    startTimeout: 30s
    stopTimeout: 20s
    environment: { PHP_FCGI_CHILDREN: "0", TAG: ${tag} }
routes:
  - { name: php, protocol: fastcgi, spawn: php, docroot: ${JSON.stringify(www)} }
`

/** pid and tag of the php-cgi answering `/pid.php` now. */
export async function phpPidTag (s: Served): Promise<[number, string]> {
  const r = await getText(`${s.url}/pid.php`)
  if (r.status !== 200) throw new Error(`${r.status} ${r.body}`)
  const [pid, tag] = r.body.split(' ')
  return [Number(pid), tag ?? '']
}

/** Until `get` answers under `tag` (within 15 s, asserted on `t`): that process's pid. */
export async function servedBy (t: { ok: (v: unknown, m: string) => unknown }, get: () => Promise<[number, string]>, tag: string): Promise<number> {
  let now: [number, string] = [0, '']
  t.ok(await waitFor(async () => { try { now = await get(); return now[1] === tag } catch { return false } }, 15_000), `${tag} serves`)
  return now[0]
}

/** Traffic on, then a reload to `next` while the slow request runs on the old process; its outcome line and log index. */
export async function reloadUnderLoad (t: Test, s: Served, file: string, next: string, url: string, slowUrl: string): Promise<{ load: ReturnType<typeof steady>, long: ReturnType<typeof slow>, line: Record<string, unknown>, at: number }> {
  const long = slow(slowUrl)
  await long.head
  const load = steady(url, 6)
  t.ok(await waitFor(() => load.count() >= 30, 10_000), 'traffic flows before the reload')
  const { line, at } = await sighupReload(s, file, next)
  return { load, long, line, at }
}

/** Some more traffic after the reload, then its totals: no request may have failed. */
export async function noneFailed (t: Test, load: ReturnType<typeof steady>): Promise<void> {
  const mark = load.count()
  t.ok(await waitFor(() => load.count() >= mark + 30, 10_000), 'traffic flows after the reload')
  const r = await load.stop()
  t.same(r.bad, [], `${r.count} requests across the reload, none failed (longest ${r.maxMs} ms)`)
}
