/**
 * Turns a spawn's argv + clean environment into the exact exec plan: identity (uid/gid, checked
 * suEXEC-style at start()), umask, resource limits, socket ownership, and the parent-death signal.
 *
 * Wrapping, outermost first, all exec'ing so the pid stays the one we supervise:
 *   prlimit --as= --data= --cpu= --nofile= --nproc= --  (util-linux; RLIMITs survive exec)
 *   /bin/sh -c 'umask 022; exec "$0" "$@"'      (Node has no per-child umask; process.umask() is host-wide;
 *                                                 left out for the CGI fork server, which sets it itself)
 *   setpriv --pdeathsig=<killSignal> --         (util-linux; PR_SET_PDEATHSIG, innermost: see below)
 *   /bin/sh -c 'unset PWD; [ "$PPID" = <host pid> ] || exit 1; exec "$0" "$@"'
 *                                               (socket spawns, where the shell keeps the environment)
 *   program args…
 * uid/gid go through Node's spawn options: libuv calls setgroups(0) first, so the child has no
 * supplementary groups [VERIFIED, RELIABILITY.md §1.4]. With `groups: 'user'` the switch is done by
 *   setpriv --reuid=U --regid=G --init-groups --   (util-linux; initgroups(3) of the target user)
 * outside the umask shell instead, so the shell and the program run as the target.
 * With `chroot`, util-linux `unshare --root=DIR --wd=CWD [--setgid=G] --setuid=U --` comes inside
 * the umask shell, with only the parent-death wrapper inside it (no namespaces: chroot, chdir,
 * setgroups(0)+setgid, setuid, exec); for
 * `groups: 'user'` setpriv sets the gid and the user's group list first (`--regid --groups`) and
 * unshare only the uid, since after setuid nothing could chroot. Fds (the hand-off socket) survive.
 *
 * The parent-death wrapper: the kernel sends the signal to the program when the thread that forked
 * it (Node's main thread) ends, however it ends (SIGKILL included). The kernel clears it at every
 * change of uid/gid (commit_creds: Node's switch, setpriv's, unshare's), so it comes after the last
 * one: innermost, right around the program (under chroot the root's own /usr/bin/setpriv and
 * /bin/sh, after unshare's setuid). The shell after it closes the race of a host that died before
 * the prctl (the child then has another parent and would never be signalled): it runs only after
 * the prctl, so either the host is still its parent (and its death will be signalled) or it exits.
 * It is left out where it would change the program's environment (a /bin/sh that adds variables,
 * names dash drops or sets itself). The wrapper is left out, with no error, where it cannot work
 * (no setpriv, one without --pdeathsig, a root without one: probed at validate()), for the fork
 * server's plans (the fork server kills its children itself), and for a program that cannot be
 * executed (Node reports that as before). docs/design/spawn.md "Parent death".
 */
import { execFileSync, spawn } from 'node:child_process'
import { accessSync, chmodSync, chownSync, constants as fsConstants, existsSync, lstatSync, readFileSync, statSync, type Stats } from 'node:fs'
import { isAbsolute, join, relative, resolve as resolvePath } from 'node:path'
import type { LimitsSpec, ManagerOptions } from './types.js'
import { spawnError } from './types.js'
import type { ResolvedSpec } from './spec.js'
import type { LaunchPlan } from './process.js'
import { checkProgram, checkReachable, checkSocketDir, checkSocketDirPrivate, resolveIdentity, type Identity, type IdentityPolicy } from './identity.js'
import { forkServerUnsupported } from './fork-server.js'

/** suexec AP_SAFE_PATH: user-switched children get this PATH, never the host's. */
export const SAFE_PATH = '/usr/local/bin:/usr/bin:/bin'
export const CHILD_UMASK = '022'
/** The same, for the fork server, which sets it itself (no wrapper shell). */
export const CHILD_UMASK_BITS = 0o022
export const SETPRIV = '/usr/bin/setpriv'
export const UNSHARE = '/usr/bin/unshare'
/** How long a parent-death probe may take before it counts as unsupported (and is killed). */
const PROBE_TIMEOUT_MS = 5000
/** Node's (libuv's) search path for a program when the child's environment has no PATH. */
const DEFAULT_SEARCH_PATH = '/usr/bin:/bin'

