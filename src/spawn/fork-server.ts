/**
 * The fork server: a small long-lived helper that forks and execs the per-request CGI programs, so
 * the proxy's own process never forks. Two builds of one design, speaking one protocol: the
 * compiled one (native/fork-server.c, built at npm install when a C compiler is there; it uses
 * vfork) and, without it, a Perl one (fork-server-script.ts; perl-base is Essential on Debian).
 *
 * Why: libuv (Node 20, libuv 1.46) spawns with a plain fork(). Forking the multi-threaded ~150 MiB
 * Node process cost 1.2-2 ms of proxy CPU per CGI request (page-table copy, copy-on-write faults,
 * TLB shootdowns to the V8/libuv threads; measured with perf), capping CGI at ~330 req/s where
 * lighttpd's mod_cgi did ~980. A small helper forks far cheaper, on another core.
 *
 *   Node ──frame (id, token, cwd, uid, gid, umask, stdin, argv, env)──> helper stdin
 *        <──"S id pid" | "E id errno step", then "X id status group-left"── helper stdout
 *   helper: connect ×3 to our unix socket (token + fd number on each; ×2 and /dev/null for stdin
 *           when the request has no body), execve's argv and envp, fork; S once the exec is done
 *   child:  setsid, dup onto 0-2, chdir, setgroups/setgid/setuid, umask, PR_SET_PDEATHSIG SIGKILL
 *           (it dies with the helper, even before we learnt its pid), unblock signals, execve
 *           (execvp(3)'s PATH search and /bin/sh for a file without #!, by hand)
 *   Node: accepts the connections, matches them to the spawn by token, and emits 'spawn' once
 *         the helper reported the exec (S) and all of them are here. One that never comes (lost
 *         on the way: at EMFILE libuv accepts and closes what is pending) fails the spawn
 *         LATE_STDIO_MS after S, while the program runs: its group is then the caller's to stop.
 *         With code EMFILE when the proxy is out of descriptors then (503 ERR_NO_DESCRIPTORS, as
 *         spawn() at EMFILE with the direct launcher), else ERR_CGI_FORK_SERVER.
 *   The helper's own limits fail one request, not the helper: out of memory, "E id 12 memory"
 *   (code ENOMEM, the message naming the helper); out of descriptors (EMFILE at its socket(2)),
 *   code ERR_CGI_FORK_SERVER_NO_DESCRIPTORS, never EMFILE, which is the proxy's own shortage.
 *
 * The exec report travels on the helper's stdout, ordered before the exit status, not on the
 * program's own connections: an exec failure must surface as 'error' (ERR_CGI_SPAWN with the
 * errno) before anything can read the program's stdout EOF as "no output".
 *
 * Stdio without fd passing: the socket lives in a private mkdtemp directory (0700, the proxy's
 * user), the helper connects as the proxy's user, and an unknown or late token is closed. The
 * directory's name says whose it is, so that one left by a proxy killed with SIGKILL is removed by
 * the next fork server (removeStaleDirs).
 * Libuv's own stdio pipes are socketpairs, so scripts see the same kind of descriptor as before.
 *
 * The helper exits at EOF on its stdin (proxy gone or closing), killing the groups of the programs
 * it has not reaped (after a crash nobody else would stop them). If it dies, every program it
 * started is killed (its group) and fails with ERR_CGI_FORK_SERVER; the next spawn restarts it.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { accessSync, closeSync, constants as fsConstants, lstatSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { createServer, type Server, type Socket } from 'node:net'
import { constants as osConstants, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Readable, Writable } from 'node:stream'
import type { Clock } from './types.js'
import { spawnError } from './types.js'
import type { LaunchPlan } from './process.js'
import { liveGroupMembers, signalGroup } from './group-kill.js'
import { FORK_SERVER_PL } from './fork-server-script.js'
import { KeyTable, LiveSet, SLOT } from '../live-set.js'
import { envBytes, hasRawBytes } from '../utf8.js'

/**
 * A per-request process as the CGI adapter uses it: a Node ChildProcess or a ForkChild.
 * Streams are read once 'spawn' fired; 'error' before 'spawn' means it never ran; 'exit'
 * (code, signal) comes after 'spawn'.
 */
export interface PipeChild extends EventEmitter {
  readonly pid?: number | undefined
  readonly stdin: Writable | null
  readonly stdout: Readable | null
  readonly stderr: Readable | null
}

/** perl-base's perl; fixed paths only (a PATH search could pick up a user's perl). */
const PERL_CANDIDATES = ['/usr/bin/perl', '/bin/perl', '/usr/local/bin/perl']

/**
 * The Perl helper makes raw syscalls by number: x86-64's table, or the generic one these share.
 * On any other architecture, without the compiled helper, pipe spawns start their programs
 * directly.
 */
const FORK_SERVER_ARCHES = ['x64', 'arm64', 'riscv64', 'loong64']

/** Where scripts/build-native.mjs puts the compiled helper (the same from src/ and dist/). */
const NATIVE_HELPER = fileURLToPath(new URL('../../native/build/proxycore-fork-server', import.meta.url))

let perlPath: string | null | undefined
let nativeBuilt: boolean | undefined

/**
 * The perl the Perl fork server runs on, or null: `forkServerUnsupported()` says why.
 */
