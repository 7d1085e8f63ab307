#!/usr/bin/env -S MALLOC_TRIM_THRESHOLD_=16777216 MALLOC_ARENA_MAX=1 node --max-semi-space-size=1 --initial-old-space-size=16 --no-liftoff --no-wasm-lazy-compilation
/**
 * proxycore CLI. Exit codes (docs/reference/cli.md): 0 ok, 1 runtime failure, 2 usage or config
 * error. Signals for `serve`: SIGHUP reloads (a bad config is rejected and the old one keeps
 * serving), SIGTERM/SIGINT drain and stop every child, a second one exits at once; a stop before
 * serve installed its handlers starts nothing and exits 0 (early-signals.ts).
 */
// First: a SIGHUP, SIGTERM or SIGINT during the imports below must not end the process
// (early-signals.ts).
import { takeEarlyHup, takeEarlyStop } from './early-signals.js'
import { dirname, resolve } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import '../index.js'
import { sharedHostAdvice } from '../config/advice.js'
import { isObj, loadConfig } from '../config/load.js'
import { explain, issueLine } from '../config/report.js'
import { parseDuration } from '../config/units.js'
import { spawnRefusals } from '../config/identity-check.js'
import { escapeKey } from '../config/locate.js'
import { toSpawnSpec } from '../config/spawns.js'
import { checkPipeProgram } from '../spawn/launcher.js'
import { resolveSpec } from '../spawn/spec.js'
import { ConfigError, type ConfigIssue } from '../core/errors.js'
import { gcFromV8 } from '../core/scavenge.js'
import { Gateway, listenFailure } from '../gateway/server.js'
import { accessLogProblem } from '../status/access-log.js'
import { LOG_LEVELS } from '../logger.js'
import { VERSION } from '../version.js'
import { cliLogger } from './log.js'
import { fetchStatus, STATUS_TIMEOUT_MS, statusTable } from './status.js'

const USAGE = `proxycore ${VERSION} — reverse proxy and process spawner for FastCGI, SCGI, HTTP and CGI backends

Usage:
  proxycore serve [config]          run the gateway (default config: ./proxycore.yaml)
  proxycore check <config> [--explain]
                                    validate a config: exit 0 valid, 2 invalid (every problem listed);
                                    --explain adds field docs and the identity/suEXEC refusal of
                                    every user-switched spawn and CGI docroot (code and reason),
                                    nothing started
  proxycore status [url|host:port] [--timeout=10s]
                                    status table (default http://127.0.0.1:8080/server-status;
                                    host:port means http://host:port/server-status); gives up
                                    after --timeout (default 10s)
  proxycore --help | --version

Signals (serve): SIGHUP reload, SIGUSR1 reopen the access log, SIGTERM/SIGINT graceful stop
  (twice: immediate).
Environment: PROXYCORE_LOG_LEVEL (fatal|error|warn|info|debug|trace|silent; default from the config,
  else info), PROXYCORE_LOG_FORMAT=json.`

function usageError (msg: string): number {
  process.stderr.write(`proxycore: ${msg}\n\n${USAGE}\n`)
  return 2
}

/**
 * A command's arguments: at most one `what` (config file, URL) plus the `flags` it knows. Anything
 * else is a usage error, so a typo (`--explian`, a second config file) is never silently ignored.
 */
function parseArgs (cmd: string, args: string[], what: string, flags: string[] = []): { value?: string, error?: string } {
  let value: string | undefined
  for (const a of args) {
    if (a.startsWith('-') && a !== '-') {
      if (!flags.includes(a)) return { error: `${cmd}: unknown option ${JSON.stringify(a)}${flags.length > 0 ? ` (known: ${flags.join(' ')})` : ''}` }
    } else if (value === undefined) {
      value = a
    } else {
      return { error: `${cmd}: unexpected extra argument ${JSON.stringify(a)} (${cmd} takes one ${what})` }
    }
  }
  return value === undefined ? {} : { value }
}

/**
 * `proxycore status` takes the status page's URL, or just `host:port` (then
 * `http://host:port/server-status`); a URL without a path gets `/server-status` too.
 */
function statusUrl (arg: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(arg) ? arg : `http://${arg}`
  let u: URL
  try { u = new URL(withScheme) } catch { throw new Error(`not a URL or host:port: ${JSON.stringify(arg)} (e.g. http://127.0.0.1:8080/server-status or 127.0.0.1:8080)`) }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`not an http(s) URL: ${JSON.stringify(arg)}`)
  if (/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*$/i.test(withScheme)) u.pathname = '/server-status'
  return u.href
}