export interface CgroupSupport { readonly available: boolean, readonly reason: string }

/**
 * cgroup v2 limits need a delegated subtree (cgroup.controllers at the unified mount, writable).
 * Reported, never silently assumed: limits fall back to prlimit, which is per process.
 */
export function detectCgroup (): CgroupSupport {
  const root = '/sys/fs/cgroup'
  if (!existsSync(`${root}/cgroup.controllers`)) return { available: false, reason: 'no cgroup v2 unified hierarchy at /sys/fs/cgroup (v1 or hybrid)' }
  const own = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))
  if (own === undefined) return { available: false, reason: 'process is not in a cgroup v2 group' }
  return { available: true, reason: `cgroup v2 at ${root}${own.slice(3)}` }
}

function prlimitArgs (l: LimitsSpec): string[] {
  const out: string[] = []
  if (l.memory !== undefined) out.push(`--as=${l.memory}`)
  if (l.data !== undefined) out.push(`--data=${l.data}`)
  if (l.cpu !== undefined) out.push(`--cpu=${l.cpu}`)
  if (l.nofile !== undefined) out.push(`--nofile=${l.nofile}`)
  if (l.processes !== undefined) out.push(`--nproc=${l.processes}`)
  return out
}

/** The parent-death wrapper a spawn gets: its signal, and whether the check shell may follow. */
interface ParentDeath {
  readonly signal: NodeJS.Signals
  /** /bin/sh passes an environment through unchanged (probed): the race check can run. */
  readonly check: boolean
}

interface Resolved {
  identity: Identity | null
  limits: LimitsSpec | undefined
  groupList: string | null
  /** null: no wrapper (see parentDeathSupport). */
  parentDeath: ParentDeath | null
}

const ENV_BIN = '/usr/bin/env'

/**
 * Run `argv` with `env`: did it exit 0, and what did it print (the first 64 KiB)? In a process group
 * of its own, killed whole after PROBE_TIMEOUT_MS. Never rejects.
 */
function probe (argv: string[], env: Record<string, string>): Promise<{ ok: boolean, out: string }> {
  return new Promise((resolve) => {
    let out = ''
    let timer: NodeJS.Timeout | null = null
    const done = (ok: boolean): void => {
      if (timer !== null) clearTimeout(timer)
      timer = null
      resolve({ ok, out })
    }
    try {
      const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'], env, cwd: '/', detached: true, shell: false })
      child.stdout?.on('data', (c: Buffer) => { if (out.length < 65536) out += c.toString() })
      child.once('error', () => done(false))
      child.once('close', (code) => done(code === 0))
      timer = setTimeout(() => {
        try { process.kill(-(child.pid as number), 'SIGKILL') } catch { /* gone */ }
      }, PROBE_TIMEOUT_MS)
    } catch {
      done(false)
    }
  })
}

/**
 * Can `setpriv --pdeathsig=SIG` run (after `prefix`: unshare into a chroot), and may the check shell
 * follow it? The shell qualifies when `env` run through it prints the same variables as `env` run
 * by setpriv alone: a /bin/sh that adds its own (bash: SHLVL, _) would change every program's
 * environment, so such a system gets setpriv without the check. null: no wrapper at all (no setpriv,
 * one without --pdeathsig (util-linux < 2.33), a signal name it does not know, nothing in a root).
 */
async function parentDeathSupport (prefix: string[], signal: NodeJS.Signals): Promise<ParentDeath | null> {
  const sp = [...prefix, SETPRIV, `--pdeathsig=${signal}`, '--']
  const env = { PROXYCORE_PROBE: '1' }
  const direct = await probe([...sp, ENV_BIN], env)
  if (!direct.ok) return (await probe([...sp, SETPRIV, '--version'], {})).ok ? { signal, check: false } : null
  const shelled = await probe([...sp, ...checkShell(env, ENV_BIN), ENV_BIN], env)
  const lines = (s: string): string => s.split('\n').sort().join('\n')
  return { signal, check: shelled.ok && lines(shelled.out) === lines(direct.out) }
}

