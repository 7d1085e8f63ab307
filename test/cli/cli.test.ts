/**
 * The CLI as a real child process: check exit codes, serve + SIGTERM leaving no process behind,
 * SIGHUP reload under load with zero failed requests, and a broken reload that keeps serving.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { guardLeaks, processGroup, alive, waitFor } from '../helpers/leaks.js'
import { root, runCli, serve } from './run.js'

const fixtures = join(root, 'test', 'config', 'fixtures')
const app = join(root, 'examples', 'demo', 'backends', 'http-app.mjs')

function config (dir: string, extraRoute = ''): string {
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0
status: { path: /server-status }
drainTimeout: 5s
spawns:
  app: { binPath: [${JSON.stringify(process.execPath)}, ${JSON.stringify(app)}], socketName: 127.0.0.1:0, handoff: self }
routes:
${extraRoute}  - { name: app, protocol: http, spawn: app }
`)
  return file
}

async function status (url: string): Promise<{ spawns: Array<{ name: string, processes: Array<{ pid: number }> }> }> {
  return await (await fetch(`${url}/server-status?format=json`)).json() as { spawns: Array<{ name: string, processes: Array<{ pid: number }> }> }
}

t.test('check: 0 valid, 2 invalid with every problem at file:line, 2 on usage errors', async (t) => {
  guardLeaks(t)
  const ok = await runCli(['check', join(fixtures, 'valid', 'minimal.json')])
  t.equal(ok.code, 0)
  t.match(ok.stdout, /ok \(1 route/)
  const bad = await runCli(['check', join(fixtures, 'invalid', 'cross.yaml'), '--explain'], { PROXYCORE_TEST_UNSET_VAR: '' })
  t.equal(bad.code, 2)
  t.match(bad.stderr, /cross\.yaml:21:12: \/routes\/0\/spawn: no spawn named "ph"/)
  t.match(bad.stderr, /cross\.yaml:14:6: \/spawns\/u\/group: user needs group/)
  t.match(bad.stderr, /Name of a spawn whose processes serve this route/, '--explain prints the field docs')
  t.match(bad.stderr, /6 problem\(s\)/)
  t.equal((await runCli(['check'])).code, 2)
  t.equal((await runCli(['frobnicate'])).code, 2)
  t.equal((await runCli(['--version'])).code, 0)
  const help = await runCli(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /proxycore serve \[config\]/)
  for (const sub of [['serve', '--help'], ['check', 'x.yaml', '-h'], ['status', '--help']]) {
    const r = await runCli(sub)
    t.same([r.code, r.stdout.includes('proxycore serve [config]'), r.stderr], [0, true, ''], `${sub.join(' ')}: the usage, exit 0`)
  }
  const names = await runCli(['check', join(fixtures, 'invalid', 'names.yaml')])
  t.equal(names.code, 2, 'bad spawn names: exit 2, not a crash')
  t.notMatch(names.stderr, /TypeError|at .*\.js:\d+/, 'no stack trace')
  t.match(names.stderr, /names\.yaml:13:3: \/spawns\/bad name: bad spawn name "bad name": a spawn name may contain only ASCII letters, digits, "_", "\." and "-"\n/)
  t.match(names.stderr, /names\.yaml:16:3: \/spawns\/a~1b: bad spawn name "a\/b"/)
  t.match(names.stderr, /names\.yaml:23:3: \/tenants\/t\\nu: bad tenant name "t\\nu": a tenant name must be a single line\n/, 'a line break in a key is shown escaped')
  t.ok(names.stderr.trim().split('\n').every((l) => l.includes('names.yaml')), 'one line per problem')
  t.match(names.stderr, /6 problem\(s\)/)
  const namesExplained = await runCli(['check', join(fixtures, 'invalid', 'names.yaml'), '--explain'])
  t.match(namesExplained.stderr, /\/spawns\/bad name: bad spawn name .*\n {4}\/spawns: Backend programs proxycore starts and supervises, by name \(ASCII letters, digits, `_`, `\.` and `-`\)\.\n/, '--explain: the map\'s doc, which names the allowed characters')
  const missing = await runCli(['serve', join(fixtures, 'invalid', 'typos.yaml')])
  t.equal(missing.code, 2, 'serve refuses an invalid config with exit 2')
})

t.test('serve, SIGHUP reload under load (0 failures), broken reload keeps serving, SIGTERM leaves nothing', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = config(dir)
  const s = await serve(file)
  t.teardown(() => { try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {} })
  const first = await fetch(`${s.url}/pid`)
  t.equal(first.status, 200)
  const appPid = Number(await first.text())
  t.ok(alive(appPid))

  let failures = 0
  let sent = 0
  let running = true
  const load = async (): Promise<void> => {
    while (running) {
      const r = await fetch(`${s.url}/pid`).catch(() => null)
      sent++
      if (r === null || r.status !== 200) failures++
      else await r.text()
    }
  }
  const loads = [load(), load()]

  // Good reload: a new route; the unchanged spawn keeps its process.
  config(dir, '  - { name: new, match: { prefix: /new/ }, protocol: http, spawn: app, stripPrefix: true }\n')
  const mark = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reloaded', mark)
  t.equal((await fetch(`${s.url}/new/pid`)).status, 200, 'the new route serves')
  t.equal(Number(await (await fetch(`${s.url}/pid`)).text()), appPid, 'unchanged spawn kept running')

  // Broken reload: rejected, logged, the old config keeps serving.
  writeFileSync(file, 'routes:\n  - protocol: gopher\n    backends: [nowhere]\n')
  const mark2 = s.logs().length
  s.child.kill('SIGHUP')
  const rejected = await s.waitLog('reload rejected; the previous config keeps serving', mark2)
  t.ok(Array.isArray(rejected.issues) && rejected.issues.length >= 1, 'issues logged')
  t.equal((await fetch(`${s.url}/new/pid`)).status, 200, 'still the last good config')

  await waitFor(() => sent >= 50, 10_000)
  running = false
  await Promise.all(loads)
  t.equal(failures, 0, `0 failed of ${sent} requests across two reloads`)

  const pids = (await status(s.url)).spawns.flatMap((x) => x.processes.map((p) => p.pid))
  t.ok(pids.includes(appPid))
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0, 'exit 0 after SIGTERM')
  t.ok(await waitFor(() => processGroup(s.child.pid as number).length === 0), 'CLI process group empty')
  t.ok(await waitFor(() => pids.every((p) => !alive(p))), 'every spawned process gone')
})

t.test('serve collects a large upload\'s spent chunks with V8 scavenges of its own (src/core/scavenge.ts)', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const sink = createServer((req, res) => {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => res.end(String(n)))
  })
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { sink.closeAllConnections(); sink.close(() => resolve()) }))
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0\nroutes:\n  - { protocol: http, backends: ['127.0.0.1:${(sink.address() as AddressInfo).port}'] }\n`)
  // --trace-gc names why each collection ran; gc() called by the program reads "testing".
  const s = await serve(file, {}, ['--trace-gc'])
  t.teardown(() => { try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {} })
  const size = 24 * 1024 * 1024
  const r = await fetch(`${s.url}/up`, { method: 'POST', body: new Uint8Array(size) })
  t.equal(await r.text(), String(size), 'the backend got every byte')
  const asked = s.stdout().split('\n').filter((l) => /Scavenge.*testing/.test(l)).length
  t.ok(asked >= 1, `young-generation collections asked for by proxycore: ${asked}`)
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0, 'exit 0 after SIGTERM')
  t.ok(await waitFor(() => processGroup(s.child.pid as number).length === 0), 'CLI process group empty')
})