/** Name the URL and the cause (ECONNREFUSED, ENOTFOUND, …), not the client's own wording. */
function fetchError (url: string, err: unknown, timeoutMs: number): string {
  const e = err as Error & { code?: string, cause?: { code?: string, message?: string } }
  if (e.name === 'TimeoutError') return `no answer from ${url} within ${timeoutMs} ms (is it proxycore? --timeout=30s waits longer)`
  if (typeof e.code === 'string' || e.message === 'fetch failed' || e.cause !== undefined) {
    const cause = e.code ?? e.cause?.code ?? e.cause?.message ?? e.message
    return `cannot reach ${url}: ${cause}${cause === 'ECONNREFUSED' ? ' (is proxycore serving there, with `status` in its config?)' : ''}`
  }
  return e.message
}

/**
 * `valid(path)`: no issue at `path`, under it, or at a key above it (`/spawns` is not a mapping);
 * the root's issues ('': an included file's syntax error) leave the others' parts alone.
 */
function issueFree (issues: readonly ConfigIssue[]): (path: string) => boolean {
  return (path) => !issues.some((i) => i.path === path || i.path.startsWith(`${path}/`) || (i.path !== '' && path.startsWith(`${i.path}/`)))
}

async function check (args: string[]): Promise<number> {
  const parsed = parseArgs('check', args, 'config file', ['--explain'])
  if (parsed.error !== undefined) return usageError(parsed.error)
  const file = parsed.value
  if (file === undefined) return usageError('check needs a config file')
  const r = await loadConfig(resolve(file))
  if (r.issues.length === 0 && args.includes('--explain')) {
    // What SpawnManager.start() would refuse: identity, tenant and suEXEC program checks.
    const refused = await spawnRefusals(r.config)
    // One line each, as every problem line: a docroot's name is quoted as it is (issueLine escapes).
    for (const x of refused) process.stderr.write(`${issueLine({ path: x.path, message: `${x.code} ${x.message}` })}\n`)
    if (refused.length > 0) {
      process.stderr.write(`${file}: ${refused.length} spawn(s) or CGI docroot(s) would be refused\n`)
      return 2
    }
  }
  // What serve would refuse at start, checked also beside other problems (one run shows them all)
  // wherever the part read is valid: with issues, r.config is the file's data as merged, unvalidated.
  const late: ConfigIssue[] = []
  const valid = issueFree(r.issues)
  const spawns: unknown = r.config.spawns
  if (isObj(spawns)) {
    // A pipe (CGI) spawn whose program cannot be executed (a reload refuses it too).
    for (const [name, s] of Object.entries(spawns)) {
      const at = `/spawns/${escapeKey(name)}`
      if (!valid(at) || !isObj(s) || s.socketType !== 'pipe') continue
      try {
        checkPipeProgram(resolveSpec(name, toSpawnSpec(s as Parameters<typeof toSpawnSpec>[0])))
      } catch (err) {
        const e = err as Error & { code?: unknown }
        if (typeof e.code !== 'string') throw err
        late.push({ path: `${at}/binPath`, message: `${e.code} ${e.message.replace(`spawns.${name}.binPath: `, '')}`, source: r.locate(`${at}/binPath`) })
      }
    }
  }
  const al: unknown = r.config.accessLog
  if (valid('/accessLog') && isObj(al) && typeof al.path === 'string' && al.path !== '') {
    // An access log it cannot open (nginx -t checks it too).
    const p = al.path
    const problem = await accessLogProblem(p === 'stdout' ? p : resolve(dirname(resolve(file)), p))
    if (problem !== null) late.push({ path: '/accessLog/path', message: problem, found: p, source: r.locate('/accessLog/path') })
  }
  r.issues.push(...late)
  if (r.issues.length === 0) {
    const c = r.config
    // Valid, but open to other tenants' code on a shared host: said, not refused (exit 0).
    for (const a of sharedHostAdvice(c)) {
      process.stderr.write(`${issueLine({ path: a.path, message: `warning: ${a.message}`, source: r.locate(a.path) })}\n`)
    }
    process.stdout.write(`${file}: ok (${c.routes.length} route(s), ${Object.keys(c.spawns ?? {}).length} spawn(s), ${r.files.length} file(s))\n`)
    return 0
  }
  for (const i of r.issues) {
    process.stderr.write(`${issueLine(i)}\n`)
    if (args.includes('--explain')) for (const l of explain(i)) process.stderr.write(`${l}\n`)
  }
  process.stderr.write(`${file}: ${r.issues.length} problem(s)\n`)
  return 2
}

