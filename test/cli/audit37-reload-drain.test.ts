/**
 * A request in flight when a reload swaps the routes is drained by the old generation, up to its
 * `drainTimeout` (docs/guides/operators.md, Reload and Stop) — also when the spawn it runs on is
 * stopped by a later reload or by SIGTERM while that old generation still drains. Before, the
 * spawn's manager was closed as soon as the generation that retired it had drained its own
 * requests: the older generation's request was cut after the spawn's `stopTimeout`.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { appDir, processesNaming, serveKilled, sighupReload } from './run.js'
import { backendProgram, pidTag, slow } from './reload-kit.js'

// `/slow` sends 40 000 bytes over ~4 s.
const BACKEND = backendProgram(40_000)

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

t.test('a slow request survives two reloads: the first keeps its spawn, the second replaces it', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { file, app } = appDir(t, BACKEND, 'pc-audit37-drain2-')
  writeFileSync(file, yaml(app, 'a1', 'b1'))
  const { s, seen } = await serveKilled(t, file)
  const b1 = (await pidTag(s, 'b'))[0]
  seen.push((await pidTag(s, 'a'))[0], b1)
  const long = slow(`${s.url}/b/slow`)
  await long.head
  // Reload 1 changes `a` only: `b` is kept, the request stays with generation 1, which drains.
  t.equal((await sighupReload(s, file, yaml(app, 'a2', 'b1'))).line.msg, 'reloaded')
  seen.push((await pidTag(s, 'a'))[0])
  t.equal((await pidTag(s, 'b'))[0], b1, 'b kept')
  // Reload 2 changes `b`: its old process must wait for generation 1's drain, not for generation 2's.
  t.equal((await sighupReload(s, file, yaml(app, 'a2', 'b2'))).line.msg, 'reloaded')
  seen.push((await pidTag(s, 'b'))[0])
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
  seen.push((await pidTag(s, 'a'))[0], (await pidTag(s, 'b'))[0])
  const long = slow(`${s.url}/b/slow`)
  await long.head
  t.equal((await sighupReload(s, file, yaml(app, 'a2', 'b1'))).line.msg, 'reloaded')
  seen.push((await pidTag(s, 'a'))[0])
  s.child.kill('SIGTERM')
  t.same(await long.done, { status: 200, bytes: 40_000 }, 'the slow request ends with all its bytes')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})
