/**
 * One CGI exchange: one process, three pipes (RFC 3875 §7.2 on UNIX). The spawn layer starts the
 * process (clean environment, only fds 0-2, own process group, the spawn's identity), directly or
 * through its fork server (then the pid and the streams come a little later: `CgiChild`); the core
 * owns admission, timeouts and the environment. This is only the plumbing between them.
 *
 *   start ─> stdin  <── request body, exactly CONTENT_LENGTH bytes, paused while the pipe is full;
 *                       EOF only after all of them (cut short: held open until the process is gone);
 *                       a response over first does not stop it: the script answered, then reads
 *                       (no body: /dev/null when the starter supports it, as lighttpd's mod_cgi)
 *         ─> stdout ──> CgiResponseParser ─> onHead | onLocalRedirect ─> onData* (pause/resume)
 *         ─> stderr ──> onStderr (capped, always drained)
 *   stdout EOF + exit status ─> onEnd, or onError when the script died before its head / by a signal
 *   stdout EOF + a leader still running EOF_GRACE_MS later (it closed stdout itself) ─> onEnd
 *   exit status + stdout still open and idle EXIT_GRACE_MS (something outside the group, a
 *     setsid daemon, holds it) ─> as stdout EOF, then our end of stdout is closed
 *   exit status + stderr still open EXIT_GRACE_MS later ─> our end of stderr is closed
 *   response over (Content-Length, EOF, local redirect), script still running ─> `linger`, then stop
 *   exchange.signal (client gone, core timeout) ─> kill the process group, settle silently
 *
 * The three pipes are pumped independently, so a script that writes a large response before it
 * reads its body cannot deadlock against us (RFC 3875 §3.4, RELIABILITY §2.13).
 */
import type { ChildProcess } from 'node:child_process'
import type { EventEmitter } from 'node:events'
import { existsSync, readFileSync } from 'node:fs'
import { basename, dirname } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { isAborted, unwatchAbort, watchAbort } from '../../core/abort.js'
import { pumpBody } from '../../core/body-pump.js'
import { keepReading } from '../../core/body-spool.js'
import { ERRORS, isDescriptorShortage, noDescriptors, ProxyError, toProxyError } from '../../core/errors.js'
import { CgiResponseParser } from '../../core/cgi/response-head.js'
import { CgiBodyFramer, deliverCgiHead } from '../../core/cgi/response-body.js'
import type { ClientContext, Endpoint, Exchange, ProcessStarter, ResponseHandler, ScriptInfo } from '../../core/types.js'
import { Utf8Carry } from '../../utf8.js'
import type { CgiOptions } from './options.js'

interface ExitStatus { readonly code: number | null, readonly signal: NodeJS.Signals | null }

/**
 * The one process of an exchange: a Node ChildProcess (direct start), or the spawn layer's
 * fork-server child, whose pid and streams exist only once the helper forked, exec'd and the
 * three connections arrived. So: streams are read from 'spawn' on; 'error' before 'spawn' means
 * the program never ran; 'exit' (code, signal) follows 'spawn'.
 */
export interface CgiChild extends EventEmitter {
  readonly pid?: number | undefined
  readonly stdin: Writable | null
  readonly stdout: Readable | null
  readonly stderr: Readable | null
}

type StartRequest = Parameters<ProcessStarter['start']>[0]

/**
 * How long after stdout EOF the exit status is awaited before the leader is looked at: a process
 * killed by a signal closes its descriptors and turns zombie within microseconds (kernel
 * `do_exit`), so one still running this long after the EOF closed its stdout on purpose.
 */
const EOF_GRACE_MS = 200
/**
 * The longest start of a stderr line held for its newline (onStderr): the core logs at most 4096
 * bytes of a line (runtime STDERR_LINE_CAP), two more tell a cut line from one ending in CR. A
 * longer one is handed on as it is and cut there.
 */
const STDERR_HOLD_MAX = 4096 + 2
/**
 * How long stdout may stay idle, while read, after the leader's exit status came before its EOF.
 * Everything the script wrote is in the pipe by its exit and is read at once while stdout flows;
 * the spawn layer stops the script's group at that exit, so a descriptor still open after this
 * is held by a process that left the group (a `setsid` daemon), which may hold it for ever.
 */
const EXIT_GRACE_MS = 1000
const EMPTY = Buffer.alloc(0)
const PROCFS = existsSync('/proc/self/stat')

