/**
 * test/cli/run.ts's serve() starts `proxycore serve` in its own process group. A test process that
 * ended while one ran (tap's timeout, a SIGTERM or SIGINT, a process.exit()) left it running for
 * good, with the backends it spawned. Now run.ts SIGKILLs them when the test process ends, and a
 * signal then still ends the process as before (tap's signal-exit handlers run, the process dies
 * of the signal). Checked on a child test process: node with tap's TypeScript loader running a
 * small script that calls serve() and registers a signal-exit handler as tap does.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { ensureBuilt, processesNaming, root, spawnedAppConfig } from './run.js'

const BACKEND = `import http from 'node:http'
http.createServer((req, res) => res.end('ok')).listen(Number(process.env.PORT), process.env.HOST)
`

// The test process: serve(), then wait for the parent's signal, or exit on its own with code 3.
const SCRIPT = (config: string): string => `
const { serve } = await import(${JSON.stringify(pathToFileURL(join(root, 'test', 'cli', 'run.ts')).href)})
const { onExit } = await import(${JSON.stringify(pathToFileURL(join(root, 'node_modules', 'signal-exit', 'dist', 'mjs', 'index.js')).href)})
onExit((code, signal) => { process.stdout.write('onExit ' + code + ' ' + signal + '\\n') })
const s = await serve(${JSON.stringify(config)})
process.stdout.write('serve ' + s.child.pid + '\\n')
if (process.env.MODE === 'exit') {
  await new Promise((resolve) => process.stdin.once('data', resolve))
  process.exit(3)
}
setInterval(() => {}, 1 << 30)
`

// tap's loader for TypeScript (run.ts) and nothing else of its (no process-info, no mocks).
const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript') || a === '--enable-source-maps')

for (const mode of ['SIGTERM', 'SIGINT', 'exit'] as const) {
  t.test(`a test process ended by ${mode === 'exit' ? 'process.exit()' : mode} leaves no serve process and no backend`, async (t) => {
    guardLeaks(t, { timeoutMs: 30_000 })
    await ensureBuilt()
    const dir = mkdtempSync(join(tmpdir(), 'pc-harness-'))
    const app = join(dir, 'app.mjs')
    let servePid = 0
    t.teardown(() => {
      for (const p of processesNaming(app)) { try { process.kill(p, 'SIGKILL') } catch {} }
      if (servePid > 0) { try { process.kill(-servePid, 'SIGKILL') } catch {} }
      rmSync(dir, { recursive: true, force: true })
    })
    writeFileSync(app, BACKEND)
    const config = join(dir, 'proxycore.yaml')
    writeFileSync(config, spawnedAppConfig(app))
    const script = join(dir, 'script.mjs')
    writeFileSync(script, SCRIPT(config))
    const env: NodeJS.ProcessEnv = { ...process.env, MODE: mode }
    // Not a child of this tap run: no TAP_* handshake, no NODE_OPTIONS preloads.
    for (const k of Object.keys(env)) if (k.startsWith('TAP') || k === 'NODE_OPTIONS') delete env[k]
    const child = spawn(process.execPath, [...loader, script], { cwd: root, env, stdio: ['pipe', 'pipe', 'pipe'] })
    t.teardown(() => { try { child.kill('SIGKILL') } catch {} })
    const exited = new Promise<[number | null, string | null]>((resolve) => child.once('exit', (code, signal) => resolve([code, signal])))
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c })
    child.stderr.setEncoding('utf8').on('data', (c: string) => { err += c })
    t.ok(await waitFor(() => /^serve \d+$/m.test(out) || child.exitCode !== null, 60_000), `serve() came up (stderr: ${err.slice(-400)})`)
    servePid = Number(/^serve (\d+)$/m.exec(out)?.[1] ?? 0)
    t.ok(servePid > 0 && alive(servePid), 'the serve process runs')
    t.ok(await waitFor(() => processesNaming(app).length > 0, 30_000), 'its backend runs')

    if (mode === 'exit') child.stdin.end('go\n')
    else child.kill(mode)
    const [code, signal] = await exited
    if (mode === 'exit') {
      t.same([code, signal], [3, null], 'the exit code is kept')
    } else {
      t.same([code, signal], [null, mode], `the process still dies of ${mode}`)
      t.match(out, new RegExp(`^onExit null ${mode}$`, 'm'), 'signal-exit handlers (as tap\'s) still ran')
    }
    t.ok(await waitFor(() => !alive(servePid), 10_000), 'no serve process left')
    t.ok(await waitFor(() => processesNaming(app).length === 0, 10_000), `no backend left (${processesNaming(app).join(' ')})`)
  })
}