export function findPerl (): string | null {
  if (perlPath !== undefined) return perlPath
  perlPath = null
  if (!FORK_SERVER_ARCHES.includes(process.arch)) return perlPath
  for (const p of PERL_CANDIDATES) {
    try { accessSync(p, fsConstants.X_OK); perlPath = p; break } catch {}
  }
  return perlPath
}

/** The program a fork server runs: the compiled helper, or perl with the script. */
export interface HelperProgram {
  readonly kind: 'compiled' | 'perl'
  readonly path: string
}

/**
 * The fork server this machine can run, or null (then pipe spawns start programs directly):
 * the compiled helper when it was built, else the Perl one. `PROXYCORE_FORK_SERVER=perl` in the
 * environment picks the Perl one even then (to compare them, or to rule the compiled one out).
 */
export function findForkServer (): HelperProgram | null {
  if (process.env.PROXYCORE_FORK_SERVER !== 'perl' && compiledBuilt()) return { kind: 'compiled', path: NATIVE_HELPER }
  const perl = findPerl()
  return perl === null ? null : { kind: 'perl', path: perl }
}

/** Whether the compiled helper was built (and can run: Linux). */
function compiledBuilt (): boolean {
  if (nativeBuilt === undefined) {
    try { accessSync(NATIVE_HELPER, fsConstants.X_OK); nativeBuilt = process.platform === 'linux' } catch { nativeBuilt = false }
  }
  return nativeBuilt
}

/** Why this machine cannot run a fork server, or null when it can. */
export function forkServerUnsupported (): string | null {
  if (findForkServer() !== null) return null
  return noForkServerReason(process.arch, process.env.PROXYCORE_FORK_SERVER === 'perl', compiledBuilt())
}

/**
 * The reason given when no fork server can run (findForkServer() found none): on `arch`, with the
 * Perl one asked for by PROXYCORE_FORK_SERVER=perl or not, the compiled one built or not. Asked
 * for, a built compiled helper is passed over: the reason must not say it was not built.
 */
export function noForkServerReason (arch: string, perlAsked: boolean, compiledBuilt: boolean): string {
  const why = !FORK_SERVER_ARCHES.includes(arch)
    ? `the Perl fork server runs on ${FORK_SERVER_ARCHES.join(', ')}, not on ${arch}`
    : 'the Perl fork server needs perl (perl-base), which is not installed'
  if (perlAsked && compiledBuilt) return `PROXYCORE_FORK_SERVER=perl asks for the Perl fork server, but ${why}; unset it to use the compiled one`
  return `${why}, and the compiled one was not built (npm install builds it when a C compiler is there)`
}

const ERRNO_NAMES = new Map(Object.entries(osConstants.errno).map(([name, n]) => [n, name]))
const SIGNAL_NAMES = new Map(Object.entries(osConstants.signals).map(([name, n]) => [n, name as NodeJS.Signals]))

/** 16 token bytes + 1 fd byte, written by the child on each connection before anything else. */
const HELLO = 17
/** A connection that has not said who it is within this is dropped. */
const HELLO_TIMEOUT_MS = 10_000
/**
 * The helper connects a child's stdio before it forks it, so by S its connections are in our
 * accept queue: this only bounds one that was lost (counted from S, not from the exit: the program
 * may run for ever with nobody to read it or to stop it).
 */
const LATE_STDIO_MS = 2000
/** The helper gets this long to leave after its stdin closed, then SIGKILL. */
const HELPER_STOP_MS = 2000
const POLL_MS = 20
/**
 * The largest request frame the compiled helper reads (MAX_FRAME in native/fork-server.c): it
 * exits at a longer one (a frame the proxy did not send), failing every program in flight. Far
 * above what execve(2) takes (argv + environment: a quarter of the stack limit, at most 6 MiB), so
 * a longer request fails alone here, with E2BIG, as its exec would.
 */
const MAX_FRAME = 64 * 1024 * 1024
const ORPHAN_WAIT_MS = 5000

/** The private directory's name starts with this, then the owner's mark (ownerMark()). */
const DIR_PREFIX = 'proxycore-fork-'
/** The longest unix socket path (sun_path, 108 bytes with the NUL). */
const SUN_PATH_MAX = 107
/** `<prefix><pid namespace>-<pid>-<start time>-<6 random>` (mkdtemp adds the last part). */
const OWNED_DIR = /^proxycore-fork-(\d+)-(\d+)-(\d+)-[A-Za-z0-9]{6}$/

/** A process's start time (clock ticks since boot, /proc/PID/stat field 22), null if it is gone or a zombie. */
function startTime (pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return rest[0] === 'Z' ? null : (rest[19] ?? null)
  } catch {
    return null
  }
}

/** The pid namespace's inode, or null when /proc does not say (then no directory is ever cleaned). */
function pidNamespace (): string | null {
  try { return /^pid:\[(\d+)\]$/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? null } catch { return null }
}

/**
 * `<pid namespace>-<pid>-<start time>-`: who owns a private directory, in its name. A proxy killed
 * with SIGKILL never removes its directory; the next fork server of the same user removes those
 * whose owner is gone (removeStaleDirs). The pid as /proc numbers it (the one it is checked by
 * later), not process.pid. When /proc does not tell all three, `x-`: a name no one ever removes.
 */