/**
 * The leader's state from /proc: 'running' (alive, not a zombie), 'dead' (zombie or gone: its
 * exit status is on its way) or 'unknown' (no procfs, no pid: keep waiting for the status).
 */
function leaderState (pid: number | undefined): 'running' | 'dead' | 'unknown' {
  if (pid === undefined || !PROCFS) return 'unknown'
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    const state = stat.charAt(stat.lastIndexOf(')') + 2)
    return state === 'Z' || state === 'X' || state === 'x' ? 'dead' : 'running'
  } catch {
    return 'dead'
  }
}

/** What the exchange needs from the spawn layer: start one process, stop its whole group. */
interface CgiLauncher {
  launch (req: StartRequest): CgiChild
  kill (child: CgiChild): void
}

/**
 * The spawn layer's PipeStarter has `launch()` (fork server or direct, per spawn); any other
 * `ProcessStarter` starts a ChildProcess with `start()`.
 */
function launcherOf (starter: ProcessStarter): CgiLauncher {
  const l = starter as ProcessStarter & Partial<CgiLauncher>
  if (typeof l.launch === 'function') return l as unknown as CgiLauncher
  return { launch: (req) => starter.start(req), kill: (child) => starter.kill(child as ChildProcess) }
}

/**
 * What to exec. With a script file (docroot route, or `scriptFilename`), the file is the one
 * argument after the spawn's optional interpreter (`perl -wT`), and the working directory is the
 * script's own (RFC 3875 §7.2 SHOULD, as Apache does). Without one, the spawn's binPath is the CGI
 * program itself (git http-backend) and runs in the spawn's working directory. Nothing ever comes
 * from the query string: CVE-2012-1823, a documented deviation from RFC 3875 §4.4.
 */
export function commandFor (script: ScriptInfo | null): { argv: string[], cwd: string | undefined } {
  if (script === null || script.filename === '') return { argv: [], cwd: undefined }
  return { argv: [script.filename], cwd: dirname(script.filename) }
}

/** RFC 3875 §5.1: NPH scripts are identified by the conventional `nph-` file-name prefix. */
export function isNph (script: ScriptInfo | null): boolean {
  if (script === null) return false
  return basename(script.filename !== '' ? script.filename : script.name).startsWith('nph-')
}

export class CgiExchange {
  private child: CgiChild | null = null
  private launcher: CgiLauncher | null = null
  /** The program runs ('spawn'): its streams are ours to read and write. */
  private spawned = false
  /** It never ran: there is nothing to stop. */
  private startFailed = false
  /** The handler got its one ending (or the core aborted and needs none). */
  private settled = false
  private parser: CgiResponseParser | null
  private framer: CgiBodyFramer | null = null
  /** stdout reached EOF after a complete head; the ending waits for the exit status. */
  private outputDone = false
  private exit: ExitStatus | null = null
  private stderrLeft: number
  /** The incomplete UTF-8 character the last stderr read ended with (onStderr). */
  private readonly stderrCarry = new Utf8Carry()
  /** The start of a stderr line whose newline has not come yet (onStderr), a copy. */
  private stderrHeld: Buffer | null = null
  /** Stop feeding stdin mid-body, without an EOF while the process runs (see sendBody). */
  private stopBody: (() => void) | null = null
  /**
   * A spooled body this exchange reads past the core's cleanup (body-spool keepReading): destroyed
   * here when the feeding stops before its end, so its fd is closed.
   */
  private keptBody: Readable | null = null
  /** stdin of a body cut short, left open until the process is gone (see sendBody). */
  private heldStdin: Writable | null = null
  /** We stopped the group ourselves: its exit status says nothing about the script. */
  private killed = false
  /** Stops a script that outlives its complete response (`linger`). */
  private lingerTimer: NodeJS.Timeout | null = null
  /** stdout EOF came before the exit status: look at the leader after EOF_GRACE_MS. */
  private eofTimer: NodeJS.Timeout | null = null
  /** The exit status came before stdout EOF: stdout is watched for EXIT_GRACE_MS of idleness. */
  private exitTimer: NodeJS.Timeout | null = null
  /** stdout reads since the exit status (onExitGrace: did any come in the last I/O poll?). */
  private readsAfterExit = 0
  /** The exit status came before stderr EOF: stderr is closed EXIT_GRACE_MS later (onStderrGrace). */
  private stderrTimer: NodeJS.Timeout | null = null
  private readonly onAbort = (): void => this.abort()

