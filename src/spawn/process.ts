/**
 * One backend process (lighttpd's gw_proc): its own listening socket, its child, its readiness
 * gate and its stop. Policy (restart, recycle, scaling) lives in SpawnGroup; this class only
 * reports what happened through `ProcessHooks`.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { closeSync, lstatSync, openSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs'
import type { Clock, ExitInfo, ProcessState, SpawnAddress } from './types.js'
import { spawnError } from './types.js'
import type { ResolvedSpec } from './spec.js'
import { formatAddress } from './spec.js'
import { bindListenSocket, checkUnixPath, freePort, probeConnect, removeStaleUnixSocket, verifySelfBoundSocket, type BoundSocket } from './listen-socket.js'
import { escalation, stopGroup } from './group-kill.js'
import type { OutputSink } from './output.js'
import type { PidFiles } from './pidfile.js'

/**
 * What to exec, after identity, limits and parent-death wrapping (launcher.ts). Every wrapper
 * execs the next, so the pid Node reports is the program's own (status(), pid files, group kill).
 */
export interface LaunchPlan {
  readonly file: string
  readonly args: string[]
  readonly env: Record<string, string>
  readonly cwd: string | undefined
  readonly uid?: number
  readonly gid?: number
  /**
   * umask for the child, set natively by the fork server. Node's spawn() has no per-child umask:
   * plans for it carry the `sh -c 'umask 022; exec …'` wrapper in argv instead (launcher.ts).
   */
  readonly umask?: number
  /** Applied to a unix socket the manager bound, before the child can be reached (issue 6). */
  readonly socketAccess?: (path: string) => void
  /**
   * The uid the program runs as, when the plan switches user (however it does: Node's uid, setpriv
   * or unshare). Unset: the host's own. A `handoff: self` unix socket must end up owned by it.
   */
  readonly runAs?: number
}

export interface ProcessHooks {
  onSpawn (p: SpawnedProcess): void
  onReady (p: SpawnedProcess): void
  /** The leader exited; the group may still be stopping. No longer routable. */
  onDown (p: SpawnedProcess): void
  /** `expected`: the manager stopped it. `beforeReady`: it never became ready (a failed start). */
  onExit (p: SpawnedProcess, info: ExitInfo, expected: boolean, beforeReady: boolean): void
  /**
   * The slot's remembered port (`ProcessOptions.portFallback`) was taken by another socket: the
   * process got a fresh kernel port instead. `wanted` is the address asked for first.
   */
  onAddressFallback? (p: SpawnedProcess, wanted: SpawnAddress, err: Error): void
}

export interface ProcessOptions {
  readonly id: string
  readonly slot: number
  readonly spec: ResolvedSpec
  readonly address: SpawnAddress
  /**
   * `address` is a TCP port the kernel assigned to this slot before (group.ts): when another
   * socket holds it now (EADDRINUSE), take a fresh kernel port on the same host instead of failing.
   */
  readonly portFallback?: boolean
  readonly clock: Clock
  readonly output: OutputSink
  readonly pidFiles: PidFiles
  readonly hooks: ProcessHooks
  /** Builds the exec plan once the environment additions (PORT, LISTEN_FDS …) are known. */
  readonly plan: (extraEnv: Record<string, string>) => LaunchPlan
}

const PROBE_STEP_MS = 25
/** How long stdout/stderr stay open after the process group is gone (see releaseOutput). */
const STDIO_LINGER_MS = 500

/** O_CLOEXEC as /proc/<pid>/fdinfo's `flags:` shows it (octal). */
const O_CLOEXEC = 0o2000000

/** Host descriptors above 2 without close-on-exec, as found at the first exec (inheritedFds). */
let inheritedCandidates: number[] | null = null

function lacksCloexec (fd: number): boolean {
  try {
    const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1]
    return flags !== undefined && (parseInt(flags, 8) & O_CLOEXEC) === 0
  } catch { return false }
}

/**
 * Descriptors the host inherited without close-on-exec (a listening socket or a log file of
 * whoever started it: Node sets the flag on the low ones it finds at its start, 3 to about 19,
 * not on higher ones). Node opens its own with the flag, so the set is taken once, at the first
 * exec (scanning every descriptor per CGI request would cost as much as the proxy has
 * connections), and each candidate is checked again per exec: one closed since, whose number a
 * close-on-exec descriptor took, is left alone. One the host gets without the flag after its
 * first exec (a native addon's) is not seen.
 */
export function inheritedFds (): number[] {
  if (inheritedCandidates === null) {
    let names: string[] = []
    try { names = readdirSync('/proc/self/fd') } catch { /* no /proc: nothing known */ }
    inheritedCandidates = names.map(Number).filter((fd) => Number.isInteger(fd) && fd > 2 && lacksCloexec(fd))
  }
  return inheritedCandidates.filter(lacksCloexec)
}

