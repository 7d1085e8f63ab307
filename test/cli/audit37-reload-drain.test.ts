/**
 * A request in flight when a reload swaps the routes is drained by the old generation, up to its
 * `drainTimeout` (docs/guides/operators.md, Reload and Stop) — also when the spawn it runs on is
 * stopped by a later reload or by SIGTERM while that old generation still drains. Before, the
 * spawn's manager was closed as soon as the generation that retired it had drained its own
 * requests: the older generation's request was cut after the spawn's `stopTimeout`.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { appDir, getText, processesNaming, serveKilled, sighupReload, type Served } from './run.js'

// `/slow` sends 40 000 bytes over ~4 s; anything else answers `pid TAG`.
const BACKEND = `import http from 'node:http'
http.createServer((req, res) => {
  if (req.url.endsWith('/slow')) {
    res.writeHead(200, { 'content-length': '40000' })
    let n = 0
    const iv = setInterval(() => { res.write('x'.repeat(1000)); if (++n === 40) { clearInterval(iv); res.end() } }, 100)
    return
  }
  res.end(process.pid + ' ' + (process.env.TAG ?? ''))
}).listen(Number(process.env.PORT), process.env.HOST)
`

// b's stopTimeout (0.5 s) is far shorter than the slow request; drainTimeout (60 s) far longer.
const yaml = (app: string, a: string, b: string): string => `listen: 127.0.0.1:0
drainTimeout: 60s
spawns:
${[['a', a], ['b', b]].map(([n, tag]) => `  ${n}:
    binPath: [${JSON.stringify(process.execPath)}, ${JSON.stringify(app)}]
    socketName: 127.0.0.1:0
    handoff: self
    stopTimeout: 500ms
    environment: { TAG: ${tag} }
`).join('')}routes:
  - { name: a, match: { prefix: /a/ }, protocol: http, spawn: a }
  - { name: b, match: { prefix: /b/ }, protocol: http, spawn: b }
`

async function pidOf (s: Served, name: string): Promise<number> {
  const r = await getText(`${s.url}/${name}/`)
  if (r.status !== 200) throw new Error(`/${name}/: ${r.status} ${r.body}`)
  return Number(r.body.split(' ')[0])
}

/** GET `url`: resolves with the status and byte count once it ended; `head` once its head came. */
function slow (url: string): { head: Promise<void>, done: Promise<{ status: number, bytes: number, error?: string }> } {
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

t.test('a slow request survives two reloads: the first keeps its spawn, the second replaces it', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { file, app } = appDir(t, BACKEND, 'pc-audit37-drain2-')
  writeFileSync(file, yaml(app, 'a1', 'b1'))
  const { s, seen } = await serveKilled(t, file)
  const b1 = await pidOf(s, 'b')
  seen.push(await pidOf(s, 'a'), b1)
  const long = slow(`${s.url}/b/slow`)
  await long.head
  // Reload 1 changes `a` only: `b` is kept, the request stays with generation 1, which drains.
  t.equal((await sighupReload(s, file, yaml(app, 'a2', 'b1'))).line.msg, 'reloaded')
  seen.push(await pidOf(s, 'a'))
  t.equal(await pidOf(s, 'b'), b1, 'b kept')
  // Reload 2 changes `b`: its old process must wait for generation 1's drain, not for generation 2's.
  t.equal((await sighupReload(s, file, yaml(app, 'a2', 'b2'))).line.msg, 'reloaded')
  seen.push(await pidOf(s, 'b'))
  t.same(await long.done, { status: 200, bytes: 40_000 }, 'the slow request ends with all its bytes')
  t.ok(await waitFor(() => !alive(b1), 15_000), 'then the old process stops')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})

t.test('SIGTERM after a reload that kept the spawn: the old generation\'s slow request is drained', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { file, app } = appDir(t, BACKEND, 'pc-audit37-drainterm-')
  writeFileSync(file, yaml(app, 'a1', 'b1'))
  const { s, seen } = await serveKilled(t, file)
  seen.push(await pidOf(s, 'a'), await pidOf(s, 'b'))
  const long = slow(`${s.url}/b/slow`)
  await long.head
  t.equal((await sighupReload(s, file, yaml(app, 'a2', 'b1'))).line.msg, 'reloaded')
  seen.push(await pidOf(s, 'a'))
  s.child.kill('SIGTERM')
  t.same(await long.done, { status: 200, bytes: 40_000 }, 'the slow request ends with all its bytes')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})
