/**
 * A stop (SIGTERM/SIGINT) right after `proxycore serve` starts, as a supervisor sends when it
 * changes its mind at once: before serve installed its handlers (imports, the first read of the
 * config), node's default action ended the process (exit 143 / 130, no log line). Now such a stop
 * is remembered (early-signals.ts) and serve starts nothing, logs `stopped` and exits 0. Only a
 * signal before node runs proxycore's first module still has node's default action.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { catchesHup, ensureBuilt, processesNaming, serveBare, spawnedAppConfig } from './run.js'

interface Tap { teardown (fn: () => void | Promise<void>): void }

// Listens only after a while: the start waits for it, so a stop can land in the middle.
const SLOW_BACKEND = `import http from 'node:http'
setTimeout(() => http.createServer((req, res) => res.end('ok')).listen(Number(process.env.PORT), process.env.HOST), 1500)
`

function setup (t: Tap): { file: string, app: string } {
  const dir = mkdtempSync(join(tmpdir(), 'pc-early-stop-'))
  const app = join(dir, 'app.mjs')
  t.teardown(() => {
    for (const p of processesNaming(app)) { try { process.kill(-p, 'SIGKILL') } catch {} try { process.kill(p, 'SIGKILL') } catch {} }
    rmSync(dir, { recursive: true, force: true })
  })
  writeFileSync(app, SLOW_BACKEND)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, spawnedAppConfig(app, '    startTimeout: 60s\n'))
  return { file, app }
}

const start = serveBare

const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGTERM', 'SIGINT'] as const

t.test('a stop while the modules load or the config is first read: exit 0, `stopped`, nothing started', async (t) => {
  guardLeaks(t, { timeoutMs: 30_000 })
  await ensureBuilt()
  const { file, app } = setup(t)
  for (const sig of SIGNALS) {
    const r = start(t, file)
    // As soon as proxycore's first module runs (before it, node's own default applies).
    t.ok(await waitFor(() => catchesHup(r.pid), 20_000, 1), `${sig}: the process catches signals`)
    t.notOk(r.logged('serving'), `${sig}: sent before the proxy is serving`)
    process.kill(r.pid, sig)
    const [code, signal] = await r.exited
    t.same([code, signal], [0, null], `${sig}: exit 0, not killed by the signal (stderr: ${r.err().slice(-400)})`)
    t.ok(r.logged('stopped'), `${sig}: logged "stopped"`)
    t.notOk(r.logged('serving'), `${sig}: nothing was started`)
    t.same(processesNaming(app), [], `${sig}: no backend left`)
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
      t.ok(await waitFor(() => catchesHup(r.pid), 20_000, 1), `${sig}: the process catches signals`)
      await new Promise((resolve) => setTimeout(resolve, (k - 1) * 70))
      when = `${(k - 1) * 70} ms after the first module`
    }
    // Before proxycore's first module runs, node's own default action applies: nothing can catch it.
    const caught = catchesHup(r.pid)
    process.kill(r.pid, sig)
    const [code, signal] = await r.exited
    if (caught) {
      t.same([code, signal], [0, null], `${sig} ${when}: exit 0 (stderr: ${r.err().slice(-400)})`)
      t.ok(r.logged('stopped'), `${sig} ${when}: logged "stopped"`)
    } else {
      t.ok(signal === sig || code === 0, `${sig} ${when}, before node ran proxycore: ${code} ${signal}`)
    }
    t.ok(await waitFor(() => processesNaming(app).length === 0, 15_000), `${sig} ${when}: no backend left (${processesNaming(app).join(' ')})`)
  }
})
