/**
 * Real uWSGI as a test peer (RELIABILITY harness: real peers; missing peer → skip locally, fail
 * under CI=true). One master + workers in their own process group, listening on a unix socket in
 * a temp dir; stopped by killing the whole group, so no worker outlives the test.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { waitFor } from '../helpers/leaks.js'
import { connectable } from '../../bench/lib/proc.mjs'

export const UWSGI = '/usr/bin/uwsgi'
export const ECHO_APP = fileURLToPath(new URL('./fixtures/echo_app.py', import.meta.url))

/** Why the peer cannot run here, or null. */
export function uwsgiMissing (): string | null {
  if (!existsSync(UWSGI)) return `${UWSGI} not installed (apt-get install uwsgi uwsgi-plugin-python3)`
  if (!existsSync('/usr/lib/uwsgi/plugins/python3_plugin.so')) return 'uwsgi-plugin-python3 not installed'
  return null
}

/** In a test body: true when uWSGI can run, else skips the test (plan 0, the reason) or fails it under CI=true. */
export function haveUwsgi (t: { fail (msg: string): void, plan (n: number, comment?: string): void }): boolean {
  const why = uwsgiMissing()
  if (why === null) return true
  if (process.env.CI === 'true') t.fail(`peer ${UWSGI}: ${why}`)
  else t.plan(0, why)
  return false
}

/** The skip option for a test that needs uWSGI: fails instead under CI=true. */
export function uwsgiSkip (): string | false {
  const why = uwsgiMissing()
  if (why === null) return false
  if (process.env.CI === 'true') throw new Error(`uWSGI peer missing in CI: ${why}`)
  return why
}

export interface UwsgiPeer {
  readonly socketPath: string
  readonly pid: number
  stop (): Promise<void>
}

/** Start uWSGI speaking `mode` ('scgi' = --scgi-socket, 'uwsgi' = native --socket). */
export async function startUwsgi (mode: 'scgi' | 'uwsgi', app = ECHO_APP): Promise<UwsgiPeer> {
  return launchUwsgi((socketPath) => [
    '--plugin', 'python3', mode === 'scgi' ? '--scgi-socket' : '--socket', socketPath,
    '--wsgi-file', app, '--master', '--processes', '2', '--die-on-term', '--disable-logging',
    '--buffer-size', '32768'
  ])
}

/**
 * uWSGI in SCGI mode serving the WSGI app `source`, written to `dir` as app.py; stopped at `t`'s
 * teardown. `app` is the file's path (a route's scriptFilename).
 */
export async function startUwsgiApp (t: { teardown (fn: () => unknown): void }, dir: string, source: string): Promise<{ app: string, peer: UwsgiPeer }> {
  const app = join(dir, 'app.py')
  writeFileSync(app, source)
  const peer = await startUwsgi('scgi', app)
  t.teardown(() => peer.stop())
  return { app, peer }
}

/** Start uWSGI with `args` (given its socket path, in a fresh temp dir); ready once it accepts. */
export async function launchUwsgi (args: (socketPath: string) => string[]): Promise<UwsgiPeer> {
  const dir = await mkdtemp(join(tmpdir(), 'proxycore-uwsgi-'))
  const socketPath = join(dir, 'app.sock')
  const child: ChildProcess = spawn(UWSGI, args(socketPath), { detached: true, stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  child.stderr?.on('data', (c: Buffer) => { if (log.length < 20000) log += c.toString() })
  let exited = false
  const exit = new Promise<void>((resolve) => child.once('exit', () => { exited = true; resolve() }))
  const stop = async (): Promise<void> => {
    if (!exited && child.pid !== undefined) {
      try { process.kill(-child.pid, 'SIGKILL') } catch { /* group already gone */ }
    }
    await exit
    child.stderr?.destroy()
    await rm(dir, { recursive: true, force: true })
  }
  const ready = await waitFor(async () => exited || await connectable(socketPath), 15000, 20)
  if (!ready || exited) {
    await stop()
    throw new Error(`uWSGI did not become ready: ${log.slice(-2000)}`)
  }
  return { socketPath, pid: child.pid as number, stop }
}