  constructor (
    private readonly endpoint: Endpoint,
    private readonly opts: CgiOptions,
    private readonly ctx: ClientContext,
    private readonly exchange: Exchange,
    private readonly handler: ResponseHandler,
    private readonly done: (x: CgiExchange) => void
  ) {
    const nph = opts.nph && isNph(exchange.script)
    this.parser = new CgiResponseParser({ maxHeadSize: ctx.limits.maxResponseHeadSize, nph })
    // RFC 3875 §5.2: after an NPH response the client may not send further requests on the connection.
    if (nph) handler.closeAfterResponse?.()
    this.stderrLeft = opts.maxStderr
  }

  start (): void {
    const ex = this.exchange
    if (isAborted(ex)) return this.finish()
    const starter: ProcessStarter | undefined = this.ctx.processes
    if (starter === undefined) return this.fail(this.error('ERR_CGI_SPAWN', 'the route has no pipe spawn to start processes with', 'connect'))
    if (ex.env === null) return this.fail(new ProxyError('ERR_INTERNAL', 'CGI exchange without an environment'))
    if (ex.body !== null && ex.contentLength === null) {
      return this.fail(new ProxyError('ERR_LENGTH_REQUIRED', 'CGI needs CONTENT_LENGTH (RFC 3875 §4.2)', { phase: 'request' }))
    }
    const { argv, cwd } = commandFor(ex.script)
    const launcher = launcherOf(starter)
    // No body: the program reads /dev/null, one stdin pipe (a fork-server connection) fewer.
    const stdin = ex.body === null || ex.contentLength === 0 ? 'null' : 'pipe'
    let child: CgiChild
    try {
      // `cwd` undefined = the spawn's own working directory (PipeStarter: `cwd ?? spec.cwd`).
      child = launcher.launch({ argv, env: ex.env, cwd, stdin })
    } catch (err) {
      // A refused script (suEXEC check of a user-switched spawn) keeps its own code: 403, and the
      // core's one log line names the check.
      const code = (err as { code?: unknown }).code
      if (typeof code === 'string' && code.startsWith('ERR_SUEXEC_')) return this.fail(toProxyError(err, 'route'))
      if (isDescriptorShortage(err)) return this.fail(this.withBackend(noDescriptors('starting the CGI program', err as NodeJS.ErrnoException, 'connect')))
      return this.fail(this.error('ERR_CGI_SPAWN', (err as Error).message, 'connect', err))
    }
    this.child = child
    this.launcher = launcher
    watchAbort(ex, this.onAbort)
    child.on('error', (err: NodeJS.ErrnoException) => this.onChildError(err))
    child.once('spawn', () => this.onSpawn(child))
  }

  /** The program runs: wire its three streams. Also after an abort, so its output is drained. */
  private onSpawn (child: CgiChild): void {
    this.spawned = true
    const stdout = child.stdout
    stdout?.on('data', (chunk: Buffer) => this.onStdout(chunk))
    // EOF is acted on after the current I/O turn: output and EOF that were already buffered
    // (a fork-server child may have finished before 'spawn') arrive with 'end' scheduled ahead of
    // node:http's uncork, and a truncation must not destroy the client connection before the
    // bytes written for the last chunk left (AC-43b, AC-92c: a cut response, not a hang-up).
    stdout?.once('end', () => setImmediate(() => this.onStdoutEnd()))
    stdout?.on('error', () => {})
    child.stderr?.on('data', (chunk: Buffer) => this.onStderr(chunk))
    child.stderr?.on('end', () => this.onStderrEnd())
    child.stderr?.on('error', () => {})
    child.once('exit', (code: number | null, signal: NodeJS.Signals | null) => this.onExit({ code, signal }))
    const stdin = child.stdin
    // EPIPE: a script may answer without reading its whole body (§4.2 only bounds what it reads).
    stdin?.on('error', () => {})
    if (this.settled) {
      stdout?.resume()
      // Aborted before 'spawn' (a fork-server child is exec'd, and stopped, before its stdio
      // arrives): a body it was never sent gets no EOF either, until the process is gone (sendBody).
      const unsent = this.exchange.body !== null && (this.exchange.contentLength ?? 0) > 0
      if (stdin !== null && !stdin.writableEnded) {
        if (unsent) this.heldStdin = stdin
        else stdin.end()
      }
      return
    }
    // null: /dev/null (no body). A starter that gave a pipe anyway gets it ended at once.
    if (stdin !== null) this.sendBody(stdin)
  }

