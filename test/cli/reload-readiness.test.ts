/**
 * `proxycore serve` reload (SIGHUP), on the real CLI with real spawned node:http backends:
 * a changed spawn serves before the swap (make-before-break, no queue behind a slow start), a stop
 * signal does not wait for such a start, the file's `logLevel` applies after a reload, and an
 * unchanged `listen` keeps its socket (moving listeners: audit35b-listen-reload.test.ts).
 */
import t from 'tap'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { alive, childrenOf, guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import { appDir, getText, serveKilled } from './run.js'

interface Teardown { teardown (fn: () => void | Promise<void>): void }

// Listens after DELAY ms (a slow application boot), then writes its pid to MARK.
const BACKEND = `import http from 'node:http'
import { writeFileSync } from 'node:fs'
setTimeout(() => {
  http.createServer((req, res) => res.end(process.pid + ' ' + (process.env.TAG ?? '')))
    .listen(Number(process.env.PORT), process.env.HOST, () => { if (process.env.MARK) writeFileSync(process.env.MARK, String(process.pid)) })
}, Number(process.env.DELAY ?? 0))
`

const setup = (t: Teardown): { dir: string, file: string, app: string } => appDir(t, BACKEND, 'pc-reload-ready-')

const get = getText

const spawnYaml = (app: string, env: string, top = ''): string => `listen: 127.0.0.1:0
drainTimeout: 60s
${top}spawns:
  app:
    binPath: [${JSON.stringify(process.execPath)}, ${JSON.stringify(app)}]
    socketName: 127.0.0.1:0
    handoff: self
    startTimeout: 120s
    environment: { ${env} }
routes:
  - { name: app, protocol: http, spawn: app }
`

t.test('a changed spawn is ready before the swap: requests never queue behind its start', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { dir, file, app } = setup(t)
  writeFileSync(file, spawnYaml(app, 'TAG: v1'))
  const { s, seen } = await serveKilled(t, file)
  const v1 = await get(`${s.url}/`)
  t.match(v1.body, / v1$/)
  seen.push(Number(v1.body.split(' ')[0]))

  // v2 needs 2 s to listen; v1 keeps answering meanwhile.
  const mark = join(dir, 'v2.ready')
  writeFileSync(file, spawnYaml(app, `TAG: v2, DELAY: "2000", MARK: ${JSON.stringify(mark)}`))
  const at = s.logs().length
  s.child.kill('SIGHUP')
  t.match((await get(`${s.url}/`)).body, / v1$/, 'the old generation answers while the new spawn starts')
  await s.waitLog('reloaded', at)
  t.ok(existsSync(mark), 'the new spawn was listening when the routes were swapped')
  const v2 = await get(`${s.url}/`)
  t.equal(v2.status, 200)
  t.match(v2.body, / v2$/)
  seen.push(Number(v2.body.split(' ')[0]))
  t.equal(Number(readFileSync(mark, 'utf8')), seen[1])
  t.ok(await waitFor(() => !alive(seen[0] as number), 15_000), 'the replaced process stopped after the drain')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => !alive(seen[1] as number)), 'spawned process gone')
})

t.test('a stop signal does not wait for a reload\'s slow spawn to be ready', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file, app } = setup(t)
  writeFileSync(file, spawnYaml(app, 'TAG: v1'))
  const { s } = await serveKilled(t, file)
  t.equal((await get(`${s.url}/`)).status, 200)
  const group = s.child.pid as number
  const before = childrenOf(group).length

  // Would take 10 minutes to listen (startTimeout 120s): the reload is still waiting for it.
  writeFileSync(file, spawnYaml(app, 'TAG: v2, DELAY: "600000"'))
  s.child.kill('SIGHUP')
  t.ok(await waitFor(() => childrenOf(group).length > before, 15_000), 'the new spawn started')
  t.notOk(s.logs().some((l) => l.msg === 'reloaded'), 'the reload waits for it')
  const at = s.logs().length
  s.child.kill('SIGTERM')
  await s.waitLog('stopping: draining requests and stopping spawned processes', at)
  const code = await Promise.race([s.exited, new Promise<string>((resolve) => { const x = setTimeout(() => resolve('still running after 60 s'), 60_000); x.unref() })])
  t.equal(code, 0, 'stopped without waiting for the start')
  t.ok(await waitFor(() => processGroup(group).length === 0), 'CLI process group empty')
  t.same(childrenOf(group), [], 'no spawned process left')
})

t.test('the reloaded file\'s logLevel applies', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { dir, file, app } = setup(t)
  writeFileSync(file, spawnYaml(app, 'TAG: v1', 'logLevel: info\n'))
  const { s } = await serveKilled(t, file, { PROXYCORE_LOG_LEVEL: '' })
  writeFileSync(file, spawnYaml(app, 'TAG: v1', 'logLevel: warn\n'))
  let at = s.logs().length
  s.child.kill('SIGHUP')
  t.match(await s.waitLog('reload: log level changed', at), { from: 'info', to: 'warn' })

  // At warn, a reload's info lines are gone; a rejected reload (an error line: a unix socket in a
  // missing directory cannot be bound) ends it.
  writeFileSync(file, spawnYaml(app, 'TAG: v1', 'logLevel: warn\n').replace('listen: 127.0.0.1:0', `listen: [127.0.0.1:0, ${JSON.stringify(`unix:${join(dir, 'missing', 'http.sock')}`)}]`))
  at = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reload rejected; the previous config keeps serving', at)
  t.notOk(s.logs().slice(at).some((l) => l.msg === 'SIGHUP: reloading'), 'no info line at warn')

  writeFileSync(file, spawnYaml(app, 'TAG: v1', 'logLevel: debug\n'))
  at = s.logs().length
  s.child.kill('SIGHUP')
  t.match(await s.waitLog('reload: log level changed', at), { from: 'warn', to: 'debug' })
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('an unchanged listen keeps its socket over reloads; a changed one moves it', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file } = setup(t)
  const backend = createServer((req, res) => res.end('ok'))
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { backend.closeAllConnections(); backend.close(() => resolve()) }))
  const port = (backend.address() as AddressInfo).port
  const config = (listen: string): void => writeFileSync(file, `listen: ${listen}
routes:
  - { name: r, protocol: http, backends: ['127.0.0.1:${port}'] }
`)
  config('127.0.0.1:0')
  const { s } = await serveKilled(t, file)
  /** The addresses a reload announced as `listening`. */
  const bound = async (listen: string): Promise<unknown[]> => {
    config(listen)
    const at = s.logs().length
    s.child.kill('SIGHUP')
    await s.waitLog('reloaded', at)
    return s.logs().slice(at).filter((l) => l.msg === 'listening').map((l) => l.address)
  }
  t.same(await bound('127.0.0.1:0'), [], 'the same listen: the socket is kept, nothing bound')
  t.equal((await get(`${s.url}/`)).status, 200, 'still served where it listened from the start')
  const moved = await bound('[127.0.0.1:0, 127.0.0.2:0]')
  t.equal(moved.length, 1, 'a new address is bound')
  t.same(await bound('[127.0.0.1:0, 127.0.0.2:0]'), [], 'and kept by the next reload of the same file')
  t.equal((await get(`${s.url}/`)).status, 200, 'the start address still serves')
  t.equal((await get(`${String(moved[0])}/`)).status, 200, 'and the new one')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})
