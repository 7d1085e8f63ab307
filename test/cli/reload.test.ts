/**
 * `proxycore serve` reload and shutdown edges, on the real CLI with real spawned node:http backends:
 * a rejected reload of a spawn on a reused fixed address leaves it serving, a HUP during an old
 * generation's drain is read, and a second SIGTERM kills the children of retired generations too.
 */
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { createServer, request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { alive, guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import { appDir, getText, serveKilled } from './run.js'
import { freePort } from '../helpers/ports.js'

// `/hold` answers its head and never ends: a request the old generation must drain.
interface Teardown { teardown (fn: () => void | Promise<void>): void }

const BACKEND = `import http from 'node:http'
http.createServer((req, res) => {
  if (req.url === '/hold') { res.writeHead(200); res.write('held\\n'); return }
  res.end(process.pid + ' ' + (process.env.TAG ?? ''))
}).listen(Number(process.env.PORT), process.env.HOST)
`

const setup = (t: Teardown): { dir: string, file: string, app: string } => appDir(t, BACKEND, 'pc-reload-')

const get = getText

/** A request whose head came back and whose body never ends; resolves once the head arrived. */
async function hold (url: string, t: Teardown): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const req = request(`${url}/hold`, (res) => { res.resume(); res.on('error', () => {}); resolve() })
    req.on('error', reject)
    req.end()
    t.teardown(() => { req.destroy() })
  })
}

const spawnYaml = (app: string, socketName: string, extra = '', top = ''): string => `listen: 127.0.0.1:0
drainTimeout: 60s
status: { path: /server-status }
${top}spawns:
  app:
    binPath: [${JSON.stringify(process.execPath)}, ${JSON.stringify(app)}]
    socketName: ${socketName}
    handoff: self
${extra}routes:
  - { name: app, protocol: http, spawn: app }
`

t.test('a reload refused on a spawn that reuses its fixed address leaves the old one serving', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file, app } = setup(t)
  const port = await freePort()
  writeFileSync(file, spawnYaml(app, `127.0.0.1:${port}`))
  const { s, seen } = await serveKilled(t, file)
  const before = await get(`${s.url}/`)
  t.equal(before.status, 200)
  const pid = Number(before.body.split(' ')[0])
  seen.push(pid)

  // `user:` with a relative program: Launcher.validate refuses it (ERR_SUEXEC_RELATIVE_PATH).
  writeFileSync(file, spawnYaml(app, `127.0.0.1:${port}`, '    user: nobody\n    group: nogroup\n').replace(JSON.stringify(process.execPath), 'node'))
  const mark = s.logs().length
  s.child.kill('SIGHUP')
  const rejected = await s.waitLog('reload rejected; the previous config keeps serving', mark)
  t.match(rejected, { err: { code: 'ERR_SUEXEC_RELATIVE_PATH', message: /^spawns\.app: / } }, 'the log names the code and the spawn')
  t.notOk(s.logs().slice(mark).some((l) => l.msg === 'reload: address reused by a changed spawn; stopping the old one first'), 'the old spawn was not stopped')
  t.same(await get(`${s.url}/`), { status: 200, body: `${pid} ` }, 'the same process serves')
  t.ok(alive(pid))

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => !alive(pid)), 'spawned process gone')
})

t.test('a reload that fails after stopping the old spawn starts it again under the old config', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { dir, file, app } = setup(t)
  const port = await freePort()
  writeFileSync(file, spawnYaml(app, `127.0.0.1:${port}`))
  const { s, seen } = await serveKilled(t, file)
  const pid = Number((await get(`${s.url}/`)).body.split(' ')[0])
  seen.push(pid)

  // Passes every check, then SpawnManager.start() fails cleaning runDir (a directory where a pid
  // file would be cannot be removed) — after the old spawn on the same port was stopped.
  const run = join(dir, 'run')
  mkdirSync(join(run, 'app.1.pid'), { recursive: true })
  writeFileSync(file, spawnYaml(app, `127.0.0.1:${port}`, '', `runDir: ${JSON.stringify(run)}\n`))
  const mark = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reload rejected; restarting the previous config\'s spawns it had stopped', mark)
  await s.waitLog('reload rejected; the previous config keeps serving', mark)
  let r = { status: 0, body: '' }
  t.ok(await waitFor(async () => { r = await get(`${s.url}/`); return r.status === 200 }, 10_000), 'the old config serves again')
  const again = Number(r.body.split(' ')[0])
  seen.push(again)
  t.not(again, pid, 'a new process of the old spawn')
  t.notOk(alive(pid))

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => !alive(again)), 'spawned process gone')
})