  /**
   * Before 'spawn': exec failed (ENOENT, EACCES, chdir …: ERR_CGI_SPAWN with the errno code), or
   * the fork server could not start it. After: only a coded error means anything (the fork
   * server died, the program was killed with it); a ChildProcess's own kill/IPC errors do not.
   */
  private onChildError (err: NodeJS.ErrnoException): void {
    const coded = typeof err.code === 'string' && Object.hasOwn(ERRORS, err.code)
    if (!this.spawned) {
      this.startFailed = true
      // No descriptor left for its pipes (spawn EMFILE): the proxy is short, the script is fine.
      if (isDescriptorShortage(err)) return this.fail(this.withBackend(noDescriptors('starting the CGI program', err, 'connect')))
      // The message names the file, the errno code and, from the fork server, the failed step
      // (`spawn /srv/cgi/x.sh ENOENT (chdir)`).
      return this.fail(coded ? this.withBackend(toProxyError(err, 'connect')) : this.error('ERR_CGI_SPAWN', err.message !== '' ? err.message : String(err.code), 'connect', err))
    }
    if (coded) this.fail(this.withBackend(toProxyError(err, this.parser !== null ? 'head' : 'body')))
    // A coded error after 'spawn' (the fork server died): no exit status will come for it.
    if (coded) this.releaseStdin()
  }

  /** The pool dropped this client: end the exchange with `err` and stop the process. */
  destroy (err: ProxyError): void {
    this.fail(err)
  }

  /** The core aborted (client gone, timeout) and has already answered: only stop the process. */
  private abort (): void {
    this.finish()
  }

  /**
   * Stream exactly CONTENT_LENGTH bytes to stdin, pausing the source while the pipe is full.
   * stdin reaches EOF only after the whole body. When the exchange fails or is aborted mid-body
   * (the client hung up during its upload), stdin stays open until the process is gone: an EOF
   * then would hand a script that reads to EOF (`wc -c`, `cat > file`) a short body as if it were
   * whole, and it could act on it before its group is killed (never a short stdin, RELIABILITY
   * rule 5). The same when the body source fails after the response (the client hangs up).
   *
   * A response that is over while the body is still being written (the script answered first: a
   * Content-Length response, a closed stdout, a local redirect) does not stop the feeding: the
   * script reads its body after answering, gets all of it, then EOF, and exits, rather than wait
   * on an open stdin until `linger` stops it. A spooled body is kept from the core's cleanup for
   * that (keepReading); a client's stream goes on arriving while the core reads and drops what is
   * left of it (core discardBody: its reads hand each chunk to this pump as well, within its byte
   * and time bounds; past them the client is cut, the source fails: no EOF). Whatever the case,
   * the feeding ends with the process (`linger` bounds it).
   */
  private sendBody (stdin: Writable): void {
    const body = this.exchange.body
    const total = this.exchange.contentLength ?? 0
    // (A program that already exited has ended its socket for us: end() again only makes an error.)
    if (body === null || total === 0) { if (!stdin.writableEnded) stdin.end(); return }
    // Asked before the first byte: the core's cleanup may come in any later turn (the response).
    if (keepReading(body)) this.keptBody = body
    const hold = (): void => {
      if (this.exit !== null || this.startFailed) stdin.destroy()
      else this.heldStdin = stdin
    }
    const pump = pumpBody(body, total, stdin, {
      endSink: true,
      onFail: (err) => { this.dropBody(); hold(); this.fail(err) }
    })
    this.stopBody = () => {
      this.dropBody()
      if (!pump.active) return
      pump.stop()
      hold()
    }
    // stdin closed under the pump (the process is gone, EPIPE): nothing more is read for it.
    stdin.once('close', () => { if (!pump.active) this.dropBody() })
  }

  /** A kept spooled body is not read to its end: destroy it (its fd closes). Once read whole, a no-op. */
  private dropBody (): void {
    const kept = this.keptBody
    this.keptBody = null
    if (kept !== null && !kept.destroyed) kept.destroy()
  }

  /** The process is gone (or no longer ours to wait for): a held stdin can close now. */
  private releaseStdin (): void {
    this.heldStdin?.destroy()
    this.heldStdin = null
  }