function ownerMark (): string {
  let pid: string | null = null
  try { pid = /^\d+$/.exec(readlinkSync('/proc/self'))?.[0] ?? null } catch {}
  const ns = pidNamespace()
  const start = pid === null ? null : startTime(Number(pid))
  return ns === null || pid === null || start === null ? 'x-' : `${ns}-${pid}-${start}-`
}

/**
 * Remove the private directories left in `base` by proxies that died without closing (SIGKILL, a
 * crash): only names of our own form whose pid namespace is ours, only real directories (lstat:
 * a symlink is never followed) owned by our uid, and only when the owner pid is gone, a zombie,
 * or now another process (its start time differs). A live proxy's directory stays, and so does
 * one from another pid namespace (its pid means nothing here). Best effort: errors are ignored.
 */
export function removeStaleDirs (base: string): string[] {
  const ns = pidNamespace()
  const uid = process.geteuid?.()
  const removed: string[] = []
  if (ns === null || uid === undefined) return removed
  let names: string[]
  try { names = readdirSync(base) } catch { return removed }
  for (const name of names) {
    const m = OWNED_DIR.exec(name)
    if (m === null || m[1] !== ns) continue
    const pid = Number(m[2])
    if (startTime(pid) === m[3]) continue
    const dir = join(base, name)
    try {
      const st = lstatSync(dir)
      if (!st.isDirectory() || st.uid !== uid) continue
      // rm lstat()s each entry: a symlink inside (or one swapped in for the directory) is unlinked,
      // never followed.
      rmSync(dir, { recursive: true, force: true })
      removed.push(dir)
    } catch {}
  }
  return removed
}

/**
 * `EMFILE` (or `ENFILE`, the system out of them) when this process cannot open `need` more
 * descriptors now, else null: it opens /dev/null `need` times and closes what it got. A probe, not
 * a count of /proc/self/fd against RLIMIT_NOFILE: that readdir cost 0.15 ms with 60 descriptors
 * open, 7.4 ms with 1,000 and 123 ms with 10,000 (event loop blocked), where this costs a few
 * syscalls whatever the count. Only for a child whose stdio never came, never per request.
 */
export function descriptorShortage (need: number): 'EMFILE' | 'ENFILE' | null {
  const fds: number[] = []
  try {
    while (fds.length < need) fds.push(openSync('/dev/null', 'r'))
    return null
  } catch (err) {
    const code = (err as NodeJS.ErrnoException | null)?.code
    return code === 'EMFILE' || code === 'ENFILE' ? code : null
  } finally {
    for (const fd of fds) closeSync(fd)
  }
}

/** Alive and not a zombie (an orphan is reaped by init, or by nobody when PID 1 does not reap). */
function isLive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/**
 * Processes whose parent is `ppid` and that it has not reaped (zombies included): their pids are
 * still theirs.
 */
function unreapedChildren (ppid: number): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    let stat: string
    try { stat = readFileSync(`/proc/${name}/stat`, 'utf8') } catch { continue }
    if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) out.push(Number(name))
  }
  return out
}

/**
 * @internal Test seams. `dropStdio`: drop a child's stdio connection for `fd` as if it never
 * reached us (the proxy out of descriptors: libuv accepts and closes what is pending).
 * `helloDelayMs`: read each accepted connection's hello only this long after it arrived, as a
 * proxy too busy to read them in time (200 CGI requests at once on a loaded machine).
 */
export const forkServerSeams: { dropStdio: ((fd: number) => boolean) | null, helloDelayMs: number } = { dropStdio: null, helloDelayMs: 0 }

/**
 * One program started by the fork server. Besides the PipeChild events, 'exec' (no arguments)
 * when the helper reported the exec: `pid` is set, and its group (-pid) is the program's.
 */
export class ForkChild extends EventEmitter implements PipeChild {
  /**
   * @internal Its place among the children waiting for their stdio. First: after another field, a
   * computed key would be read as an index into that field's initializer.
   */
  [SLOT] = -1
  pid: number | undefined = undefined
  stdin: Socket | null = null
  stdout: Socket | null = null
  stderr: Socket | null = null
  /** exec succeeded and stdin/stdout/stderr are connected: 'spawn' was emitted. */
  spawned = false
  /**
   * Resolves once the process is gone: reaped, failed to start, or (helper lost) killed. Also when
   * its stdio was lost ('error' ERR_CGI_FORK_SERVER after S): the program may still run then, and
   * its group is the caller's to stop (PipeStarter does, as for any child that was exec'd).
   */
  readonly exited: Promise<void>
  /** @internal */ readonly file: string
  /** @internal */ readonly token: string
  /** @internal */ readonly id: number
  /** @internal */ readonly helper: Helper
  /** @internal The helper reported the exec (S): `pid` is set. */ execOk = false
  /** @internal When S came (for LATE_STDIO_MS). */ execAt = 0
  /** @internal The proxy was out of descriptors when S came with connections missing (stdioLost). */ shortAtExec: 'EMFILE' | 'ENFILE' | null = null
  /** @internal */ conns = 0
  /** @internal Connections to wait for: 3, or 2 when stdin is /dev/null. */
  readonly expected: number
  /** @internal */ status: { code: number | null, signal: NodeJS.Signals | null } | null = null
  /**
   * Its process group still had members when the helper reaped it (a backgrounded grandchild):
   * only then is there a group left to stop. Unknown (true) until reaped.
   */
  groupLeft = true
  /** @internal */ settled = false
  /** @internal */ resolveExited!: () => void

