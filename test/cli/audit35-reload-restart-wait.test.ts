/**
 * `proxycore serve` reload (SIGHUP), real CLI, real spawned node:http backends: a changed spawn
 * whose first process crashes and whose restart then succeeds is waited for through its restart
 * backoff, so the routes swap to a ready process and the old one answers meanwhile
 * (docs/guides/operators.md, Reload). Before, the 'restart' event was read as "settled" (the spawn
 * looked `idle` while the event was emitted) and the swap came at once, the new spawn still in
 * backoff: requests queued behind it and the working old process was already retired.
 */
import t from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { appDir, getText, serveKilled } from './run.js'

// With CRASH_ONCE set: the first start creates that file and exits 1 before listening; the next listens.
const BACKEND = `import http from 'node:http'
import { existsSync, writeFileSync } from 'node:fs'
const once = process.env.CRASH_ONCE
if (once && !existsSync(once)) { writeFileSync(once, String(process.pid)); process.exit(1) }
http.createServer((req, res) => res.end(process.pid + ' ' + (process.env.TAG ?? ''))).listen(Number(process.env.PORT), process.env.HOST)
`

const yaml = (app: string, env: string): string => `listen: 127.0.0.1:0
drainTimeout: 60s
status: { path: /server-status }
spawns:
  app:
    binPath: [${JSON.stringify(process.execPath)}, ${JSON.stringify(app)}]
    socketName: 127.0.0.1:0
    handoff: self
    startTimeout: 60s
    restart: { initialDelay: 3s }
    environment: { ${env} }
routes:
  - { name: app, match: { prefix: /app/ }, protocol: http, spawn: app }
`

t.test('a reload waits for a changed spawn through a crash and its restart before the swap', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { dir, file, app } = appDir(t, BACKEND, 'pc-audit35-restart-')
  writeFileSync(file, yaml(app, 'TAG: v1'))
  const { s, seen } = await serveKilled(t, file)
  const v1 = await getText(`${s.url}/app/`)
  t.match(v1.body, / v1$/)
  seen.push(Number(v1.body.split(' ')[0]))

  const crashed = join(dir, 'crashed')
  writeFileSync(file, yaml(app, `TAG: v2, CRASH_ONCE: ${JSON.stringify(crashed)}`))
  const at = s.logs().length
  s.child.kill('SIGHUP')
  t.ok(await waitFor(() => existsSync(crashed), 30_000), 'the new spawn\'s first process crashed')
  await s.waitLog('reloaded', at)
  // At the swap the new spawn has a ready process: not in its 3 s restart backoff.
  const st = await (await fetch(`${s.url}/server-status?format=json`)).json() as { spawns: Array<{ name: string, state: string }> }
  t.equal(st.spawns.find((x) => x.name === 'app')?.state, 'running', 'the new spawn is running when the routes swap')
  const v2 = await getText(`${s.url}/app/`)
  t.equal(v2.status, 200)
  t.match(v2.body, / v2$/)
  seen.push(Number(v2.body.split(' ')[0]))
  t.ok(await waitFor(() => !alive(seen[0] as number), 15_000), 'the replaced process stopped after the drain')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => !alive(seen[1] as number)), 'spawned process gone')
})