/** The soft RLIMIT_NOFILE (/proc/self/limits), Infinity when unknown or unlimited. */
function nofileLimit (): number {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    return m === null ? Infinity : Number(m[1])
  } catch { return Infinity }
}

/**
 * exec a plan in its own process group (`detached`), so stop signals reach every worker it forks
 * (RELIABILITY.md §4.5); never through a shell; only the fds named in `stdio`. Forked by the
 * calling thread: a plan with the parent-death wrapper signals its program when that thread ends
 * (the main thread: when the host process ends).
 *
 * spawn() passes on every descriptor without close-on-exec, and Node has no way to close one in
 * the child: each the host inherited so (inheritedFds) is given the child as /dev/null under its
 * number instead (a stdio slot: libuv dup2()s over it), so the host's listening socket or log file
 * never reaches a backend (audit H8). The fork server closes them itself.
 */
export function execPlan (plan: LaunchPlan, stdio: StdioOptions): ChildProcess {
  const opts = { detached: true, env: plan.env, cwd: plan.cwd, uid: plan.uid, gid: plan.gid, shell: false }
  const slots: StdioOptions = Array.isArray(stdio) ? [...stdio] : [stdio, stdio, stdio]
  let leaks = inheritedFds().filter((fd) => fd >= slots.length)
  // One at or above the soft RLIMIT_NOFILE cannot be dup2()ed onto in the child (EBADF: every exec
  // failed under `prlimit --nofile=40` with tap's pipe at fd 251): it passes on as it is.
  if (leaks.length > 0) { const limit = nofileLimit(); leaks = leaks.filter((fd) => fd < limit) }
  if (leaks.length === 0) return spawn(plan.file, plan.args, { ...opts, stdio })
  let devNull: number
  try {
    devNull = openSync('/dev/null', 'r')
  } catch {
    // Out of descriptors (EMFILE): spawn() meets the shortage itself and reports it its own way.
    return spawn(plan.file, plan.args, { ...opts, stdio })
  }
  try {
    const last = Math.max(...leaks)
    while (slots.length <= last) slots.push('ignore')
    for (const fd of leaks) slots[fd] = devNull
    return spawn(plan.file, plan.args, { ...opts, stdio: slots })
  } finally {
    closeSync(devNull)
  }
}

/**
 * Unlink the socket this process published, if a socket is still what the path names: whatever
 * replaced it meanwhile (a directory, someone's file) is left alone, and nothing here may throw
 * (finish() runs from exit callbacks, where a throw is an unhandled rejection).
 */
function isDirectory (path: string): boolean {
  try { return statSync(path).isDirectory() } catch { return false }
}

function removeOwnSocket (path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path)
  } catch { /* already gone */ }
}

export class SpawnedProcess {
  readonly id: string
  readonly slot: number
  state: ProcessState = 'starting'
  pid: number | null = null
  address: SpawnAddress
  /** Requests handed to this process (maxRequests counts these). */
  requests = 0
  inflight = 0
  startedAt: number
  exit: ExitInfo | null = null
  /** Error that prevented the start (exec failure, bind failure, not ready in time). */
  startError: Error | null = null
  private readonly opts: ProcessOptions
  private child: ChildProcess | null = null
  private expected = false
  private wasReady = false
  private leaderExited!: Promise<ExitInfo>
  private stopped: Promise<void> | null = null
  private ownsSocketFile = false
  /** handoff self, unix: the uid that must own the socket the program bound (checked at readiness). */
  private selfBoundOwner: number | null = null

  constructor (opts: ProcessOptions) {
    this.opts = opts
    this.id = opts.id
    this.slot = opts.slot
    this.address = opts.address
    this.startedAt = opts.clock.now()
  }

  get addressId (): string { return formatAddress(this.address) }

