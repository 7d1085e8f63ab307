/**
 * CGI tests run the real pipeline: createProxy (through `proxyServer`) with the `cgi` adapter,
 * per-request processes from a real SpawnManager pipe spawn, and real scripts in a temp docroot.
 * Teardown order (tap runs teardowns last-registered first): the proxy closes, then the spawn
 * manager stops whatever is still running, then the temp dir goes, then the leak oracle checks.
 */
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { request, type IncomingMessage } from 'node:http'
import { dirname, join } from 'node:path'
import { SpawnManager } from '../../src/spawn/manager.js'
import type { SpawnSpec } from '../../src/spawn/types.js'
import type { ForkChild } from '../../src/spawn/fork-server.js'
import type { RouteConfig } from '../../src/config/schema.js'
import type { Logger, ProcessStarter } from '../../src/core/types.js'
import { proxyServer } from '../helpers/servers.js'
import { tempDir as makeTempDir } from '../helpers/tmp.js'

interface Tap {
  teardown (fn: () => void | Promise<void>): void
  fail (msg: string): void
  plan (n: number, comment?: string): void
}

export function tempDir (t: Tap, prefix = 'pc-cgi-'): string {
  return makeTempDir(t, prefix)
}

/** Write executable scripts (name → text) under `dir`; sub/dirs are created. */
export function writeScripts (dir: string, scripts: Record<string, string>, mode = 0o755): void {
  for (const [name, text] of Object.entries(scripts)) {
    const path = join(dir, name)
    mkdirSync(dirname(path), { recursive: true })
    writeFileSync(path, text)
    chmodSync(path, mode)
  }
}

/** A real peer is needed: skip with the reason locally, fail under CI=true (RELIABILITY harness). */
export function havePeer (t: Tap, path: string): boolean {
  if (existsSync(path)) return true
  if (process.env.CI === 'true') t.fail(`peer ${path} is not installed`)
  else t.plan(0, `peer ${path} is not installed`)
  return false
}

export interface LogLine { level: string, obj: Record<string, unknown>, msg: string }

/** A logger that keeps every line, for tests that read the log as an oracle. */
export function captureLogger (): { logger: Logger, lines: LogLine[] } {
  const lines: LogLine[] = []
  const at = (level: string) => (obj: object, msg?: string) => { lines.push({ level, obj: obj as Record<string, unknown>, msg: msg ?? '' }) }
  return { logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, lines }
}

export interface CgiProxy {
  url: string
  port: number
  manager: SpawnManager
  lines: LogLine[]
}

/**
 * Start a proxy whose `spawns` are pipe spawns of a real SpawnManager. Every spawn copies PATH from
 * the host (scripts run `head`, `sha256sum`, ...) and stops its groups quickly.
 */
export async function cgiProxy (t: Tap, spawns: Record<string, SpawnSpec>, routes: RouteConfig[]): Promise<CgiProxy> {
  const manager = new SpawnManager()
  t.teardown(() => manager.close())
  const processStarters: Record<string, ProcessStarter> = {}
  for (const [name, spec] of Object.entries(spawns)) {
    manager.add(name, { socketType: 'pipe', copyEnvironment: ['PATH'], stopTimeout: 500, ...spec })
    processStarters[name] = manager.pipeStarter(name)
  }
  await manager.start()
  const { logger, lines } = captureLogger()
  const { url, port } = await proxyServer(t, { routes, processStarters, logger })
  return { url, port, manager, lines }
}

/**
 * `scripts` written into a fresh temp dir, served by a pipe spawn `cgi` on the route `/c/` (prefix
 * stripped), with `route`'s fields on top: the set-up of the tests that drive one script by hand.
 */
export async function scriptsProxy (t: Tap, scripts: Record<string, string>, route: Partial<RouteConfig>): Promise<CgiProxy & { dir: string }> {
  const dir = tempDir(t)
  writeScripts(dir, scripts)
  const p = await cgiProxy(t, { cgi: {} }, [{ match: { prefix: '/c/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir, stripPrefix: true, ...route }])
  return { ...p, dir }
}

/** Parse `env` output (NAME=value lines) into a map. */
export function parseEnv (text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=')
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1)
  }
  return out
}

export interface Streamed { status: number, headers: IncomingMessage['headers'], body: Buffer, complete: boolean, error: Error | null }

/**
 * One request that records whether the response ended cleanly (`complete`) or was cut (aborted
 * socket, no final chunk): what the `get` helper cannot tell apart.
 */
export function fetchRaw (url: string, opts: { method?: string, headers?: Record<string, string>, body?: Buffer | string } = {}): Promise<Streamed> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      let done = false
      const finish = (complete: boolean, error: Error | null): void => {
        if (done) return
        done = true
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete, error })
      }
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => finish(true, null))
      res.on('error', (err) => finish(false, err))
      res.on('close', () => finish(res.complete, null))
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

/**
 * Run `fn` with PROXYCORE_FORK_SERVER set to `env` (undefined: unset), restored after: the helper
 * a spawn added inside `fn` uses ('perl' forces the Perl one).
 */
export function withHelperEnv<T> (env: string | undefined, fn: () => T): T {
  const saved = process.env.PROXYCORE_FORK_SERVER
  if (env === undefined) delete process.env.PROXYCORE_FORK_SERVER
  else process.env.PROXYCORE_FORK_SERVER = env
  try { return fn() } finally {
    if (saved === undefined) delete process.env.PROXYCORE_FORK_SERVER
    else process.env.PROXYCORE_FORK_SERVER = saved
  }
}

export type ForkExit = { code: number | null, signal: string | null } | { error: NodeJS.ErrnoException }

/** A fork server child's exit or its error, whichever comes; its output is drained. */
export function forkOutcome (c: ForkChild): Promise<ForkExit> {
  return new Promise((resolve) => {
    c.once('error', (error: NodeJS.ErrnoException) => resolve({ error }))
    c.once('spawn', () => { c.stdout?.resume(); c.stderr?.resume() })
    c.once('exit', (code: number | null, signal: string | null) => resolve({ code, signal }))
  })
}