t.test('a SIGHUP during the old generation\'s drain reloads again', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file } = setup(t)
  const backend = createServer((req, res) => {
    if (req.url === '/hold') { res.writeHead(200); res.write('held\n'); return }
    res.end('ok')
  })
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { backend.closeAllConnections(); backend.close(() => resolve()) }))
  const port = (backend.address() as AddressInfo).port
  const config = (name: string): void => writeFileSync(file, `listen: 127.0.0.1:0
drainTimeout: 60s
status: { path: /server-status }
routes:
  - { name: ${name}, protocol: http, backends: ['127.0.0.1:${port}'] }
`)
  const routes = async (): Promise<string> => {
    const j = await (await fetch(`${s.url}/server-status?format=json`)).json() as { routes: Array<{ name: string }> }
    return j.routes.map((x) => x.name).join(',')
  }
  config('v1')
  const { s } = await serveKilled(t, file)
  t.equal(await routes(), 'v1')
  await hold(s.url, t)

  config('v2')
  let mark = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reloaded', mark)
  t.equal(await routes(), 'v2')

  // v1 is still draining its held request (drainTimeout 60s).
  config('v3')
  mark = s.logs().length
  s.child.kill('SIGHUP')
  const line = await s.waitLog('reloaded', mark)
  t.equal(line.reloads, 2)
  t.equal(await routes(), 'v3', 'the newer file was read')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processGroup(s.child.pid as number).length === 0), 'CLI process group empty')
})

t.test('a second SIGTERM kills the children of a retired generation still draining', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file, app } = setup(t)
  const config = (tag: string): void => writeFileSync(file, spawnYaml(app, '127.0.0.1:0', `    environment: { TAG: ${tag} }\n`))
  config('v1')
  const { s, seen } = await serveKilled(t, file)
  const v1 = await get(`${s.url}/`)
  t.match(v1.body, / v1$/)
  seen.push(Number(v1.body.split(' ')[0]))
  await hold(s.url, t)

  config('v2')
  const mark = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reloaded', mark)
  const v2 = await get(`${s.url}/`)
  t.match(v2.body, / v2$/)
  seen.push(Number(v2.body.split(' ')[0]))
  await hold(s.url, t)
  t.ok(seen.every(alive), 'v1 draining, v2 serving')

  // The first drains (60s, both held); the second is the operator wanting out now.
  s.child.kill('SIGTERM')
  await s.waitLog('stopping: draining requests and stopping spawned processes', mark)
  s.child.kill('SIGTERM')
  await s.waitLog('second signal: exiting now', mark)
  t.equal(await s.exited, 1)
  t.ok(await waitFor(() => seen.every((p) => !alive(p))), `no spawned process outlives proxycore: ${seen.filter(alive).join(' ')}`)
})

t.test('counters carry on across a reload: /metrics goes on from where it was, never back to zero', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file, app } = setup(t)
  writeFileSync(file, spawnYaml(app, '127.0.0.1:0'))
  const { s } = await serveKilled(t, file)
  for (let i = 0; i < 3; i++) t.equal((await get(`${s.url}/`)).status, 200)
  const value = async (series: string): Promise<number> => {
    const text = (await get(`${s.url}/metrics`)).body
    const line = text.split('\n').find((l) => l.startsWith(`${series} `))
    return line === undefined ? NaN : Number(line.slice(series.length + 1))
  }
  const REQUESTS = 'proxycore_route_requests_total{route="app"}'
  const RESPONSES = 'proxycore_responses_total{route="app",status="200"}'
  t.equal(await value(REQUESTS), 3)
  t.equal(await value(RESPONSES), 3)

  // A changed spawn and a new status path: a new proxy, a new status, the same counters.
  writeFileSync(file, spawnYaml(app, '127.0.0.1:0', '    environment: { TAG: v2 }\n'))
  const mark = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reloaded', mark)
  t.equal(await value(REQUESTS), 3, 'the route counter kept its total')
  t.equal(await value(RESPONSES), 3, 'so did the responses')
  t.equal((await get(`${s.url}/`)).body.split(' ')[1], 'v2', 'the new generation serves')
  t.equal(await value(REQUESTS), 4, 'and counts on')
  t.equal(await value(RESPONSES), 4)

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})
