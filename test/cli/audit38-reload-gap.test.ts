/**
 * A reload that changes a spawn on the same fixed address (docs/guides/operators.md, Reload): the
 * old process must stop before the new one can bind, and requests that arrive meanwhile wait for
 * the new one (as for a spawn that is starting) instead of failing. Before, the old generation's
 * routes reached the old spawn while it was being stopped and answered `503 ERR_SPAWN_NOT_READY`
 * ("spawn X is shutting down") for the whole handover: the drain of its requests in flight (up to
 * its stopTimeout) plus the new process's start. Steady traffic (6 clients in a loop) across such a
 * reload, for a TCP port (node:http, handoff self) and a unix path (php-cgi, fd 0), for a reload
 * whose new spawn fails (the old one is started again) and for a SIGTERM during the handover; on
 * the TCP port also for a spawn renamed in the reload (`app` -> `app2`), whose requests go to the
 * spawn that took its address (31 of 95 answered 503 before).
 */
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { PHP_CGI, havePeer } from '../fastcgi/helpers/peers.js'
import { appDir, getText, processesNaming, serveKilled } from './run.js'
import { backendProgram, noneFailed, phpPidTag, phpReloadSite, phpReloadYaml, pidTag, reloadUnderLoad, servedBy, slow } from './reload-kit.js'

// `/slow` sends 20 000 bytes over ~2 s: in flight on the old process when the reload stops it.
const BACKEND = backendProgram(20_000)
const STOPPING = 'reload: address reused by a changed spawn; stopping the old one first'
const STATUS = 'status: { path: /server-status }\n'

const tcpYaml = (app: string, port: number, tag: string, top = '', spawn = 'app'): string => `listen: 127.0.0.1:0
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

// The reload's new spawn: `app` changed, or renamed to `app2` (before, a renamed spawn had no
// successor of its name and its requests got 503 for the whole handover; now the spawn that took
// its address takes them).
const NEXT = [{ spawn: 'app', what: 'a changed spawn' }, { spawn: 'app2', what: 'a spawn renamed' }]

for (const { spawn, what } of NEXT) t.test(`TCP port: ${what} on the same fixed port, under steady traffic, loses no request`, async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { file, app } = appDir(t, BACKEND, 'pc-audit38-gap-tcp-')
  const port = await freePort()
  writeFileSync(file, tcpYaml(app, port, 'v1'))
  const { s, seen } = await serveKilled(t, file)
  const [p1] = await pidTag(s, 'app')
  seen.push(p1)
  const { load, long, line, at } = await reloadUnderLoad(t, s, file, tcpYaml(app, port, 'v2', '', spawn), `${s.url}/app/`, `${s.url}/app/slow`)
  t.equal(line.msg, 'reloaded', `reloaded (${JSON.stringify(line.err ?? null)})`)
  t.ok(s.logs().slice(at).some((l) => l.msg === STOPPING), 'the old one was stopped first')
  seen.push(await servedBy(t, () => pidTag(s, 'app'), 'v2'))
  await noneFailed(t, load)
  t.same(await long.done, { status: 200, bytes: 20_000 }, 'the request in flight on the old process ended with all its bytes (its stopTimeout)')
  t.notOk(alive(p1), 'the old process is gone')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})

t.test('unix path: php-cgi changed on the same socket path, under steady traffic, loses no request', async (t) => {
  // Missing: skipped with the reason, failed under CI=true.
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t, { timeoutMs: 20_000 })
  const { dir, file } = appDir(t, '', 'pc-audit38-gap-unix-')
  const www = phpReloadSite(dir, 10, 150_000)
  const yaml = (tag: string): string => phpReloadYaml(`unix:${join(dir, 'php.sock')}`, www, tag)
  const get = (): Promise<[number, string]> => phpPidTag(s)
  writeFileSync(file, yaml('v1'))
  const { s, seen } = await serveKilled(t, file)
  const [p1] = await get()
  seen.push(p1)
  const { load, long, line, at } = await reloadUnderLoad(t, s, file, yaml('v2'), `${s.url}/pid.php`, `${s.url}/slow.php`)
  t.equal(line.msg, 'reloaded', `reloaded (${JSON.stringify(line.err ?? null)})`)
  t.ok(s.logs().slice(at).some((l) => l.msg === STOPPING), 'the old one was stopped first')
  seen.push(await servedBy(t, get, 'v2'))
  await noneFailed(t, load)
  t.same(await long.done, { status: 200, bytes: 10_000 }, 'the request in flight on the old php-cgi ended with all its bytes')
  t.notOk(alive(p1), 'the old php-cgi is gone')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => !alive(seen[1])), 'the new php-cgi is gone')
})

for (const { spawn, what } of NEXT) t.test(`a reload whose new spawn (${what}) fails after the old one was stopped: the old one, started again, serves what arrived meanwhile`, async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { dir, file, app } = appDir(t, BACKEND, 'pc-audit38-gap-undo-')
  const port = await freePort()
  writeFileSync(file, tcpYaml(app, port, 'v1'))
  const { s, seen } = await serveKilled(t, file)
  const [p1] = await pidTag(s, 'app')
  seen.push(p1)
  // Passes every check, then SpawnManager.start() fails cleaning runDir (a directory where a pid
  // file would be cannot be removed) — after the old spawn on the same port was stopped.
  const run = join(dir, 'run')
  mkdirSync(join(run, `${spawn}.1.pid`), { recursive: true })
  const { load, long, line, at } = await reloadUnderLoad(t, s, file, tcpYaml(app, port, 'v2', `runDir: ${JSON.stringify(run)}\n`, spawn), `${s.url}/app/`, `${s.url}/app/slow`)
  t.match(String(line.msg), /^reload rejected/, 'the reload is rejected')
  await s.waitLog('reload rejected; the previous config keeps serving', at)
  t.ok(s.logs().slice(at).some((l) => l.msg === 'reload rejected; restarting the previous config\'s spawns it had stopped'), 'the old spawn is started again')
  seen.push(await servedBy(t, () => pidTag(s, 'app'), 'v1'))
  await noneFailed(t, load)
  t.same(await long.done, { status: 200, bytes: 20_000 }, 'the request in flight on the old process ended with all its bytes')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})

t.test('SIGTERM during the handover: what arrived meanwhile is served by the new process, then everything stops', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { file, app } = appDir(t, BACKEND, 'pc-audit38-gap-term-')
  const port = await freePort()
  writeFileSync(file, tcpYaml(app, port, 'v1', STATUS))
  const { s, seen } = await serveKilled(t, file)
  const [p1] = await pidTag(s, 'app')
  seen.push(p1)
  const long = slow(`${s.url}/app/slow`)
  await long.head
  writeFileSync(file, tcpYaml(app, port, 'v2', STATUS))
  const at = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog(STOPPING, at)
  // The old process drains the slow request: these arrive during the handover.
  const held = [getText(`${s.url}/app/`), getText(`${s.url}/app/`), getText(`${s.url}/app/`)]
  // All three are in the proxy (the old generation's, still current) before the stop closes the listener.
  const inflight = async (): Promise<number> => (JSON.parse((await getText(`${s.url}/server-status?format=json`)).body) as { inflight: number }).inflight
  t.ok(await waitFor(async () => await inflight() === 4, 10_000), 'the slow request and the three held ones are in flight')
  s.child.kill('SIGTERM')
  const answers = await Promise.all(held)
  for (const a of answers) t.match(a, { status: 200, body: / v2$/ }, 'held, then served by the new process')
  t.same(await long.done, { status: 200, bytes: 20_000 }, 'the slow request ended with all its bytes')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})