/** The host's setpriv, per signal: probed once per process (it does not change under a running host). */
const hostProbes = new Map<string, Promise<ParentDeath | null>>()

function hostParentDeath (signal: NodeJS.Signals): Promise<ParentDeath | null> {
  let p = hostProbes.get(signal)
  if (p === undefined) {
    p = existsSync(SETPRIV) ? parentDeathSupport([], signal) : Promise.resolve(null)
    hostProbes.set(signal, p)
  }
  return p
}

/**
 * Would Node's spawn() find and exec `file` (in `cwd`, with `env`'s PATH or Node's default)?
 * When not, the parent-death wrapper is left out so the exec error stays Node's own ERR_SPAWN_EXEC
 * (ENOENT, EACCES) rather than a wrapper's exit 127 after it started.
 */
function executable (file: string, env: Record<string, string>, cwd: string | undefined): boolean {
  const runs = (path: string): boolean => {
    try {
      accessSync(path, fsConstants.X_OK)
      return statSync(path).isFile()
    } catch { return false }
  }
  const base = cwd ?? process.cwd()
  if (file.includes('/')) return runs(resolvePath(base, file))
  return (env.PATH ?? DEFAULT_SEARCH_PATH).split(':').some((dir) => runs(resolvePath(base, join(dir, file))))
}

/**
 * Can a pipe (CGI) spawn's program be executed? An absolute `binPath` (`argv[0]`) must be a regular
 * file this process may execute; otherwise ERR_SPAWN_EXEC `spawns.<name>.binPath: <prog>: not
 * found (ENOENT)` or `… not an executable regular file (EACCES)`, so `proxycore check`, a start and
 * a reload refuse it (unchecked, a reload to it was accepted and then every CGI request was 502
 * ERR_CGI_SPAWN). Not checked, since execvp(3) resolves them per request: a bare name (searched in
 * the PATH of each request's environment, which a route's `params` or an embedder's request may
 * set) and a relative path with a slash (from each request's working directory, the script's).
 * No binPath (the script is the program): nothing to check. A user-switched spawn's program gets
 * identity.ts checkProgram instead (validate), which already requires an absolute path.
 */
export function checkPipeProgram (spec: ResolvedSpec): void {
  const prog = spec.argv[0]
  if (spec.socketType !== 'pipe' || prog === undefined || !isAbsolute(prog)) return
  let st: Stats
  try { st = statSync(prog) } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EACCES') throw spawnError('ERR_SPAWN_EXEC', `spawns.${spec.name}.binPath: ${prog}: a directory on the way cannot be searched (EACCES)`)
    throw spawnError('ERR_SPAWN_EXEC', `spawns.${spec.name}.binPath: ${prog}: not found (ENOENT)`)
  }
  let runs = st.isFile()
  if (runs) { try { accessSync(prog, fsConstants.X_OK) } catch { runs = false } }
  if (!runs) throw spawnError('ERR_SPAWN_EXEC', `spawns.${spec.name}.binPath: ${prog}: not an executable regular file (EACCES)`)
}

/**
 * Does /bin/sh pass `env` on as it is? dash drops variables whose names are not shell names
 * (`A.B`, `X-Y`: the config allows them), and sets IFS, OPTIND, PPID and PWD itself.
 */
function shellKeeps (env: Record<string, string>): boolean {
  return Object.keys(env).every((k) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(k) && !['IFS', 'OPTIND', 'PPID', 'PWD'].includes(k))
}

