/**
 * Running the real CLI (`node dist/cli/main.js`) as a child, as operators and `npm start` do.
 * dist/ is rebuilt first when any file under src/ is newer (CI's `npm ci` builds it through
 * `prepare`; locally it may be stale). A lock directory keeps parallel test files from building twice.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { alive as isLive, waitFor } from '../helpers/leaks.js'
import { runNode } from '../helpers/run-node.js'

export const root = fileURLToPath(new URL('../../', import.meta.url))
export const cli = join(root, 'dist', 'cli', 'main.js')

function newest (dir: string): number {
  let t = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs)
  }
  return t
}

function stale (): boolean {
  try { return statSync(cli).mtimeMs < newest(join(root, 'src')) } catch { return true }
}

export async function ensureBuilt (): Promise<void> {
  if (!stale()) return
  const lock = join(root, 'dist', '.build-lock')
  mkdirSync(join(root, 'dist'), { recursive: true })
  const got = await waitFor(() => {
    try { mkdirSync(lock); writeFileSync(join(lock, 'pid'), String(process.pid)); return true } catch {
      // A lock left by a test process killed mid-build (tap's timeout) would stall every later run.
      if (!alive(lock)) rmSync(lock, { recursive: true, force: true })
      return !stale()
    }
  }, 120_000, 50)
  if (!got) throw new Error('timed out waiting for another build')
  try {
    if (stale()) {
      const r = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: root, encoding: 'utf8' })
      if (r.status !== 0) throw new Error(`build failed:\n${r.stdout}${r.stderr}`)
    }
  } finally {
    rmSync(lock, { recursive: true, force: true })
  }
}

/** Whether the process that holds `lock` still runs (a lock without its pid counts as held for 10 s). */
function alive (lock: string): boolean {
  let pid: number
  try { pid = Number(readFileSync(join(lock, 'pid'), 'utf8')) } catch {
    try { return Date.now() - statSync(lock).mtimeMs < 10_000 } catch { return false }
  }
  if (!Number.isInteger(pid) || pid <= 0) return true
  try { process.kill(pid, 0); return true } catch (err) { return (err as NodeJS.ErrnoException).code !== 'ESRCH' }
}

export async function runCli (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null, stdout: string, stderr: string }> {
  await ensureBuilt()
  return await runNode([cli, ...args], { cwd: root, env: { ...process.env, ...env } })
}

export interface Served {
  child: ChildProcess
  url: string
  /** JSON log lines so far. */
  logs: () => Array<Record<string, unknown>>
  waitLog: (msg: string, after?: number) => Promise<Record<string, unknown>>
  /** What the process printed on stdout (V8's --trace-gc lines, say). */
  stdout: () => string
  exited: Promise<number | null>
}

/** The JSON log lines a stream carries, parsed as they come (a line that is not JSON as `{ msg }`). */
export function jsonLines (stream: NodeJS.ReadableStream | null): Array<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = []
  let buf = ''
  stream?.on('data', (c: Buffer | string) => {
    buf += c.toString()
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      try { lines.push(JSON.parse(line) as Record<string, unknown>) } catch { lines.push({ msg: line }) }
    }
  })
  return lines
}

/**
 * `proxycore serve <config>` in its own process group; resolves once it logged its address.
 * `nodeArgs` go to node before the script (`--trace-gc`).
 */
export async function serve (config: string, env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Promise<Served> {
  await ensureBuilt()
  const child = spawn(process.execPath, [...nodeArgs, cli, 'serve', config], { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PROXYCORE_LOG_FORMAT: 'json', ...env } })
  reapAtEnd(child)
  let out = ''
  child.stdout?.setEncoding('utf8')
  child.stdout?.on('data', (c: string) => { out += c })
  const lines = jsonLines(child.stderr)
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  let done = false
  void exited.then(() => { done = true })
  const waitLog = async (msg: string, after = 0): Promise<Record<string, unknown>> => {
    let hit: Record<string, unknown> | undefined
    await waitFor(() => { hit = lines.slice(after).find((l) => l.msg === msg); return hit !== undefined || done }, 30_000)
    if (hit === undefined) throw new Error(`no "${msg}" log line; got:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`)
    return hit
  }
  // "serving" comes once every listener is bound (and SIGHUP means reload): waiting only for the
  // first "listening" raced a second listener (a unix socket not there yet: ENOENT on CI).
  const serving = await waitLog('serving')
  const addresses = serving.addresses as string[]
  return { child, url: addresses[0], logs: () => lines, waitLog, stdout: () => out, exited }
}

/**
 * Serve children still running. A test process that ends while they run — tap's timeout
 * (SIGALRM, then an exit), a SIGTERM or SIGINT to it, a process.exit() — would leave them (each in
 * its own process group) and the backends they spawned running for good. They are SIGKILLed then:
 * every process below each of them by its process group (spawned backends have their own), then
 * its own group. Synchronous: it runs in an 'exit' listener and in signal handlers.
 */
const running = new Set<number>()
let reaping = false

function reapAll (): void {
  if (running.size === 0) return
  const parent = new Map<number, number>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {}
  }
  for (const pid of running) {
    const below = new Set<number>([pid])
    for (let grew = true; grew;) {
      grew = false
      for (const [p, pp] of parent) if (below.has(pp) && !below.has(p)) { below.add(p); grew = true }
    }
    below.delete(pid)
    for (const p of below) { try { process.kill(-p, 'SIGKILL') } catch {} try { process.kill(p, 'SIGKILL') } catch {} }
    try { process.kill(-pid, 'SIGKILL') } catch {}
  }
  running.clear()
}

