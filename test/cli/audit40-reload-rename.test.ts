/**
 * A reload that renames a spawn and keeps its fixed address (docs/guides/operators.md, Reload):
 * `app` on 127.0.0.1:P becomes `app2` on 127.0.0.1:P. The old process must stop before the new one
 * can bind, as for a changed spawn of the same name (audit38-reload-gap.test.ts), and what the old
 * generation's routes send to `app` meanwhile must wait for the spawn that took its address, not
 * fail. Before, only a successor of the same name took the held requests: a renamed spawn's were
 * answered `503 ERR_SPAWN_NOT_READY` for the whole handover (the old process's drain plus the new
 * one's start).
 */
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { appDir, processesNaming, serveKilled } from './run.js'
import { backendProgram, noneFailed, pidTag, reloadUnderLoad, servedBy } from './reload-kit.js'

const BACKEND = backendProgram(20_000)
const STOPPING = 'reload: address reused by a changed spawn; stopping the old one first'

const yaml = (app: string, port: number, spawn: string, tag: string, top = ''): string => `listen: 127.0.0.1:0
drainTimeout: 60s
${top}spawns:
  ${spawn}:
    binPath: [${JSON.stringify(process.execPath)}, ${JSON.stringify(app)}]
    socketName: 127.0.0.1:${port}
    handoff: self
    startTimeout: 30s
    stopTimeout: 20s
    environment: { TAG: ${tag} }
routes:
  - { name: app, match: { prefix: /app/ }, protocol: http, spawn: ${spawn} }
`

t.test('a spawn renamed on the same fixed port, under steady traffic, loses no request', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { file, app } = appDir(t, BACKEND, 'pc-audit40-rename-')
  const port = await freePort()
  writeFileSync(file, yaml(app, port, 'app', 'v1'))
  const { s, seen } = await serveKilled(t, file)
  const [p1] = await pidTag(s, 'app')
  seen.push(p1)
  // `/app/slow` is in flight on the old process when the reload stops it: the handover lasts its ~2 s drain.
  const { load, long, line, at } = await reloadUnderLoad(t, s, file, yaml(app, port, 'app2', 'v2'), `${s.url}/app/`, `${s.url}/app/slow`)
  t.equal(line.msg, 'reloaded', `reloaded (${JSON.stringify(line.err ?? null)})`)
  t.ok(s.logs().slice(at).some((l) => l.msg === STOPPING), 'the old one was stopped first')
  seen.push(await servedBy(t, () => pidTag(s, 'app'), 'v2'))
  await noneFailed(t, load)
  t.same(await long.done, { status: 200, bytes: 20_000 }, 'the request in flight on the old process ended with all its bytes')
  t.notOk(alive(p1), 'the old process is gone')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})

t.test('a renamed spawn that fails to start after the old one was stopped: the old one, started again, serves what arrived meanwhile', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { dir, file, app } = appDir(t, BACKEND, 'pc-audit40-rename-undo-')
  const port = await freePort()
  writeFileSync(file, yaml(app, port, 'app', 'v1'))
  const { s, seen } = await serveKilled(t, file)
  const [p1] = await pidTag(s, 'app')
  seen.push(p1)
  // Passes every check, then SpawnManager.start() fails cleaning runDir (a directory where the
  // renamed spawn's pid file would be cannot be removed) — after the old spawn was stopped.
  const run = join(dir, 'run')
  mkdirSync(join(run, 'app2.1.pid'), { recursive: true })
  const { load, long, line, at } = await reloadUnderLoad(t, s, file, yaml(app, port, 'app2', 'v2', `runDir: ${JSON.stringify(run)}\n`), `${s.url}/app/`, `${s.url}/app/slow`)
  t.match(String(line.msg), /^reload rejected/, 'the reload is rejected')
  await s.waitLog('reload rejected; the previous config keeps serving', at)
  t.ok(s.logs().slice(at).some((l) => l.msg === STOPPING), 'the old one was stopped first')
  seen.push(await servedBy(t, () => pidTag(s, 'app'), 'v1'))
  await noneFailed(t, load)
  t.same(await long.done, { status: 200, bytes: 20_000 }, 'the request in flight on the old process ended with all its bytes')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})