/**
 * `sh -c '…[ "$PPID" = <host pid> ] || exit 1; exec "$0" "$@"'`, to run right after setpriv: the
 * prctl came before it, so a host that dies later is signalled, and one that died earlier is
 * noticed here and the program never starts. dash exports a PWD of its own (unset: `env` has none,
 * see shellKeeps), and looks a bare program name up in its own default path when the environment
 * has no PATH (given Node's instead; the assignment is not exported).
 */
function checkShell (env: Record<string, string>, program: string): string[] {
  const path = env.PATH === undefined && !program.includes('/') ? `PATH=${DEFAULT_SEARCH_PATH}; ` : ''
  return ['/bin/sh', '-c', `unset PWD; ${path}[ "$PPID" = ${process.pid} ] || exit 1; exec "$0" "$@"`]
}

/** `setpriv --pdeathsig=SIG -- [check shell] cmd…` */
function withParentDeath (cmd: string[], pd: ParentDeath, check: boolean, env: Record<string, string>): string[] {
  const shell = check ? checkShell(env, cmd[0] ?? '') : []
  return [SETPRIV, `--pdeathsig=${pd.signal}`, '--', ...shell, ...cmd]
}

/** sshd ChrootDirectory's rule: root-owned, not writable by group or others, not a symlink. */
function checkChroot (spec: ResolvedSpec, root: string, id: Identity | null): void {
  const unsafe = (why: string): never => { throw spawnError('ERR_SPAWN_CHROOT_UNSAFE', `spawns.${spec.name}.chroot ${root}: ${why}`) }
  if (id === null) unsafe('chroot needs user and group (a root process can leave a chroot)')
  if (spec.socketType === 'pipe') throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${spec.name}.chroot: only socket spawns can be chrooted (CGI script paths are host paths)`)
  if (!isAbsolute(root) || root.split('/').includes('..')) unsafe('needs an absolute path without ..')
  let st: Stats | null = null
  try { st = lstatSync(root) } catch { unsafe('cannot stat') }
  if (st === null || st.isSymbolicLink() || !st.isDirectory()) unsafe('not a directory (or a symlink)')
  if (st !== null && st.uid !== 0) unsafe(`owned by uid ${st.uid}, not root`)
  if (st !== null && (st.mode & 0o022) !== 0) unsafe('writable by group or others')
  if (!existsSync(UNSHARE)) throw spawnError('ERR_SPAWN_CHROOT_UNSUPPORTED', `spawns.${spec.name}.chroot: ${UNSHARE} (util-linux) is not installed`)
  if (spec.handoff === 'self') {
    for (const a of spec.addresses) {
      if (a.kind === 'unix' && !a.path.startsWith(`${root.replace(/\/+$/, '')}/`)) throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${spec.name}.socketName ${a.path}: with handoff self and chroot, a unix socket must lie inside the root`)
    }
  }
}

/** The host path of a path inside `root`. */
function inRoot (root: string, p: string): string {
  return `${root.replace(/\/+$/, '')}${p}`
}

/** `sh -c 'umask 022; exec "$0" "$@"' argv…`: Node has no per-child umask. */
function withUmask (cmd: string[]): string[] {
  return ['/bin/sh', '-c', `umask ${CHILD_UMASK}; exec "$0" "$@"`, ...cmd]
}

export class Launcher {
  private readonly opts: ManagerOptions
  private readonly policy: IdentityPolicy
  private readonly resolved = new Map<string, Resolved>()

  constructor (opts: ManagerOptions) {
    this.opts = opts
    this.policy = { minUid: opts.minUid ?? 1000, minGid: opts.minGid ?? 1000, allowedRoots: opts.allowedRoots }
  }