  private onStdout (chunk: Buffer): void {
    // After the ending the rest of the output is drained and dropped, so the script never blocks.
    if (this.settled) return
    if (this.exitTimer !== null) { this.readsAfterExit++; this.exitTimer.refresh() }
    let data = chunk
    if (this.parser !== null) {
      const r = this.parser.push(chunk)
      if ('error' in r) return this.fail(this.withBackend(r.error))
      if (!r.done) return
      this.parser = null
      this.framer = CgiBodyFramer.forResponse(r.head, this.exchange.method)
      const stdout = this.child?.stdout
      const flow = { resume: () => { if (!this.settled) stdout?.resume() } }
      // §6.2.2 local redirect: the core re-dispatches; whatever else the script prints is dropped.
      // The script may go on running (Apache drains its output to EOF): `linger`, as after a
      // complete response, then its group is stopped; it must not outlive the request.
      if (deliverCgiHead(r.head, this.handler, flow) === 'redirect') { this.finish(true); this.lingerOrStop(); return }
      if (this.settled) return
      data = r.rest
    }
    const framer = this.framer as CgiBodyFramer
    const part = framer.take(data)
    if (part.length > 0 && !this.handler.onData(part)) this.child?.stdout?.pause()
    // AC-43: a Content-Length from the script ends the response; bytes past it are dropped.
    if (framer.complete && !this.settled) this.succeed()
  }

  private onStdoutEnd (): void {
    if (this.settled) return
    if (this.parser !== null) {
      // RFC 3875 §6.1 "MUST always provide a non-empty response" (httpd: "End of script output
      // before headers"). The process is stopped: it closed stdout, the exchange is over.
      const why = this.parser.end()
      return this.fail(this.error('ERR_CGI_EXIT', `${why.message}${this.describeExit()}`, 'head', why))
    }
    const short = (this.framer as CgiBodyFramer).eof()
    if (short !== null) return this.fail(this.withBackend(short))
    this.outputDone = true
    if (this.exit !== null) return this.endByExit()
    // The script closed stdout and goes on running ("answer, then do the slow work"): Apache and
    // lighttpd end the response at EOF. The exit status is awaited a moment only, to tell a signal
    // death (a truncated body) from a deliberate close; then the response ends and the script has
    // `linger` ms, as after a Content-Length response.
    this.eofTimer = setTimeout(() => this.onEofGrace(), EOF_GRACE_MS)
  }

  private onEofGrace (): void {
    this.eofTimer = null
    if (this.settled || this.exit !== null) return
    const state = leaderState(this.child?.pid)
    // Dead: the exit status is on its way (onExit). Unknown: wait for it, as before.
    if (state === 'running') this.succeed()
  }

  private onExit (status: ExitStatus): void {
    this.exit = status
    if (!this.settled && !this.outputDone && this.spawned && this.exitTimer === null) {
      this.exitTimer = setTimeout(() => this.onExitGrace(), EXIT_GRACE_MS)
    }
    const stderr = this.child?.stderr
    if (this.spawned && stderr !== null && stderr !== undefined && !stderr.readableEnded && !stderr.destroyed && this.stderrTimer === null) {
      // Past the exchange's end too: it bounds a descriptor, not the response.
      this.stderrTimer = setTimeout(() => this.onStderrGrace(), EXIT_GRACE_MS)
      this.stderrTimer.unref()
    }
    // The body is no longer read by anyone: the feeding ends (a response over first kept it going).
    if (this.settled) this.stopBody?.()
    this.releaseStdin()
    if (this.lingerTimer !== null) { clearTimeout(this.lingerTimer); this.lingerTimer = null }
    if (this.eofTimer !== null) { clearTimeout(this.eofTimer); this.eofTimer = null }
    if (!this.settled && this.outputDone) return this.endByExit()
    if (this.settled && !this.killed && this.parser === null && (status.code !== 0 || status.signal !== null)) this.logExit()
  }