  constructor (file: string, token: string, id: number, helper: Helper, nullStdin: boolean) {
    super()
    this.expected = nullStdin ? 2 : 3
    this.file = file
    this.token = token
    this.id = id
    this.helper = helper
    this.exited = new Promise((resolve) => { this.resolveExited = resolve })
  }
}

/** An accepted stdio connection, with when it came. */
interface Accepted { readonly sock: Socket, readonly at: number, [SLOT]: number }

/** @internal One running helper process and the programs it has in flight. */
export interface Helper {
  readonly proc: ChildProcess
  /** Programs in flight, by request id. */
  readonly children: KeyTable<ForkChild>
  /** Resolves when the helper exited and its stdio closed. */
  readonly closed: Promise<void>
  lineBuf: string
  stderrTail: string
  dead: boolean
  /** It could not be started for want of descriptors (spawn EMFILE/ENFILE): its programs fail with that code. */
  shortage: 'EMFILE' | 'ENFILE' | null
}

export interface ForkServerOptions {
  readonly helper: HelperProgram
  readonly clock: Clock
}

export class ForkServer {
  /** The compiled helper or perl (findForkServer()). */
  private readonly program: HelperProgram
  private readonly clock: Clock
  private helper: Helper | null = null
  private server: Server | null = null
  private dir: string | null = null
  private sockPath = ''
  private scriptPath = ''
  private seq = 0
  // Not Maps or Sets: entries come and go once per request (see src/live-set.ts).
  private readonly tokens = new KeyTable<ForkChild>()
  /** Connections that have not said their token yet, with when they came. */
  private readonly unknown = new LiveSet<Accepted>()
  private sweeping: unknown = null
  /** Children reported exec'd (S) whose connections are not all here yet, each since `execAt`. */
  private readonly awaitingStdio = new LiveSet<ForkChild>()
  private stdioSweep: unknown = null
  /** The last stdio sweep ran late and judged no one (see sweepStdioLater). */
  private stdioSweepSkipped = false
  /** Accepted stdio connections until they close (close() ends what no one read to the end). */
  private readonly conns = new LiveSet<Accepted>()
  private active = 0
  private closing: Promise<void> | null = null
  /** Helpers not closed yet (one running; a crashed one may still be closing its pipes). */
  private readonly dying = new Set<Promise<void>>()
  /** Helpers started so far (a restart after a crash is the second). */
  starts = 0

  constructor (opts: ForkServerOptions) {
    this.program = opts.helper
    this.clock = opts.clock
  }

  /** Which helper it runs (status). */
  get kind (): HelperProgram['kind'] {
    return this.program.kind
  }

  /** The helper's pid while it runs (status, tests). */
  get pid (): number | undefined {
    return this.helper?.proc.pid
  }