  /** Resolve the tenant, the identity and run the suEXEC checks; throws a coded error. */
  async validate (spec: ResolvedSpec): Promise<void> {
    let { user, group, limits } = spec
    if (spec.tenant !== undefined) {
      const tenant = this.opts.tenants?.[spec.tenant]
      if (tenant === undefined) throw spawnError('ERR_IDENTITY_UNKNOWN_TENANT', `spawns.${spec.name}.tenant: no tenant named ${spec.tenant}`)
      if ((user !== undefined && String(user) !== String(tenant.user)) || (group !== undefined && String(group) !== String(tenant.group))) {
        throw spawnError('ERR_IDENTITY_TENANT_CONFLICT', `spawns.${spec.name}: user/group differ from tenant ${spec.tenant}`)
      }
      user = tenant.user
      group = tenant.group
      limits = { ...tenant.limits, ...limits }
    }
    let identity: Identity | null = null
    if (user !== undefined || group !== undefined) {
      identity = resolveIdentity(user, group, this.policy)
      if (spec.chroot !== undefined) checkChroot(spec, spec.chroot, identity)
      const prog = spec.argv[0]
      // Under chroot the program is checked where it really is: the root plus its path inside.
      if (prog !== undefined) checkProgram(spec.chroot !== undefined && isAbsolute(prog) ? inRoot(spec.chroot, prog) : prog, identity, this.policy)
    }
    if (spec.chroot !== undefined && identity === null) checkChroot(spec, spec.chroot, identity)
    // A pipe spawn's program is exec'd per request: one that cannot be is refused here (check, start,
    // reload), not as a 502 on every request. A socket spawn's start reports it (FAILED).
    if (identity === null) checkPipeProgram(spec)
    this.checkSocketDirs(spec, identity)
    if (spec.groups === 'user') {
      if (identity === null) throw spawnError('ERR_SPAWN_BAD_SPEC', `spawns.${spec.name}.groups: user needs user and group (or a tenant)`)
      if (!existsSync(SETPRIV)) throw spawnError('ERR_SPAWN_GROUPS_UNSUPPORTED', `spawns.${spec.name}.groups: ${SETPRIV} (util-linux) is not installed`)
    }
    const noForkServer = spec.socketType === 'pipe' && spec.launcher === 'fork-server' ? forkServerUnsupported() : null
    if (noForkServer !== null) throw spawnError('ERR_SPAWN_FORK_SERVER_UNSUPPORTED', `spawns.${spec.name}.launcher: ${noForkServer}`)
    if (limits !== undefined && prlimitArgs(limits).length > 0 && !existsSync('/usr/bin/prlimit')) {
      throw spawnError('ERR_SPAWN_LIMITS_UNSUPPORTED', `spawns.${spec.name}.limits: prlimit (util-linux) is not installed`)
    }
    // The user's groups, resolved on the host (the chroot has no group database).
    const groupList = spec.chroot !== undefined && spec.groups === 'user' && identity !== null
      ? execFileSync('id', ['-G', '--', identity.user], { encoding: 'utf8', env: {} }).trim().split(/\s+/).join(',')
      : null
    const parentDeath = await this.parentDeath(spec, identity)
    this.resolved.set(spec.name, { identity, limits, groupList, parentDeath })
  }

  /**
   * The parent-death wrapper of a spawn: the signal is its killSignal (what a normal stop sends
   * first, so a program that takes its workers down on it does so here too). null where it would
   * not work (parentDeathSupport), and under chroot where the root has no /usr/bin/setpriv of its
   * own that runs: probed as the spawn's user, inside the root, since the host's binaries are out of
   * reach after the chroot and a signal set before unshare's setuid is cleared by it. Never an
   * error: such a spawn runs as before, without the protection.
   */
  private async parentDeath (spec: ResolvedSpec, id: Identity | null): Promise<ParentDeath | null> {
    const signal = spec.killSignal
    if (!/^SIG[A-Z0-9]+$/.test(signal)) return null
    if (spec.chroot === undefined) return await hostParentDeath(signal)
    if (id === null || !existsSync(UNSHARE)) return null
    return await parentDeathSupport([UNSHARE, `--root=${spec.chroot}`, '--wd=/', `--setgid=${id.gid}`, `--setuid=${id.uid}`, '--'], signal)
  }