  /**
   * The leader exited EXIT_GRACE_MS ago and stdout has had nothing to read since, yet no EOF:
   * a process outside the script's group (a daemon that called setsid) holds it, perhaps for
   * days. The output ends here as at EOF: a whole response ends by the exit status, one short of
   * its Content-Length or without its head fails. While stdout is paused (a slow client) what is
   * still in the pipe is the script's and must not be lost: the wait starts again. The timer can
   * fire in the same loop turn as data that is ready, before the poll that reads it, so the
   * decision waits one poll (setImmediate) and is taken only if no read came in it.
   */
  private onExitGrace (): void {
    this.exitTimer = null
    if (this.settled || this.outputDone) return
    const stdout = this.child?.stdout
    if (stdout === null || stdout === undefined) return
    const rearm = (): void => { this.exitTimer = setTimeout(() => this.onExitGrace(), EXIT_GRACE_MS) }
    if (stdout.isPaused() || stdout.readableFlowing === false) return rearm()
    const reads = this.readsAfterExit
    setImmediate(() => {
      if (this.settled || this.outputDone || stdout.readableEnded) return
      if (this.readsAfterExit !== reads || stdout.isPaused()) return rearm()
      this.onStdoutEnd()
      // Nothing more belongs to this exchange: our end closes (the holder gets EPIPE), so a
      // daemon per request does not keep descriptors of the proxy open for its lifetime.
      stdout.destroy()
    })
  }

  /**
   * The leader exited EXIT_GRACE_MS ago and stderr is still open: held by a process outside its
   * group (the group was stopped at the exit), which must not keep a descriptor of the proxy open
   * for its lifetime. stderr is never paused, so what the script wrote before its exit has been
   * read (one more poll first, as in onExitGrace); the held start of a line is logged, the rest of
   * stderr is not read.
   */
  private onStderrGrace (): void {
    this.stderrTimer = null
    setImmediate(() => {
      const stderr = this.child?.stderr
      if (stderr === null || stderr === undefined || stderr.readableEnded || stderr.destroyed) return
      this.onStderrEnd()
      stderr.destroy()
    })
  }

  /**
   * An EOF-delimited body is complete only if the script was not killed: a signal death (OOM
   * killer, SIGSEGV, `kill -9 $$`) mid-body must reach the client as a truncated response, never as
   * a clean end (RELIABILITY rule 5, AC-92c). A non-zero exit code after a whole response is the
   * script's own business: logged, the response stands (AC-92b).
   */
  private endByExit (): void {
    const status = this.exit as ExitStatus
    if (status.signal !== null) {
      return this.fail(new ProxyError('ERR_BACKEND_CLOSED', `CGI program killed by ${status.signal} during the body`, { phase: 'body', backend: this.endpoint.id }))
    }
    if (status.code !== 0) this.logExit()
    this.succeed()
  }

  private logExit (): void {
    const s = this.exit as ExitStatus
    this.ctx.log.warn({ route: this.exchange.routeName, id: this.exchange.id, backend: this.endpoint.id, code: s.code, signal: s.signal }, 'CGI program exited with a failure status after its response')
  }

  /**
   * RELIABILITY §2.13 / AC-91: drain stderr always, log at most `maxStderr` bytes of it, then one
   * marker. The core decodes each chunk on its own, and a pipe read ends wherever a write did: the
   * incomplete UTF-8 character a read ends with (at most 3 bytes) is held for the next read, so a
   * character split between two reads is logged whole rather than as two U+FFFD. At the cap that
   * half character is left out, as the rest.
   *
   * Whole lines only are handed on: the start of a line whose newline has not come yet is held
   * here until it does, or until stderr ends (or the cap). The core holds such a start only while
   * the exchange runs: once it is over (the script goes on after its response) each chunk's
   * unfinished line is logged at once, and a line the script wrote in two parts, or across the
   * response's end, was two log entries.
   */
  private onStderr (chunk: Buffer): void {
    if (this.stderrLeft < 0) return
    const part = chunk.length > this.stderrLeft ? chunk.subarray(0, this.stderrLeft) : chunk
    this.stderrLeft -= part.length
    const whole = this.stderrCarry.take(part, part.length < chunk.length)
    if (whole.length > 0) this.stderrLines(whole)
    if (part.length < chunk.length) {
      this.stderrLeft = -1
      this.stderrFlush(EMPTY)
      this.handler.onStderr?.(Buffer.from(`[stderr truncated after ${this.opts.maxStderr} bytes]`))
    }
  }

