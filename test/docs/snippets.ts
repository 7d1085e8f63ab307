/**
 * Running a doc's snippets as a new user does: a scratch project whose node_modules/proxycore is
 * this checkout (dist/ and the package's exports, as an install gives them), child processes
 * killed at teardown, waits with deadlines. Shared by test/docs/guide-*-claims.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import { waitFor } from '../helpers/leaks.js'
import { root } from '../cli/run.js'

type Tap = Test

export { freePort } from '../helpers/ports.js'

/** A new user's project: ESM, with proxycore (this checkout) and the guide's other packages. */
export function project (t: Tap): string {
  const dir = mkdtempSync(join(tmpdir(), 'pc-doc-gs-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'gs', type: 'module', private: true }))
  mkdirSync(join(dir, 'node_modules'))
  symlinkSync(root, join(dir, 'node_modules', 'proxycore'))
  for (const dep of ['express', 'fastify', '@fastify']) symlinkSync(join(root, 'node_modules', dep), join(dir, 'node_modules', dep))
  return dir
}

export interface Run { child: ChildProcess, out: () => string, exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }> }

/** `node <args>` in `cwd`, killed at teardown if it is still running. */
export function run (t: Tap, cwd: string, args: string[], env: NodeJS.ProcessEnv = userEnv): Run {
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout?.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr?.on('data', (c: Buffer) => { out += c.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  t.teardown(async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited } })
  return { child, out: () => out, exited }
}

/** Wait until `url` answers (the snippet is listening), with a deadline. */
export async function answering (url: string, r: Run, timeoutMs = 60_000): Promise<void> {
  const ok = await waitFor(async () => { try { await (await fetch(url)).arrayBuffer(); return true } catch { return r.child.exitCode !== null } }, timeoutMs, 25)
  if (!ok || r.child.exitCode !== null) throw new Error(`${url} never answered; the snippet printed:\n${r.out()}`)
}

export async function text (url: string, init?: RequestInit): Promise<string> {
  return await (await fetch(url, init)).text()
}

/** Signal a snippet and wait (with a deadline) for it to exit by itself. */
export async function stops (t: Tap, r: Run, signal: NodeJS.Signals): Promise<void> {
  r.child.kill(signal)
  const timer = new Promise<'timeout'>((resolve) => { const h = setTimeout(() => resolve('timeout'), 15_000); r.exited.then(() => clearTimeout(h), () => {}) })
  const how = await Promise.race([r.exited, timer])
  t.not(how, 'timeout', `${signal} stops it within 15 s`)
  t.same(how, { code: 0, signal: null }, `${signal}: exit code 0, by its own handler`)
}

/** A user's environment: without the NODE_OPTIONS tap adds for its own bookkeeping. */
export const userEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_OPTIONS'))

/**
 * A `proxycore serve` config for a php-cgi site in `dir` (one worker per process, `.php` routed to
 * it): `top` goes before `spawns` (status, timeouts), `routes` after the php route.
 */
export function phpSiteYaml (phpCgi: string, dir: string, top = '', routes = ''): string {
  return `listen: 127.0.0.1:0
drainTimeout: 5s
${top}
spawns:
  php:
    binPath: ${phpCgi}
    socketName: 127.0.0.1:0
    environment: { PHP_FCGI_CHILDREN: "0" }
    stopTimeout: 2s
routes:
  - name: php
    match: { extension: .php }
    protocol: fastcgi
    spawn: php
    docroot: ${JSON.stringify(dir)}
${routes}`
}

/** A guide's text and its fenced blocks: `block(heading, lang)` is the first ```lang block after `heading`. */
export function guideBlocks (file: string): (heading: string, lang: string) => string {
  const name = file.slice(file.lastIndexOf('/') + 1)
  const guide = readFileSync(file, 'utf8')
  return (heading, lang) => {
    const at = guide.indexOf(heading)
    if (at < 0) throw new Error(`${name} has no "${heading}"`)
    const m = new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(guide.slice(at))
    if (m === null) throw new Error(`${name}: no \`\`\`${lang} block after "${heading}"`)
    return m[1]
  }
}

/** Replace `from` (must occur) in a guide's snippet. */
export function must (text: string, from: string | RegExp, to: string): string {
  const out = text.replace(from, to)
  if (out === text) throw new Error(`the guide's snippet no longer contains ${String(from)}`)
  return out
}