  /**
   * The program checks again, right before each exec of a user-switched socket spawn (restart,
   * maxRequests recycle, scale-up): a directory swapped after start() must not get its code run as
   * the target user. The socket directory check of a `handoff: self` unix spawn is repeated too
   * (every spawn, user-switched or not), before the stale socket is removed. Throws the coded
   * error, which the process reports as a failed start (backoff, then FAILED). Per process start,
   * never per request.
   */
  recheckProgram (spec: ResolvedSpec): void {
    const id = this.resolved.get(spec.name)?.identity ?? null
    const prog = spec.argv[0]
    if (id !== null && prog !== undefined) {
      try {
        checkProgram(spec.chroot !== undefined && isAbsolute(prog) ? inRoot(spec.chroot, prog) : prog, id, this.policy)
      } catch (err) {
        const code = (err as { code: string }).code
        throw spawnError(code, `${code}: spawns.${spec.name}: program refused before exec: ${(err as Error).message}`, err)
      }
    }
    try {
      this.checkSocketDirs(spec, id)
    } catch (err) {
      const code = (err as { code: string }).code
      throw spawnError(code, `${code}: refused before exec: ${(err as Error).message}`, err)
    }
  }

  /**
   * `handoff: self` with a unix socketName: the program binds the name itself after the host
   * removed a stale socket, so nobody but root and the spawn's user (the host's own uid when the
   * spawn does not switch user) may be able to create it first (identity.ts checkSocketDir). Every
   * `<path>-N` of further processes lies in the same directory. A user-switched spawn's socket
   * must also be out of other users' reach (checkSocketDirPrivate: the program picks its mode).
   * ERR_SPAWN_SOCKET_DIR_UNSAFE.
   */
  private checkSocketDirs (spec: ResolvedSpec, id: Identity | null): void {
    if (spec.handoff !== 'self') return
    const uid = id?.uid ?? process.geteuid?.() ?? 0
    const who = id?.user ?? (uid === 0 ? 'root' : `uid ${uid}`)
    for (const a of spec.addresses) {
      if (a.kind !== 'unix') continue
      const example = `${(this.opts.runDir ?? '/run/proxycore').replace(/\/+$/, '')}/${spec.name}/`
      try {
        checkSocketDir(a.path, { uid })
      } catch (err) {
        const code = (err as { code?: unknown }).code
        if (code !== 'ERR_SPAWN_SOCKET_DIR_UNSAFE') throw err
        throw spawnError(code, `spawns.${spec.name}.socketName ${a.path}: ${(err as Error).message}. With handoff self the program binds the socket itself, so another user who can write there could bind the name first and receive the site's requests: put the socket in a directory only ${who === 'root' ? 'root' : `${who} (or root)`} can write, with no directory above it writable by others, e.g. ${example} owned by ${who}, mode ${id === null || id.uid === 0 ? '0700 or 0755' : '0700'}`, err)
      }
      // Another user's backend: other tenants must not be able to connect to it at all.
      if (id === null || id.uid === 0) continue
      try {
        checkSocketDirPrivate(a.path, id)
      } catch (err) {
        throw spawnError('ERR_SPAWN_SOCKET_DIR_UNSAFE', `spawns.${spec.name}.socketName ${a.path}: ${(err as Error).message}. With handoff self the program sets the socket's mode itself (php-cgi -b makes it 0777), and whoever connects to a FastCGI or SCGI backend runs code as ${who}: put the socket in a directory other users cannot search, e.g. ${example} owned by ${who}, mode 0700, or use handoff fd0 (proxycore makes that socket ${who}'s and the host group's, mode 0660)`, err)
      }
    }
  }

  /**
   * suEXEC checks on a CGI script at request time (a user-switched pipe spawn runs whatever the URL
   * resolved to, so each script gets the checks the spawn's program got at load). Throws a coded
   * ERR_SUEXEC_* error; no-op for spawns that do not switch user.
   */
  checkScript (spec: ResolvedSpec, script: string): void {
    const id = this.resolved.get(spec.name)?.identity ?? null
    if (id === null) return
    checkProgram(script, id, this.policy, { interpreted: spec.argv.length > 0 })
    // Under chroot the child reaches the script from the new root, not through the host's path.
    if (spec.chroot === undefined) checkReachable(script, id, { interpreted: spec.argv.length > 0, anyGroup: spec.groups === 'user' })
  }

