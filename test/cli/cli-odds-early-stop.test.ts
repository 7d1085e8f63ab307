/**
 * A stop (SIGTERM/SIGINT) right after `proxycore serve` starts, as a supervisor sends when it
 * changes its mind at once: before serve installed its handlers (imports, the first read of the
 * config), node's default action ended the process (exit 143 / 130, no log line). Now such a stop
 * is remembered (early-signals.ts) and serve starts nothing, logs `stopped` and exits 0. Only a
 * signal before node runs proxycore's first module still has node's default action.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { cli, ensureBuilt, root } from './run.js'

interface Tap { teardown (fn: () => void | Promise<void>): void }

/** The process runs proxycore (exec done) and early-signals.ts is loaded (SIGHUP caught: bit 0 of SigCgt). */
function earlyHandlersIn (pid: number): boolean {
  try {
    if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(cli)) return false
    const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m !== null && (BigInt(`0x${m[1]}`) & 1n) === 1n
  } catch {
    return false
  }
}

/** Live (not zombie) processes whose command line names `path`. */
function running (path: string): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      if (!readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').includes(path)) continue
      if (/^State:\s*Z/m.test(readFileSync(`/proc/${name}/status`, 'utf8'))) continue
      out.push(Number(name))
    } catch {}
  }
  return out
}

// Listens only after a while: the start waits for it, so a stop can land in the middle.
const SLOW_BACKEND = `import http from 'node:http'
setTimeout(() => http.createServer((req, res) => res.end('ok')).listen(Number(process.env.PORT), process.env.HOST), 1500)
`

function setup (t: Tap): { file: string, app: string } {
  const dir = mkdtempSync(join(tmpdir(), 'pc-early-stop-'))
  const app = join(dir, 'app.mjs')
  t.teardown(() => {
    for (const p of running(app)) { try { process.kill(-p, 'SIGKILL') } catch {} try { process.kill(p, 'SIGKILL') } catch {} }
    rmSync(dir, { recursive: true, force: true })
  })
  writeFileSync(app, SLOW_BACKEND)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0
spawns:
  app:
    binPath: [${JSON.stringify(process.execPath)}, ${JSON.stringify(app)}]
    socketName: 127.0.0.1:0
    handoff: self
    startTimeout: 60s
routes:
  - { name: app, protocol: http, spawn: app }
`)
  return { file, app }
}

interface Run { pid: number, exited: Promise<[number | null, string | null]>, logged: (msg: string) => boolean, err: () => string }

function start (t: Tap, file: string): Run {
  // Without the test runner's NODE_OPTIONS (as a supervisor starts it): tap's preload catches the
  // signals itself.
  const child = spawn('/bin/sh', ['-c', 'unset NODE_OPTIONS; exec "$0" "$@"', process.execPath, cli, 'serve', file], { cwd: root, detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PROXYCORE_LOG_FORMAT: 'json' } })
  t.teardown(() => { try { process.kill(-(child.pid as number), 'SIGKILL') } catch {} })
  const exited = new Promise<[number | null, string | null]>((resolve) => child.once('exit', (code, signal) => resolve([code, signal])))
  let err = ''
  child.stderr.setEncoding('utf8').on('data', (c: string) => { err += c })
  const logged = (msg: string): boolean => err.split('\n').some((l) => l.includes(`"msg":"${msg}"`))
  return { pid: child.pid as number, exited, logged, err: () => err }
}

const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGTERM', 'SIGINT'] as const

t.test('a stop while the modules load or the config is first read: exit 0, `stopped`, nothing started', async (t) => {
  guardLeaks(t, { timeoutMs: 30_000 })
  await ensureBuilt()
  const { file, app } = setup(t)
  for (const sig of SIGNALS) {
    const r = start(t, file)
    // As soon as proxycore's first module runs (before it, node's own default applies).
    t.ok(await waitFor(() => earlyHandlersIn(r.pid), 20_000, 1), `${sig}: the process catches signals`)
    t.notOk(r.logged('serving'), `${sig}: sent before the proxy is serving`)
    process.kill(r.pid, sig)
    const [code, signal] = await r.exited
    t.same([code, signal], [0, null], `${sig}: exit 0, not killed by the signal (stderr: ${r.err().slice(-400)})`)
    t.ok(r.logged('stopped'), `${sig}: logged "stopped"`)
    t.notOk(r.logged('serving'), `${sig}: nothing was started`)
    t.same(running(app), [], `${sig}: no backend left`)
  }
})

t.test('a stop at any moment of the start: exit 0 with `stopped` once proxycore runs, no backend left', async (t) => {
  guardLeaks(t, { timeoutMs: 30_000 })
  await ensureBuilt()
  const { file, app } = setup(t)
  // The moment varies on purpose: the first right after the spawn, the others 0, 70, … 420 ms
  // after proxycore's first module ran (imports, the config's first read, the start, serving).
  for (let k = 0; k < 8; k++) {
    const sig = SIGNALS[k % SIGNALS.length]
    const r = start(t, file)
    let when = 'right after the spawn'
    if (k > 0) {
      t.ok(await waitFor(() => earlyHandlersIn(r.pid), 20_000, 1), `${sig}: the process catches signals`)
      await new Promise((resolve) => setTimeout(resolve, (k - 1) * 70))
      when = `${(k - 1) * 70} ms after the first module`
    }
    // Before proxycore's first module runs, node's own default action applies: nothing can catch it.
    const caught = earlyHandlersIn(r.pid)
    process.kill(r.pid, sig)
    const [code, signal] = await r.exited
    if (caught) {
      t.same([code, signal], [0, null], `${sig} ${when}: exit 0 (stderr: ${r.err().slice(-400)})`)
      t.ok(r.logged('stopped'), `${sig} ${when}: logged "stopped"`)
    } else {
      t.ok(signal === sig || code === 0, `${sig} ${when}, before node ran proxycore: ${code} ${signal}`)
    }
    t.ok(await waitFor(() => running(app).length === 0, 15_000), `${sig} ${when}: no backend left (${running(app).join(' ')})`)
  }
})