  /** Hand on `data` up to its last newline, the held start of a line first; hold the rest. */
  private stderrLines (data: Buffer): void {
    const held = this.stderrHeld
    const nl = data.lastIndexOf(0x0a)
    const tail = data.subarray(nl + 1)
    const lines = data.subarray(0, nl + 1)
    if (tail.length > STDERR_HOLD_MAX || (nl === -1 && (held?.length ?? 0) + tail.length > STDERR_HOLD_MAX)) {
      // Too long to hold: on as it is (the core cuts the line).
      this.stderrHeld = null
      this.handler.onStderr?.(held === null ? data : Buffer.concat([held, data]))
      return
    }
    if (nl !== -1) {
      this.stderrHeld = null
      this.handler.onStderr?.(held === null ? lines : Buffer.concat([held, lines]))
    }
    if (tail.length > 0) this.stderrHeld = this.stderrHeld === null ? Buffer.from(tail) : Buffer.concat([this.stderrHeld, tail])
  }

  /** The held start of a line (with `rest`, the last bytes of its stream) is handed on now. */
  private stderrFlush (rest: Buffer): void {
    const held = this.stderrHeld
    this.stderrHeld = null
    const out = held === null ? rest : rest.length === 0 ? held : Buffer.concat([held, rest])
    if (out.length > 0) this.handler.onStderr?.(out)
  }

  /**
   * The script closed stderr: the held start of a line is handed on, and with it the incomplete
   * character its last read ended with (held for a read that never came), to be logged as U+FFFD,
   * not dropped. Past the cap both went already (onStderr).
   */
  private onStderrEnd (): void {
    // stderr ended by itself after the exit: the grace timer has nothing left to bound, and would
    // keep this exchange (its buffers, its parser) alive for EXIT_GRACE_MS after the response.
    if (this.stderrTimer !== null) { clearTimeout(this.stderrTimer); this.stderrTimer = null }
    if (this.stderrLeft < 0) return
    this.stderrFlush(this.stderrCarry.end())
  }

  private describeExit (): string {
    const s = this.exit
    if (s === null) return ''
    return s.signal !== null ? ` (killed by ${s.signal})` : ` (exit code ${s.code})`
  }

  private error (code: 'ERR_CGI_SPAWN' | 'ERR_CGI_EXIT', detail: string, phase: 'connect' | 'head', cause?: unknown): ProxyError {
    return new ProxyError(code, detail, { phase, backend: this.endpoint.id, ...(cause !== undefined ? { cause } : {}) })
  }

  private withBackend (err: ProxyError): ProxyError {
    err.backend ??= this.endpoint.id
    return err
  }

  private succeed (): void {
    if (this.settled) return
    this.finish(true)
    this.handler.onEnd()
    this.lingerOrStop()
  }

  /**
   * The response is over (complete by Content-Length, stdout closed, a local redirect) while the
   * script still runs: it has `linger` ms to exit, then its group is stopped.
   */
  private lingerOrStop (): void {
    if (this.child !== null && this.exit === null && !this.killed && this.lingerTimer === null) {
      this.lingerTimer = setTimeout(() => {
        this.ctx.log.warn({ route: this.exchange.routeName, id: this.exchange.id, backend: this.endpoint.id, linger: this.opts.linger }, 'CGI program still running after its complete response: stopped')
        this.kill()
      }, this.opts.linger)
      this.lingerTimer.unref()
    }
  }

  /** A failure ends the process too: kill the whole group (grandchildren included, AC-93). */
  private fail (err: ProxyError): void {
    if (this.settled) return
    this.finish()
    this.kill()
    this.handler.onError(err)
  }

  /**
   * Settle without telling the handler: the core aborted the exchange and already answered.
   * A body still being sent is stopped but not closed (sendBody); after a response that is over
   * (`bodyGoesOn`) it goes on to the script, unless the core aborted the exchange.
   */
  private finish (bodyGoesOn = false): void {
    if (this.settled) return
    this.settled = true
    if (this.eofTimer !== null) { clearTimeout(this.eofTimer); this.eofTimer = null }
    if (this.exitTimer !== null) { clearTimeout(this.exitTimer); this.exitTimer = null }
    unwatchAbort(this.exchange, this.onAbort)
    if (!bodyGoesOn || isAborted(this.exchange) || this.exit !== null) this.stopBody?.()
    // Drop, but keep draining, whatever output is still to come (a paused pipe would block it).
    this.child?.stdout?.resume()
    if (isAborted(this.exchange)) this.kill()
    this.done(this)
  }

  private kill (): void {
    const child = this.child
    if (child === null || this.startFailed || this.exit !== null || this.killed) return
    this.killed = true
    this.launcher?.kill(child)
  }
}