  /**
   * `nativeUmask`: the plan is for the fork server, which sets the umask itself between fork and
   * exec; the `sh -c 'umask 022; exec …'` wrapper (an extra exec per request) is left out.
   */
  plan (spec: ResolvedSpec, argv: string[], env: Record<string, string>, cwd: string | undefined, nativeUmask = false): LaunchPlan {
    const r: Resolved = this.resolved.get(spec.name) ?? { identity: null, limits: spec.limits, groupList: null, parentDeath: null }
    let cmd = argv
    const id = r.identity
    // Node switches uid/gid itself unless a helper does it (setpriv for the user's groups).
    let nodeSwitches = id !== null
    let nodeCwd = cwd ?? spec.cwd
    const root = spec.chroot
    if (id !== null) env = { ...env, PATH: SAFE_PATH }
    // Innermost, after every uid switch (each clears it). Not for the fork server's children: it
    // kills them itself when the host goes. Under chroot the program was checked to exist inside.
    // The check shell for socket spawns only: a CGI program caught by the race has lost the host's
    // pipes anyway, and the shell would be one more exec per request.
    if (!nativeUmask && r.parentDeath !== null && (root !== undefined || executable(argv[0] ?? '', env, nodeCwd))) {
      cmd = withParentDeath(cmd, r.parentDeath, r.parentDeath.check && spec.socketType === 'socket' && shellKeeps(env), env)
    }
    if (id !== null) {
      if (root !== undefined) {
        if (env.SOCKET !== undefined) env.SOCKET = `/${relative(root, env.SOCKET)}`
        const ids = spec.groups === 'user' ? [`--setuid=${id.uid}`] : [`--setgid=${id.gid}`, `--setuid=${id.uid}`]
        cmd = [UNSHARE, `--root=${root}`, `--wd=${nodeCwd ?? '/'}`, ...ids, '--', ...cmd]
        nodeCwd = root
        nodeSwitches = false
      }
      if (!nativeUmask) cmd = withUmask(cmd)
      if (spec.groups === 'user') {
        const sw = root !== undefined
          ? [`--regid=${id.gid}`, `--groups=${r.groupList ?? String(id.gid)}`]
          : [`--reuid=${id.uid}`, `--regid=${id.gid}`, '--init-groups']
        cmd = [SETPRIV, ...sw, '--', ...cmd]
        nodeSwitches = false
      }
    }
    let file = cmd[0]
    let args = cmd.slice(1)
    const limitArgs = r.limits === undefined ? [] : prlimitArgs(r.limits)
    if (limitArgs.length > 0) {
      args = [...limitArgs, '--', file, ...args]
      file = '/usr/bin/prlimit'
    }
    return {
      file,
      args,
      env: ownVariables(env),
      cwd: nodeCwd,
      uid: nodeSwitches ? id?.uid : undefined,
      gid: nodeSwitches ? id?.gid : undefined,
      umask: nativeUmask && id !== null ? CHILD_UMASK_BITS : undefined,
      runAs: id?.uid,
      // spawn-fcgi -M 0660 -U user: the backend and the host's group may connect, other tenants not.
      socketAccess: id === null ? undefined : (path) => { chownSync(path, id.uid, process.getgid?.() ?? 0); chmodSync(path, 0o660) },
    }
  }
}

/**
 * The child's variables: the object's own keys, copied into an object without a prototype.
 * spawn() reads inherited keys too (on purpose, for `Object.create(process.env)`), and so does the
 * fork server's frame, so a polluted Object.prototype would otherwise become a variable of every
 * backend and CGI script (a PHP_VALUE, an LD_PRELOAD).
 */
function ownVariables (env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = Object.create(null)
  for (const k of Object.keys(env)) out[k] = env[k]
  return out
}