/**
 * On SIGTERM/SIGINT: reap, step aside and raise the signal again, so whatever else handles it
 * (tap's signal-exit, which acts only when its own listeners are the last) or node's default
 * action ends the process as it would have without this listener.
 */
function onStopSignal (signal: NodeJS.Signals): void {
  reapAll()
  process.off('SIGTERM', onStopSignal)
  process.off('SIGINT', onStopSignal)
  process.kill(process.pid, signal)
}

function reapAtEnd (child: ChildProcess): void {
  const pid = child.pid
  if (pid === undefined) return
  running.add(pid)
  child.once('exit', () => { running.delete(pid) })
  if (reaping) return
  reaping = true
  process.on('exit', reapAll)
  process.on('SIGTERM', onStopSignal)
  process.on('SIGINT', onStopSignal)
}

/**
 * Whether `pid` runs proxycore (exec done: until then it is a fork of the test process, with its
 * handlers) and catches SIGHUP (bit 0 of SigCgt): early-signals.ts is loaded, SIGHUP installed last.
 */
export function catchesHup (pid: number): boolean {
  try {
    if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(cli)) return false
    const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m !== null && (BigInt(`0x${m[1]}`) & 1n) === 1n
  } catch {
    return false
  }
}

/** Live (not zombie) processes whose command line has `path` as one of its arguments. */
export function processesNaming (path: string): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      if (!readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').includes(path)) continue
      if (isLive(Number(name))) out.push(Number(name))
    } catch {}
  }
  return out
}

/** A config serving `app` (a node script listening on $HOST:$PORT) as the spawn `app` behind route `app`. */
export function spawnedAppConfig (app: string, spawnExtra = ''): string {
  return `listen: 127.0.0.1:0
spawns:
  app:
    binPath: [${JSON.stringify(process.execPath)}, ${JSON.stringify(app)}]
    socketName: 127.0.0.1:0
    handoff: self
${spawnExtra}routes:
  - { name: app, protocol: http, spawn: app }
`
}

interface Teardown { teardown (fn: () => void | Promise<void>): void }

/** A `serve` started as a supervisor starts it, its stderr kept. */
export interface BareServe { child: ChildProcess, pid: number, exited: Promise<[number | null, string | null]>, logged: (msg: string) => boolean, err: () => string }

/**
 * `proxycore serve <file>` without the test runner's NODE_OPTIONS (tap puts them back into any
 * child's environment, so the shell unsets them before it execs node): tap's preload would catch
 * SIGHUP, SIGTERM and SIGINT itself, before proxycore, and re-raise them when it sees no other
 * listener. Killed with its process group at teardown.
 */
export function serveBare (t: Teardown, file: string): BareServe {
  const child = spawn('/bin/sh', ['-c', 'unset NODE_OPTIONS; exec "$0" "$@"', process.execPath, cli, 'serve', file], { cwd: root, detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PROXYCORE_LOG_FORMAT: 'json' } })
  t.teardown(() => { try { process.kill(-(child.pid as number), 'SIGKILL') } catch {} })
  const exited = new Promise<[number | null, string | null]>((resolve) => child.once('exit', (code, signal) => resolve([code, signal])))
  let err = ''
  child.stderr?.setEncoding('utf8').on('data', (c: string) => { err += c })
  const logged = (msg: string): boolean => err.split('\n').some((l) => l.includes(`"msg":"${msg}"`))
  return { child, pid: child.pid as number, exited, logged, err: () => err }
}

/** A temporary directory (removed at teardown) with `app.mjs` holding `backend`, and where its config goes. */
export function appDir (t: Teardown, backend: string, prefix: string): { dir: string, file: string, app: string } {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const app = join(dir, 'app.mjs')
  writeFileSync(app, backend)
  return { dir, file: join(dir, 'proxycore.yaml'), app }
}

/** At teardown, SIGKILL the proxy's process group and those of `pids()`: a failing test leaves nothing running. */
/**
 * `serve config`, killed at teardown (process group) together with every group in `seen`: push
 * the pids of the backends it starts there.
 */
export async function serveKilled (t: Teardown, config: string, env: NodeJS.ProcessEnv = {}): Promise<{ s: Served, seen: number[] }> {
  const s = await serve(config, env)
  const seen: number[] = []
  killAtTeardown(t, s, () => seen)
  return { s, seen }
}

/** GET `url` with fetch: status and body text. */
export async function getText (url: string): Promise<{ status: number, body: string }> {
  const r = await fetch(url)
  return { status: r.status, body: await r.text() }
}

export function killAtTeardown (t: Teardown, s: Served, pids: () => number[]): void {
  t.teardown(() => {
    try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {}
    for (const p of pids()) { try { process.kill(-p, 'SIGKILL') } catch {} }
  })
}

/**
 * Write `text` to the config `file`, SIGHUP the serve, and wait for the log line that ended the
 * reload (`reloaded`, or `reload rejected…`): that line and the log index it was looked for from.
 */
export async function sighupReload (s: Served, file: string, text: string): Promise<{ at: number, line: Record<string, unknown> }> {
  writeFileSync(file, text)
  const at = s.logs().length
  s.child.kill('SIGHUP')
  let line: Record<string, unknown> | undefined
  await waitFor(() => {
    line = s.logs().slice(at).find((l) => l.msg === 'reloaded' || String(l.msg).startsWith('reload rejected'))
    return line !== undefined
  }, 30_000)
  if (line === undefined) throw new Error(`reload gave no outcome; got:\n${s.logs().slice(at).map((l) => JSON.stringify(l)).join('\n')}`)
  return { at, line }
}