  /**
   * Process groups to SIGKILL when the proxy must go at once (a second SIGTERM): the helper's own
   * (it runs in a session of its own, see ensureHelper) and that of every program it forked and
   * has not reaped. Those are found in /proc by parent, not by the S reports: one forked a moment
   * ago has not been reported yet, and would outlive the helper. Each calls setsid() first thing,
   * so its pid is its group's id; one that has not yet is still in the helper's group. Only while
   * Node has not reaped the helper: until then neither its pid nor its children's can be reused.
   * (A program's group left behind after the helper reaped it is its PipeStarter's to list.)
   */
  groups (): number[] {
    const proc = this.helper?.proc
    const pid = proc?.pid
    if (proc === undefined || pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return []
    return [...unreapedChildren(pid), pid]
  }

  /**
   * Start `plan` through the helper (started on first use, restarted after it died). Throws, as
   * child_process.spawn does, for arguments no exec can take (NUL bytes); everything else arrives
   * as events on the returned child. `nullStdin`: the program's stdin is /dev/null (`stdin` stays
   * null), as for a CGI request without a body; one connection fewer.
   */
  spawn (plan: LaunchPlan, nullStdin = false): ForkChild {
    if (this.closing !== null) throw spawnError('ERR_SPAWN_NOT_READY', 'the fork server is closed')
    const id = this.seq + 1
    const token = this.nextToken()
    // One array joined once: `+=` per field built a chain of ~70 cons strings per request that
    // Buffer.byteLength then flattened (heap sampling: 4.7 KB allocated per CGI request here).
    const fields = [String(id), token, plan.cwd ?? process.cwd(),
      plan.uid === undefined ? '' : String(plan.uid),
      plan.gid === undefined ? '' : String(plan.gid),
      plan.umask === undefined ? '' : String(plan.umask),
      nullStdin ? 'null' : 'pipe', String(1 + plan.args.length), plan.file, ...plan.args]
    for (const k in plan.env) {
      const v = plan.env[k]
      if (v !== undefined) fields.push(`${k}=${v}`)
    }
    for (let i = 2; i < fields.length; i++) {
      // spawn() throws a TypeError here; the CGI adapter answers ERR_CGI_SPAWN for either.
      if (fields[i].includes('\0')) throw spawnError('ERR_CGI_SPAWN', `spawn ${plan.file}: arguments, environment and cwd must not contain NUL bytes`)
    }
    const text = fields.join('\0')
    let length = Buffer.byteLength(text)
    // A request header byte that was not UTF-8 (escaped by buildCgiEnv) reaches the program's
    // environment as that byte (docs/protocols/cgi.md "Header bytes"); 7-bit text never looks.
    const bytes = length !== text.length && hasRawBytes(text) ? envBytes(text) : null
    if (bytes !== null) length = bytes.length
    let frame: Buffer | null = null
    if (length <= MAX_FRAME) {
      frame = Buffer.allocUnsafe(4 + length)
      frame.writeUInt32BE(length, 0)
      if (bytes === null) frame.write(text, 4)
      else bytes.copy(frame, 4)
    }
    const h = this.ensureHelper()
    this.seq = id
    const child = new ForkChild(plan.file, token, id, h, nullStdin)
    h.children.set(id, child)
    this.tokens.set(token, child)
    if (++this.active === 1) this.setRef(true)
    if (h.dead) this.orphan(child, 'is not running')
    // Too long for the helper (MAX_FRAME): refused here, as the helper refuses what execve(2) does.
    else if (frame === null) process.nextTick(() => { if (!child.settled) this.failStart(child, osConstants.errno.E2BIG, 'exec') })
    else h.proc.stdin?.write(frame)
    return child
  }

  private tokenPool = Buffer.alloc(0)
  private tokenAt = 0

  /** 16 random bytes as hex; drawn from a pool refilled 256 tokens at a time. */
  private nextToken (): string {
    if (this.tokenAt + 16 > this.tokenPool.length) {
      this.tokenPool = randomBytes(16 * 256)
      this.tokenAt = 0
    }
    const token = this.tokenPool.toString('hex', this.tokenAt, this.tokenAt + 16)
    this.tokenAt += 16
    return token
  }

  /** Stop the helper (after its programs were stopped) and remove the socket. Idempotent. */
  close (): Promise<void> {
    this.closing ??= this.closeAll()
    return this.closing
  }

  private async closeAll (): Promise<void> {
    const h = this.helper
    if (h !== null) {
      h.proc.stdin?.end()
      let timer: unknown = null
      await Promise.race([h.closed, new Promise<void>((resolve) => {
        timer = this.clock.setTimeout(() => { try { h.proc.kill('SIGKILL') } catch {} ; resolve() }, HELPER_STOP_MS)
      })])
      this.clock.clearTimeout(timer)
    }
    await Promise.all([...this.dying])
    for (const a of this.unknown.values()) a.sock.destroy()
    this.unknown.clear()
    // The server's close waits for every connection: a stream its consumer never read to EOF
    // (an unread stderr) would hold it open for good.
    for (const a of this.conns.values()) a.sock.destroy()
    if (this.sweeping !== null) this.clock.clearTimeout(this.sweeping)
    if (this.stdioSweep !== null) this.clock.clearTimeout(this.stdioSweep)
    const server = this.server
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()))
    if (this.dir !== null) rmSync(this.dir, { recursive: true, force: true })
  }

  private ensureHelper (): Helper {
    if (this.helper !== null && !this.helper.dead) return this.helper
    if (this.server === null) this.listen()
    // The Perl script runs from a file in the private directory, not `-e`: perl's $0 rewrite pads
    // the original argv, and a 200-line -e argument made `ps` show a screen of blanks.
    const { kind, path } = this.program
    const proc = spawn(path, kind === 'compiled' ? [this.sockPath] : [this.scriptPath, this.sockPath, process.arch], {
      // Own session: a terminal's ^C goes to the proxy, which then stops CGI programs itself.
      stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: {}, cwd: '/', shell: false,
    })
    this.starts++
    let closedResolve!: () => void
    const h: Helper = {
      proc,
      children: new KeyTable(),
      closed: new Promise((resolve) => { closedResolve = resolve }),
      lineBuf: '',
      stderrTail: '',
      dead: false,
      shortage: null,
    }
    proc.stdin?.on('error', () => {})
    proc.stdout?.setEncoding('latin1')
    proc.stdout?.on('data', (s: string) => this.onReplies(h, s))
    proc.stderr?.setEncoding('utf8')
    proc.stderr?.on('data', (s: string) => { h.stderrTail = (h.stderrTail + s).slice(-1024) })
    // Gone = 'close', not 'exit': its last replies (exit statuses) may still be in the pipe at 'exit'.
    let why = 'exited'
    proc.on('error', (err: NodeJS.ErrnoException) => {
      if (proc.pid !== undefined) return
      why = `could not be started (${err.message})`
      if (err.code === 'EMFILE' || err.code === 'ENFILE') h.shortage = err.code
    })
    proc.on('exit', (code, signal) => { why = signal !== null ? `was killed by ${signal}` : `exited with code ${code}` })
    proc.on('close', () => {
      this.onHelperGone(h, why)
      this.dying.delete(h.closed)
      closedResolve()
    })
    this.dying.add(h.closed)
    this.helper = h
    if (this.active === 0) this.setRef(false)
    return h
  }

  /**
   * The private directory (once) and the listening socket. Throws when the socket cannot be
   * created (socket(2) fails with EMFILE when the proxy is out of descriptors): with `code` EMFILE
   * or ENFILE then (the CGI adapter answers 503 ERR_NO_DESCRIPTORS), else ERR_CGI_FORK_SERVER; the
   * next spawn tries again. Before, the server was kept though it never listened: every program's
   * connect failed (502 ERR_CGI_SPAWN) for the life of the proxy.
   */
  private listen (): void {
    if (this.dir === null) {
      // sun_path holds 107 bytes: a long TMPDIR falls back to /tmp.
      const prefix = DIR_PREFIX + ownerMark()
      const fits = (b: string): boolean => join(b, prefix).length + 6 + '/stdio.sock'.length <= SUN_PATH_MAX
      const base = fits(tmpdir()) ? tmpdir() : '/tmp'
      // Directories of proxies killed before they could remove theirs go first.
      removeStaleDirs(base)
      const dir = mkdtempSync(join(base, prefix)) // mode 0700
      if (this.program.kind === 'perl') {
        const script = join(dir, 'fork-server.pl')
        // open(2) fails with EMFILE when out of descriptors: the error (its code) is the caller's.
        try {
          writeFileSync(script, FORK_SERVER_PL, { mode: 0o600 })
        } catch (err) {
          // unlink and rmdir, not rmSync(dir, { recursive }): that opens the directory, and on
          // Node 24 it failed with EMFILE too, its own error thrown in place of this one and the
          // directory left behind (measured under prlimit --nofile=64).
          try { unlinkSync(script) } catch {}
          try { rmdirSync(dir) } catch {}
          throw err
        }
        this.scriptPath = script
      }
      this.dir = dir
      this.sockPath = join(dir, 'stdio.sock')
    }
    const server = createServer((sock) => this.onConnection(sock))
    server.on('error', () => {})
    // A socket file left by a listen that failed after bind(2) would make this one EADDRINUSE.
    rmSync(this.sockPath, { force: true })
    // exclusive: listen here even in a cluster worker, synchronously, before any child connects.
    server.listen({ path: this.sockPath, backlog: 4096, exclusive: true })
    // Node reports a failed socket/bind/listen on the next tick; `listening` says it at once.
    if (!server.listening) {
      const short = descriptorShortage(1)
      throw short !== null
        ? Object.assign(spawnError(short, `the CGI fork server cannot listen on ${this.sockPath}: the proxy is out of file descriptors (${short})`), { syscall: 'socket' })
        : spawnError('ERR_CGI_FORK_SERVER', `the CGI fork server cannot listen on ${this.sockPath}`)
    }
    this.server = server
  }

  /** Keep the event loop alive only while programs are in flight. */
  private setRef (on: boolean): void {
    const h = this.helper
    const handles: Array<{ ref (): unknown, unref (): unknown } | null | undefined> = [this.server, h?.proc, h?.proc.stdin as Socket | null, h?.proc.stdout as Socket | null, h?.proc.stderr as Socket | null]
    for (const x of handles) { if (x != null) { if (on) x.ref(); else x.unref() } }
  }

  private onConnection (sock: Socket): void {
    const entry: Accepted = { sock, at: this.clock.now(), [SLOT]: -1 }
    this.unknown.add(entry)
    if (this.sweeping === null) this.sweepLater()
    sock.on('error', () => {})
    const drop = (): void => { this.unknown.delete(entry) }
    sock.once('close', drop)
    const onReadable = (): void => {
      const hello = sock.read(HELLO) as Buffer | null
      if (hello === null) return
      sock.off('readable', onReadable)
      sock.off('close', drop)
      this.unknown.delete(entry)
      // Put it back: a stream whose buffer is empty at EOF emits 'end' at once, before the CGI
      // exchange listens (a program with no output). It is taken again right before 'spawn'.
      if (hello.length === HELLO) sock.unshift(hello)
      this.onHello(entry, hello)
    }
    if (forkServerSeams.helloDelayMs > 0) setTimeout(() => sock.on('readable', onReadable), forkServerSeams.helloDelayMs)
    else sock.on('readable', onReadable)
  }

  /** One timer for every connection still to say its token (not one per connection). */
  private sweepLater (): void {
    this.sweeping = this.clock.setTimeout(() => {
      this.sweeping = null
      const now = this.clock.now()
      for (const a of this.unknown.values()) if (now - a.at >= HELLO_TIMEOUT_MS) a.sock.destroy()
      if (this.unknown.size > 0) this.sweepLater()
    }, HELLO_TIMEOUT_MS / 4)
    ;(this.sweeping as { unref?: () => void }).unref?.()
  }

  private onHello (entry: Accepted, hello: Buffer): void {
    const sock = entry.sock
    const child = hello.length === HELLO ? this.tokens.get(hello.toString('hex', 0, 16)) : undefined
    const fd = hello[16]
    const slot = fd === 0 ? 'stdin' : fd === 1 ? 'stdout' : fd === 2 ? 'stderr' : null
    if (child === undefined || slot === null || child[slot] !== null || child.settled || (fd === 0 && child.expected < 3) ||
      forkServerSeams.dropStdio?.(fd) === true) {
      sock.destroy()
      return
    }
    child[slot] = sock
    this.conns.add(entry)
    sock.once('close', () => this.conns.delete(entry))
    if (fd === 0) {
      // We only write to stdin: drain its reading side, so the program's EOF closes the socket.
      sock.read(HELLO)
      sock.resume()
    }
    if (++child.conns === child.expected) this.tokens.delete(child.token)
    this.maybeSpawned(child)
  }

  private onReplies (h: Helper, text: string): void {
    h.lineBuf += text
    let nl: number
    while ((nl = h.lineBuf.indexOf('\n')) >= 0) {
      const line = h.lineBuf.slice(0, nl)
      h.lineBuf = h.lineBuf.slice(nl + 1)
      const parts = line.split(' ')
      const id = Number(parts[1])
      const child = h.children.get(id)
      if (child === undefined) continue
      switch (parts[0]) {
        case 'S': this.onExec(child, Number(parts[2])); break
        case 'E': this.failStart(child, Number(parts[2]), parts[3] ?? 'exec'); break
        case 'X': child.groupLeft = parts[3] !== '0'; this.onReaped(child, Number(parts[2])); break
      }
    }
  }

  /**
   * S: the program runs, past its setsid(), so -pid is its group from now on (not before: until
   * then the child is in the helper's group). Its connections may still be on the way.
   */
  private onExec (child: ForkChild, pid: number): void {
    child.pid = pid
    child.execOk = true
    child.emit('exec')
    this.maybeSpawned(child)
    if (child.spawned || child.settled) return
    child.execAt = this.clock.now()
    // The connections are made before the exec: one libuv closes unseen at EMFILE is lost by now or
    // soon. Whether the proxy is short is asked now too (a few opens, only for a child still
    // waiting): by the sweep, LATE_STDIO_MS later, other requests may have given descriptors back,
    // and the loss would read as the fork server's (502 ERR_CGI_FORK_SERVER; seen on a loaded run).
    child.shortAtExec = descriptorShortage(child.expected - child.conns)
    this.awaitingStdio.add(child)
    if (this.stdioSweep === null) this.sweepStdioLater()
  }

  /**
   * One timer for every child still waiting for a connection (not one per request): each gets
   * LATE_STDIO_MS from its S (more while a hello is unread), then fails. A sweep that itself ran late means our loop stalled, and
   * timers run before the accepts of the same turn: the children are judged on the next sweep
   * (only the next: a clock that jumps must not keep them for ever).
   */
  private sweepStdioLater (): void {
    const every = LATE_STDIO_MS / 4
    const due = this.clock.now() + every
    this.stdioSweep = this.clock.setTimeout(() => {
      this.stdioSweep = null
      const now = this.clock.now()
      this.stdioSweepSkipped = now - due >= every && !this.stdioSweepSkipped
      if (!this.stdioSweepSkipped) {
        // A connection accepted whose hello is not read yet may be any waiting child's (a busy
        // proxy reads three per program: 200 CGI requests at once under load took longer than
        // LATE_STDIO_MS, and every program past the 108th failed). While one is pending, a child
        // is judged lost only once that hello's own bound has passed too.
        const bound = this.unknown.size > 0 ? LATE_STDIO_MS + HELLO_TIMEOUT_MS : LATE_STDIO_MS
        for (const child of this.awaitingStdio.values()) if (now - child.execAt >= bound) this.stdioLost(child)
      }
      if (this.awaitingStdio.size > 0) this.sweepStdioLater()
    }, every)
    ;(this.stdioSweep as { unref?: () => void }).unref?.()
  }

  /**
   * The program runs (or ran) but a stdio connection never reached us: nothing can read or feed
   * it. It fails, and `exited` resolves so that its starter stops its group. When the proxy is out
   * of descriptors now or was when S came (descriptorShortage()), with `code` EMFILE (or ENFILE) as spawn() gives it
   * with the direct launcher: the connection was one libuv accepted and closed unseen, and the CGI
   * adapter answers 503 ERR_NO_DESCRIPTORS. Otherwise ERR_CGI_FORK_SERVER. Either way the helper
   * stays: it did its part.
   */
  private stdioLost (child: ForkChild): void {
    const missing = child.expected - child.conns
    const ran = child.status !== null ? ' (it has exited)' : ''
    const lost = `${child.file} (pid ${child.pid}): ${missing} of its ${child.expected} stdio connections never reached the proxy${ran}`
    const short = descriptorShortage(child.expected) ?? child.shortAtExec
    this.settle(child)
    this.emitError(child, short === null
      ? spawnError('ERR_CGI_FORK_SERVER', lost)
      : Object.assign(spawnError(short, `${lost}: it is out of file descriptors (${short})`), { syscall: 'accept' }))
  }

  private maybeSpawned (child: ForkChild): void {
    if (child.spawned || child.settled || !child.execOk || child.conns < child.expected) return
    child.spawned = true
    this.awaitingStdio.delete(child)
    // Drop the hellos in the same tick the listeners arrive (see onConnection).
    child.stdout?.read(HELLO)
    child.stderr?.read(HELLO)
    child.emit('spawn')
    if (child.status !== null) this.emitExit(child)
  }

  /** The child could not become the program: 'error' with Node's errno code, as spawn() gives. */
  private failStart (child: ForkChild, errno: number, step: string): void {
    const named = ERRNO_NAMES.get(errno) ?? `E${errno}`
    // The helper's stdio connection back to us was closed as soon as it was made: libuv, out of
    // descriptors, accepts and closes what is pending. Then it is the proxy's shortage (503), not
    // the program's failure (measured on Node 22: EPIPE at the connect step under prlimit).
    const short = step === 'connect' && (named === 'EPIPE' || named === 'ECONNRESET') ? descriptorShortage(1) : null
    // EMFILE from the helper is the helper's own limit (its socket(2) or pipe(2) failed), never the
    // proxy's: not code EMFILE, which the CGI adapter answers as the proxy's shortage (503
    // ERR_NO_DESCRIPTORS, "the proxy ran out"). ENFILE is the whole system's: the proxy's too.
    const helperShort = short === null && named === 'EMFILE'
    const code = helperShort ? 'ERR_CGI_FORK_SERVER_NO_DESCRIPTORS' : short ?? named
    const helper = `the CGI fork server (pid ${child.helper.proc.pid})`
    const why = short !== null
      ? `: the proxy is out of file descriptors (${short})`
      : helperShort
        ? `: ${helper}, not the proxy, is out of file descriptors`
        // Its malloc failed (RLIMIT_AS, RLIMIT_DATA, a cgroup's memory): this request alone failed.
        : named === 'ENOMEM' && step === 'memory' ? `: ${helper} is out of memory` : ''
    const err = Object.assign(new Error(`spawn ${child.file} ${named}${step === 'exec' ? '' : ` (${step})`}${why}`), {
      code, errno: -errno, syscall: `spawn ${child.file}`, path: child.file,
    })
    this.settle(child)
    this.emitError(child, err)
  }

  private onReaped (child: ForkChild, raw: number): void {
    const sig = raw & 0x7f
    child.status = sig === 0 ? { code: (raw >> 8) & 0xff, signal: null } : { code: null, signal: SIGNAL_NAMES.get(sig) ?? 'SIGKILL' }
    // Else a connection is still in our accept queue (then 'spawn' emits the exit too) or lost
    // (its LATE_STDIO_MS from S run out).
    if (child.spawned) this.emitExit(child)
  }

  private emitExit (child: ForkChild): void {
    const status = child.status as { code: number | null, signal: NodeJS.Signals | null }
    this.settle(child)
    child.emit('exit', status.code, status.signal)
  }

  /**
   * Forget the child: no more connections, replies or events for it. `exited` resolves now, or
   * once `gone` does (an orphan being killed).
   */
  private settle (child: ForkChild, gone?: Promise<void>): void {
    if (child.settled) return
    child.settled = true
    child.helper.children.delete(child.id)
    this.tokens.delete(child.token)
    this.awaitingStdio.delete(child)
    if (!child.spawned) {
      for (const s of [child.stdin, child.stdout, child.stderr]) s?.destroy()
    }
    if (gone === undefined) child.resolveExited()
    else void gone.then(child.resolveExited)
    if (--this.active === 0) this.setRef(false)
  }

  private emitError (child: ForkChild, err: Error): void {
    if (child.listenerCount('error') > 0) child.emit('error', err)
  }

  private onHelperGone (h: Helper, why: string): void {
    if (h.dead) return
    h.dead = true
    if (this.helper === h) this.helper = null
    const tail = h.stderrTail.trim()
    const reason = `${why}${tail !== '' ? `: ${tail.split('\n').slice(-3).join(' | ')}` : ''}`
    for (const child of h.children.values()) this.orphan(child, reason)
  }

  /**
   * The helper is gone with `child` in flight: nobody will reap or report it. Kill its group now
   * (the exchange fails anyway), fail it with a coded error, and resolve `exited` once it is gone.
   */
  private orphan (child: ForkChild, why: string): void {
    if (child.settled) return
    const pid = child.pid
    // No pid: the helper died before it said S. Settling closes the connections it made, so a
    // program that still got to run reads EOF and its writes fail.
    if (pid === undefined) this.settle(child)
    else {
      // The pid comes with S, after the child's setsid(): its group holds it and all it started.
      signalGroup(pid, 'SIGKILL')
      const deadline = this.clock.now() + ORPHAN_WAIT_MS
      this.settle(child, new Promise<void>((resolve) => {
        const poll = (): void => {
          if ((liveGroupMembers(pid).length === 0 && !isLive(pid)) || this.clock.now() >= deadline) resolve()
          else this.clock.setTimeout(poll, POLL_MS)
        }
        poll()
      }))
    }
    const message = `the CGI fork server ${why}${pid !== undefined ? `; pid ${pid} killed` : ''}`
    // Not started for want of descriptors: the proxy is short (503 ERR_NO_DESCRIPTORS), the next
    // spawn starts it again.
    const short = child.helper.shortage
    this.emitError(child, short !== null ? Object.assign(spawnError(short, message), { syscall: 'spawn' }) : spawnError('ERR_CGI_FORK_SERVER', message))
  }
}