async function status (args: string[]): Promise<number> {
  let timeoutMs = STATUS_TIMEOUT_MS
  const rest: string[] = []
  for (const a of args) {
    if (!a.startsWith('--timeout=')) { rest.push(a); continue }
    const ms = parseDuration(a.slice('--timeout='.length))
    if (ms === null || ms <= 0) return usageError(`status: --timeout needs a duration above 0 like "10s" or "500ms": ${JSON.stringify(a)}`)
    timeoutMs = ms
  }
  const parsed = parseArgs('status', rest, 'URL', ['--timeout=DURATION'])
  if (parsed.error !== undefined) return usageError(parsed.error)
  let url: string
  try {
    url = statusUrl(parsed.value ?? 'http://127.0.0.1:8080/server-status')
  } catch (err) {
    return usageError(`status: ${(err as Error).message}`)
  }
  try {
    process.stdout.write(`${statusTable(await fetchStatus(url, timeoutMs))}\n`)
    return 0
  } catch (err) {
    process.stderr.write(`proxycore status: ${fetchError(url, err, timeoutMs)}\n`)
    return 1
  }
}

async function serve (args: string[]): Promise<number> {
  // V8's allocation-site pretenuring, once a burst of queued requests has made a site's objects
  // look long-lived, allocates them in the old generation from then on; those dead-but-uncollected
  // objects keep each request's young objects alive, which keeps the decision in place. Measured
  // on FastCGI at 32 connections: 3.5 KB promoted per request and a mark-compact every ~0.3 s with
  // it, ~50 B and none without (docs/getting-started.md "Memory and speed"). Unlike the heap
  // sizes, this flag takes effect at run time.
  setFlagsFromString('--no-allocation-site-pretenuring')
  // The old generation's limit: V8 grows it by a factor it picks from GC and mutator speed, up to
  // 4× the live size, and chose 4× after a mark-compact in a quiet moment (start-up, a lull), so
  // a proxy with ~8 MB live let garbage pile up to ~33 MB before the next one. A fixed factor of 2
  // (V8 keeps its 8 MB minimum step) is what it picks under steady load anyway. With the shebang's
  // --initial-old-space-size=16 (the first limit, which V8 otherwise sets near 30 MB), peak RSS
  // at 32 connections: CGI 76–78 instead of 88–89 MiB; mark-compacts as often as before under load
  // (docs/getting-started.md "Memory and speed"). This one, too, works at run time.
  setFlagsFromString('--heap-growing-percent=100')
  // WebAssembly (undici's llhttp, for HTTP routes) compiled once, optimized, while the proxy is
  // created, instead of optimized again in the background under the first load, whose scratch
  // memory glibc then keeps (src/protocols/http/client.ts compileParserEarly; peak RSS at 32
  // connections ~100 → ~75 MiB on the HTTP scenario, CPU per request unchanged): the shebang's
  // `--no-liftoff --no-wasm-lazy-compilation`. On the command line only: set here at run time,
  // Node 26's V8 (14.6) aborted the process at the first compile (`Check failed: function_feedback
  // != feedback.feedback_for_function.end()`): it had been started with speculative Wasm inlining,
  // which wants the feedback the baseline compiler collects.
  // V8's gc(), so a large body's spent 64 KiB chunks are collected every 8 MiB instead of every
  // 32 MB (src/core/scavenge.ts; bench: a 1 GiB upload grew RSS by 9–20 MiB instead of 29–33).
  const gc = gcFromV8()
  const parsed = parseArgs('serve', args, 'config file')
  if (parsed.error !== undefined) return usageError(parsed.error)
  const envLevel = process.env.PROXYCORE_LOG_LEVEL
  if (envLevel !== undefined && envLevel !== '' && !(LOG_LEVELS as readonly string[]).includes(envLevel)) {
    process.stderr.write(`proxycore: PROXYCORE_LOG_LEVEL=${JSON.stringify(envLevel)} is not a log level (expected ${LOG_LEVELS.join(' | ')})\n`)
    return 2
  }
  const file = resolve(parsed.value ?? 'proxycore.yaml')
  const pre = await loadConfig(file)
  // A bad `logLevel` in the file is one of pre.issues, logged below at the default level.
  const fileLevel = typeof pre.config.logLevel === 'string' && (LOG_LEVELS as readonly string[]).includes(pre.config.logLevel) ? pre.config.logLevel : undefined
  const log = cliLogger(envLevel !== undefined && envLevel !== '' ? envLevel : fileLevel ?? 'info')
  if (pre.issues.length > 0) {
    for (const i of pre.issues) log.error({ path: i.path, source: i.source }, issueLine(i))
    return 2
  }
  const gw = new Gateway({ configFile: file, log, gc })
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) {
      // Second signal: the operator wants out now. Kill the children's groups so none outlives us:
      // socket spawns' processes, CGI children mid-request and the CGI fork server.
      log.warn({ signal }, 'second signal: exiting now')
      for (const pgid of gw.groups()) { try { process.kill(-pgid, 'SIGKILL') } catch {} }
      process.exit(1)
    }
    stopping = true
    log.info({ signal }, 'stopping: draining requests and stopping spawned processes')
    gw.close().then(() => { log.info('stopped'); process.exit(0) }, (err: unknown) => { log.error({ err }, 'stop failed'); process.exit(1) })
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  const fixedLevel = envLevel !== undefined && envLevel !== ''
  let started = false
  let hupWhileStarting = false
  const reload = (): void => {
    log.info({ config: file }, 'SIGHUP: reloading')
    void gw.reload().then((ok) => {
      // The new file's `logLevel` applies from now on, as nginx's error_log level does after a
      // reload; PROXYCORE_LOG_LEVEL, when set, still wins over any file.
      const level = gw.current?.config.logLevel ?? 'info'
      if (ok && !fixedLevel && level !== log.level) {
        // Said at whichever of the two levels lets an info line through.
        const from = log.level
        const said = log.isLevelEnabled('info')
        if (said) log.info({ from, to: level }, 'reload: log level changed')
        log.level = level
        if (!said) log.info({ from, to: level }, 'reload: log level changed')
      }
    })
  }
  // nginx's convention (logrotate's postrotate): reopen the access log. Also keeps node's default
  // SIGUSR1 action, which opens the inspector on 127.0.0.1:9229, from happening.
  process.on('SIGUSR1', () => { void gw.reopenLogs() })
  process.on('SIGHUP', () => {
    // Before the first generation is up there is nothing to reload yet: once it is, the file is
    // read again (it may have changed since it was read for the start).
    if (!started) { hupWhileStarting = true; return }
    reload()
  })
  // A HUP that came while the modules loaded or the config was first read (early-signals.ts).
  if (takeEarlyHup()) hupWhileStarting = true
  // A stop that came then: nothing was started yet, so there is nothing to drain or stop; say so
  // as a stop after the start does, and exit 0 (a supervisor's stop right after its start).
  const earlyStop = takeEarlyStop()
  if (earlyStop !== null) {
    log.info({ signal: earlyStop }, 'stopping: draining requests and stopping spawned processes')
    log.info('stopped')
    return 0
  }
  try {
    await gw.start()
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const x of err.issues) {
        // The access log is opened after the config was loaded: placed in the file as check places it.
        const i = x.source === undefined && x.path === '/accessLog/path' ? { ...x, source: pre.locate(x.path) } : x
        log.error({ path: i.path, source: i.source }, issueLine(i))
      }
      return 2
    }
    const f = listenFailure(err, [pre.config.listen ?? []].flat())
    if (f !== null) {
      // An operator's mistake, not a bug: one line naming the address and what to do, no stack.
      log.error({ code: f.code, address: f.address }, f.message)
      return 1
    }
    log.error({ err }, 'start failed')
    return 1
  }
  log.info({ addresses: gw.addresses, pid: process.pid }, 'serving')
  started = true
  if (hupWhileStarting && !stopping) reload()
  // Keep running; the signal handlers end the process.
  return await new Promise<number>(() => {})
}

export async function main (argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(`${USAGE}\n`)
    return cmd === undefined ? 2 : 0
  }
  // `proxycore serve --help` asks for help, not to serve a file named --help.
  if (rest.includes('--help') || rest.includes('-h')) { process.stdout.write(`${USAGE}\n`); return 0 }
  if (cmd === '--version' || cmd === '-v') {
    // Takes nothing: `--version extra` is a usage error, as a stray argument is for every command.
    if (rest.length > 0) return usageError(`${cmd}: unexpected extra argument ${JSON.stringify(rest[0])} (${cmd} takes none)`)
    process.stdout.write(`${VERSION}\n`)
    return 0
  }
  if (cmd === 'serve') return await serve(rest)
  if (cmd === 'check') return await check(rest)
  if (cmd === 'status') return await status(rest)
  return usageError(`unknown command ${JSON.stringify(cmd)}`)
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`proxycore: ${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
})