  /** Bind, exec, wait for readiness. Never rejects: failures end in onExit(beforeReady). */
  async start (): Promise<void> {
    const { spec } = this.opts
    let bound: BoundSocket | null = null
    const extraEnv: Record<string, string> = {}
    let plan: LaunchPlan | null = null
    try {
      if (spec.handoff === 'self') {
        if (this.address.kind === 'unix') {
          checkUnixPath(this.address.path)
          extraEnv.SOCKET = this.address.path
          // Planning re-runs the Launcher's checks, the socket directory's among them (nobody but
          // root and the spawn's user may create the name): before the stale socket is touched.
          plan = this.opts.plan(extraEnv)
          this.selfBoundOwner = plan.runAs ?? process.geteuid?.() ?? 0
          await removeStaleUnixSocket(this.address.path)
        } else {
          if (this.address.port === 0) this.address = { ...this.address, port: await freePort(this.address.host) }
          else if (this.opts.portFallback === true) {
            // Only a check: the program binds it itself after exec (the window freePort has too).
            const wanted = this.address
            const port = await freePort(wanted.host, wanted.port)
            if (port !== wanted.port) {
              this.address = { ...wanted, port }
              this.opts.hooks.onAddressFallback?.(this, wanted, spawnError('ERR_SPAWN_ADDRESS_IN_USE', `${formatAddress(wanted)} is in use`))
            }
          }
          extraEnv.HOST = this.address.host
          extraEnv.PORT = String(this.address.port)
        }
      } else {
        bound = await this.bindOwn()
        this.address = bound.address
        if (spec.handoff === 'systemd') Object.assign(extraEnv, { LISTEN_FDS: '1', LISTEN_FDNAMES: spec.name })
      }
      if (this.state !== 'starting') { bound?.close(); this.finish(null); return }
      const planned = plan ?? this.opts.plan(extraEnv)
      if (bound === null) {
        this.child = this.exec(planned, -1)
      } else {
        // The child is assigned as soon as it exists: publishing its socket (chown, rename onto
        // the configured path) comes after the spawn and may still fail.
        bound.handOff((fd) => (this.child = this.exec(planned, fd)), planned.socketAccess)
        // Only a socket renamed into place is ours to unlink when the process ends.
        this.ownsSocketFile = this.address.kind === 'unix'
      }
    } catch (err) {
      bound?.close()
      this.startError = err as Error
      // Spawned, then its socket could not be published: a failed start, and the child must not
      // run on unsupervised. The stop ends in onLeaderExit → finish.
      if (this.child !== null) { void this.stop(); return }
      this.finish(null)
      return
    }
    await this.awaitReady()
  }

  /** The socket handed to the program: the slot's remembered port, else (taken) a fresh one. */
  private async bindOwn (): Promise<BoundSocket> {
    const wanted = this.address
    try {
      return await bindListenSocket(wanted)
    } catch (err) {
      if (this.opts.portFallback !== true || wanted.kind !== 'tcp' || wanted.port === 0 || (err as { code?: string }).code !== 'ERR_SPAWN_ADDRESS_IN_USE') throw err
      const bound = await bindListenSocket({ ...wanted, port: 0 })
      this.address = bound.address
      this.opts.hooks.onAddressFallback?.(this, wanted, err as Error)
      return bound
    }
  }

