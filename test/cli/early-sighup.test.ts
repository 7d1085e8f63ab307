/**
 * A SIGHUP right after `proxycore serve` starts (systemd's `systemctl reload` after `start`): before
 * serve installed its handler, node's default action ended the process, and a HUP while the first
 * generation was being built was logged and dropped. Now it is remembered from the first module
 * loaded on (early-signals.ts) and serve reloads once it is up. The HUP is sent as soon as the
 * process catches SIGHUP at all (SigCgt in /proc), in the middle of its start.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { cli, ensureBuilt, root } from './run.js'

/**
 * Whether the process runs proxycore (exec done: until then it is a fork of this test process,
 * with this process's handlers) and has a handler for SIGHUP (bit 0 of SigCgt).
 */
function catchesHup (pid: number): boolean {
  try {
    if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(cli)) return false
    const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m !== null && (BigInt(`0x${m[1]}`) & 1n) === 1n
  } catch {
    return false
  }
}

t.test('a SIGHUP during the start is not fatal and is followed by a reload once serving', async (t) => {
  guardLeaks(t, { timeoutMs: 30_000 })
  await ensureBuilt()
  const dir = mkdtempSync(join(tmpdir(), 'pc-early-hup-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'proxycore.yaml')
  // Many included files: reading the config takes long enough (twice: once before serve installs
  // its handlers, once while the first generation is built) for the HUP to land in the middle.
  mkdirSync(join(dir, 'conf.d'))
  for (let i = 0; i < 600; i++) writeFileSync(join(dir, 'conf.d', `r${i}.yaml`), `routes:\n  - { match: { prefix: /r${i}/ }, protocol: http, backends: ["127.0.0.1:9"] }\n`)
  writeFileSync(file, 'listen: 127.0.0.1:0\ninclude: conf.d/*.yaml\nroutes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n')
  // Without the test runner's NODE_OPTIONS (it puts them back into any child's environment, so the
  // shell unsets them before it execs node): its preload catches SIGHUP itself, before proxycore,
  // and re-raises it when it sees no other listener.
  const child = spawn('/bin/sh', ['-c', 'unset NODE_OPTIONS; exec "$0" "$@"', process.execPath, cli, 'serve', file], { cwd: root, detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PROXYCORE_LOG_FORMAT: 'json' } })
  t.teardown(() => { try { process.kill(-(child.pid as number), 'SIGKILL') } catch {} })
  const exited = new Promise<[number | null, string | null]>((resolve) => child.once('exit', (code, signal) => resolve([code, signal])))
  let err = ''
  child.stderr.setEncoding('utf8').on('data', (c: string) => { err += c })
  const logged = (msg: string): boolean => err.split('\n').some((l) => l.includes(`"msg":"${msg}"`))

  t.ok(await waitFor(() => catchesHup(child.pid as number) || child.exitCode !== null, 10_000, 1), 'the process catches SIGHUP')
  t.notOk(logged('serving'), 'the HUP comes before the proxy is serving')
  child.kill('SIGHUP')
  t.ok(await waitFor(() => logged('reloaded') || child.exitCode !== null || child.signalCode !== null, 20_000), 'a reload followed')
  t.same([child.exitCode, child.signalCode], [null, null], `still running (stderr: ${err.slice(-300)})`)
  t.ok(logged('serving'))
  child.kill('SIGTERM')
  t.same(await exited, [0, null], 'and stops cleanly')
})
