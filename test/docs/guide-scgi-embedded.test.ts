/**
 * docs/guides/python-scgi.md section 3: the embedding snippet (createProxy + the example uwsgi
 * adapter spawning uWSGI with the native protocol) with its SIGINT/SIGTERM handlers. The snippet and
 * app.py are taken from the guide itself, with only its paths and port replaced: a temp dir for
 * app.py and run/, port 0, the repository's src/index.ts and examples/uwsgi-adapter/adapter.ts.
 * Run as a child process: one request answers as the guide says, then SIGINT (Ctrl-C) stops the
 * proxy and every uWSGI process of that run (master and workers), within a bounded wait.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { join } from 'node:path'
import { alive, guardLeaks, processesIn, processGroup, readProc, waitFor } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { tempDir } from '../cgi/harness.js'
import { haveUwsgi } from '../scgi/uwsgi-peer.js'
import { guideBlocks, must } from './snippets.js'

const REPO = fileURLToPath(new URL('../../', import.meta.url))
// The TypeScript loader tap runs us with, so that a child node can load src/ and the adapter too.
const loader = process.execArgv.filter((a) => a.startsWith('--import=') && a.includes('typescript'))

const block = guideBlocks(join(REPO, 'docs/guides/python-scgi.md'))

function cmdline (pid: number): string {
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim() } catch { return '' }
}

t.test('python-scgi.md section 3: Ctrl-C stops the embedding proxy and its uWSGI', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!haveUwsgi(t)) return
  const dir = tempDir(t, 'pc-doc-uwsgi-')
  mkdirSync(join(dir, 'run'))
  writeFileSync(join(dir, 'app.py'), block('## The app', 'python'))
  let script = block('## 3. The native uwsgi protocol', 'ts')
  script = must(script, "from 'proxycore'", `from ${JSON.stringify(pathToFileURL(join(REPO, 'src/index.ts')).href)}`)
  script = must(script, "from './adapter.js'", `from ${JSON.stringify(pathToFileURL(join(REPO, 'examples/uwsgi-adapter/adapter.ts')).href)}`)
  script = must(script, /\/srv\/app/g, dir)
  script = must(script, ".listen(8080, '127.0.0.1')", ".listen(0, '127.0.0.1', () => { console.log('port ' + (server.address() as { port: number }).port) })")
  t.match(script, /process\.once\(signal/, 'the snippet installs its signal handlers')
  // .mts: an ES module wherever it lies (the temp dir has no package.json with type: module).
  const file = join(dir, 'embed.mts')
  writeFileSync(file, script)

  const env = { ...process.env }
  delete env.NODE_OPTIONS
  // cwd: the repository, so the TypeScript loader finds its tsconfig (ESM, NodeNext).
  const child: ChildProcess = spawn(process.execPath, [...loader, file], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout!.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr!.on('data', (c: Buffer) => { if (err.length < 20_000) err += c.toString() })
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()))
  let seen: number[] = []
  t.teardown(async () => {
    // Whatever this run left behind (a failure above): its uWSGI processes by pid, then the child.
    for (const pid of [...seen, ...processesIn(dir)]) { try { process.kill(pid, 'SIGKILL') } catch {} }
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await closed
  })

  const listening = await waitFor(() => /port \d+\n/.test(out) || child.exitCode !== null, 60_000)
  t.ok(listening && child.exitCode === null, `the embedding script listens ${err}`)
  if (!/port \d+\n/.test(out)) return
  const port = Number(/port (\d+)/.exec(out)![1])

  const r = await get(`http://127.0.0.1:${port}/app/native/path`)
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'Hello from WSGI: SCRIPT_NAME=/app PATH_INFO=/native/path\n', 'as the guide says')

  // uWSGI of this run: the master and its 2 workers, all in the spawn's cwd.
  t.ok(await waitFor(() => { seen = processesIn(dir); return seen.length >= 3 }, 20_000), `uWSGI master and workers run: ${seen.map((p) => `${p} ${cmdline(p)}`).join('; ')}`)
  t.ok(seen.every((p) => /uwsgi/.test(cmdline(p))), 'they are uWSGI')
  const groups = [...new Set(seen.map((p) => readProc(p)?.pgid).filter((g): g is number => g !== undefined))]

  child.kill('SIGINT')
  const exited = await waitFor(() => child.exitCode !== null || child.signalCode !== null, 30_000)
  t.ok(exited, 'SIGINT: the embedding process exits')
  t.equal(child.exitCode, 0, `it exits normally (code ${child.exitCode}, signal ${child.signalCode})${child.exitCode === 0 ? '' : ` ${err}`}`)
  const gone = await waitFor(() => seen.every((p) => !alive(p)) && processesIn(dir).length === 0, 30_000)
  t.ok(gone, `no uWSGI process of the run is left: ${processesIn(dir).map((p) => `${p} ${cmdline(p)}`).join('; ')}`)
  t.same(groups.flatMap((g) => processGroup(g).filter((p) => p.state !== 'Z').map((p) => `${p.pid} ${p.comm}`)), [], 'their process groups are empty')
})