  private exec (plan: LaunchPlan, fd: number): ChildProcess {
    const { spec } = this.opts
    let file = plan.file
    let args = plan.args
    let stdio: StdioOptions = ['ignore', 'pipe', 'pipe']
    if (spec.handoff === 'fd0') stdio = [fd, 'pipe', 'pipe']
    if (spec.handoff === 'systemd') {
      // sd_listen_fds(3) wants LISTEN_PID = the program's own pid, known only after fork: a shell
      // sets it from $$ and execs, keeping that pid.
      stdio = ['ignore', 'pipe', 'pipe', fd]
      args = ['-c', 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"', file, ...args]
      file = '/bin/sh'
    }
    const child = execPlan({ ...plan, file, args }, stdio)
    let resolveExit!: (e: ExitInfo) => void
    this.leaderExited = new Promise((resolve) => { resolveExit = resolve })
    child.once('error', (err) => {
      // ENOENT/EACCES from exec arrive here without 'exit'.
      if (this.pid === null) {
        // node reports a missing cwd as the program's ENOENT ("spawn /usr/bin/prlimit ENOENT"):
        // name the directory instead, which is what the operator has to fix.
        const why = (err as NodeJS.ErrnoException).code === 'ENOENT' && plan.cwd !== undefined && !isDirectory(plan.cwd)
          ? `cwd ${plan.cwd} is not a directory (ENOENT)`
          : err.message
        this.startError = spawnError('ERR_SPAWN_EXEC', `cannot exec ${plan.file}: ${why}`, err)
        resolveExit({ code: null, signal: null, at: this.opts.clock.now() })
      }
    })
    child.once('spawn', () => {
      this.pid = child.pid as number
      this.opts.pidFiles.write(spec.name, this.pid, this.addressId)
      this.opts.output.attach(child.stdout, 'stdout', this.pid)
      this.opts.output.attach(child.stderr, 'stderr', this.pid)
      this.opts.hooks.onSpawn(this)
      if (this.expected && this.stopped === null) this.stopped = this.stopGroup()
    })
    child.once('exit', (code, signal) => {
      // A wrapper (prlimit for `limits`, setpriv, unshare, sh) that cannot exec the program exits
      // 127 (not found) or 126 (not executable) where a direct spawn had 'error': without a cause
      // the failed start (and FAILED) said nothing of why. The wrapper's own words are in the log.
      if ((code === 127 || code === 126) && this.state === 'starting' && this.startError === null) {
        this.startError = spawnError('ERR_SPAWN_EXEC', `cannot exec ${spec.argv[0] ?? plan.file}: exit ${code} before it was ready (${code === 127 ? 'not found' : 'not executable'}: the program, or one it runs; its stderr is in the spawn's log)`)
      }
      resolveExit({ code, signal, at: this.opts.clock.now() })
    })
    void this.leaderExited.then((info) => this.onLeaderExit(info))
    return child
  }

  private async awaitReady (): Promise<void> {
    const { clock, spec } = this.opts
    const deadline = clock.now() + spec.startTimeout
    let exited = false
    // The deadline is judged after a probe, never before the first: until the child's pid is known
    // nothing was probed, and a startTimeout spent by then (0, or a late spawn event) failed an
    // fd0 start whose socket was connectable all along.
    let probed = false
    void this.leaderExited.then(() => { exited = true })
    while (!exited && this.state === 'starting') {
      if (this.pid !== null) probed = true
      if (this.pid !== null && await probeConnect(this.address, Math.max(1, Math.min(1000, deadline - clock.now())))) {
        if (exited || this.state !== 'starting') return
        if (this.selfBoundOwner !== null && this.address.kind === 'unix') {
          // What answered must be the program's socket: the directory check before exec is a
          // precondition only, and a socket someone else bound first would get every request.
          try {
            verifySelfBoundSocket(this.address.path, this.selfBoundOwner)
          } catch (err) {
            this.startError = err as Error
            void this.stop()
            return
          }
        }
        this.state = 'ready'
        this.wasReady = true
        this.opts.hooks.onReady(this)
        return
      }
      if (probed && clock.now() >= deadline) {
        this.startError = spawnError('ERR_SPAWN_NOT_READY', `${spec.name}: not connectable at ${this.addressId} within ${spec.startTimeout} ms`)
        void this.stop()
        return
      }
      await new Promise<void>((resolve) => clock.setTimeout(resolve, PROBE_STEP_MS))
    }
  }

  private onLeaderExit (info: ExitInfo): void {
    this.exit = info
    if (this.pid === null) { this.finish(info); return }
    if (this.state !== 'exited') this.state = 'stopping'
    this.opts.hooks.onDown(this)
    // Workers it forked may outlive it and still hold the socket: stop the rest of the group
    // before the slot's address is reused.
    if (this.stopped === null) this.stopped = this.stopGroup()
    void this.stopped.then(() => this.finish(info))
  }

  private stopGroup (): Promise<void> {
    const { spec, clock } = this.opts
    return stopGroup(this.pid as number, { signals: escalation(spec.killSignal), grace: spec.stopTimeout, clock, leaderExited: this.leaderExited })
  }

  private finished = false
  private finish (info: ExitInfo | null): void {
    if (this.finished) return
    this.finished = true
    const beforeReady = !this.wasReady
    this.state = 'exited'
    if (this.pid !== null) this.opts.pidFiles.remove(this.opts.spec.name, this.pid)
    if (this.ownsSocketFile && this.address.kind === 'unix') removeOwnSocket(this.address.path)
    this.releaseOutput()
    this.exit = info ?? { code: null, signal: null, at: this.opts.clock.now() }
    this.opts.hooks.onExit(this, this.exit, this.expected, beforeReady)
  }

  /**
   * The group is gone, but a program that left it (setsid, a daemonizing worker) may still hold
   * the write ends of stdout/stderr: the host would keep those pipes (two fds, and a handle that
   * keeps its event loop alive) for as long as that program lives, after close() too. Output
   * already written is read meanwhile; what is still open after STDIO_LINGER_MS is dropped.
   */
  private releaseOutput (): void {
    const { clock } = this.opts
    for (const s of [this.child?.stdout, this.child?.stderr]) {
      if (s === null || s === undefined || s.destroyed || s.readableEnded) continue
      const timer = clock.setTimeout(() => s.destroy(), STDIO_LINGER_MS)
      s.once('close', () => clock.clearTimeout(timer))
    }
  }

  /** Out of rotation; the group stops it once in-flight reaches 0. */
  drain (): void {
    if (this.state === 'ready' || this.state === 'starting') this.state = 'draining'
  }

  /** Stop now: escalate killSignal → SIGTERM → SIGKILL over the group. Resolves once reaped. */
  stop (): Promise<void> {
    this.expected = true
    if (this.state === 'exited') return Promise.resolve()
    this.state = 'stopping'
    if (this.child === null || this.pid === null) {
      // Not spawned yet (still binding) or exec failed: start() notices the state and finishes.
      return this.child === null ? Promise.resolve() : this.leaderExited.then(() => undefined)
    }
    if (this.stopped === null) this.stopped = this.stopGroup()
    return this.stopped.then(() => this.leaderExited).then(() => undefined)
  }
}
