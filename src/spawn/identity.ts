/**
 * Running a backend as its own user: suEXEC's checks (httpd support/suexec.c, RELIABILITY.md
 * §1.1/§1.4), done in the host before exec. Each refusal has its own stable code.
 *
 * Program ownership: suexec requires the program to be owned by the target user. A spawn's
 * program is often a system interpreter (/usr/bin/php-cgi), so a program owned by root, in a
 * root-owned directory, neither writable by group/other, is accepted too: the property the check
 * protects (nobody but the target user or root can change what runs) holds. Anything else owned
 * by another user is refused. Residual TOCTOU between these stats and exec: only root or the
 * target user can race it, and that gains nothing beyond the target user's own rights (§1.4).
 */
import { execFileSync } from 'node:child_process'
import { lstatSync, realpathSync, statSync, type Stats } from 'node:fs'
import { dirname, isAbsolute, resolve, sep } from 'node:path'
import { spawnError } from './types.js'

export interface Identity { readonly uid: number, readonly gid: number, readonly user: string, readonly group: string }

export interface IdentityPolicy {
  readonly minUid: number
  readonly minGid: number
  readonly allowedRoots: readonly string[] | undefined
}

/** Stable refusal codes (the core's error table lists them; never reuse one for another meaning). */
export const IDENTITY_CODES = [
  'ERR_IDENTITY_NOT_ROOT', 'ERR_IDENTITY_USER_REQUIRED', 'ERR_IDENTITY_GROUP_REQUIRED', 'ERR_IDENTITY_BAD_ID',
  'ERR_IDENTITY_UNKNOWN_USER', 'ERR_IDENTITY_UNKNOWN_GROUP', 'ERR_IDENTITY_UID_ZERO', 'ERR_IDENTITY_GID_ZERO',
  'ERR_IDENTITY_UID_BELOW_MIN', 'ERR_IDENTITY_GID_BELOW_MIN', 'ERR_IDENTITY_UNKNOWN_TENANT', 'ERR_IDENTITY_TENANT_CONFLICT',
  'ERR_SUEXEC_RELATIVE_PATH', 'ERR_SUEXEC_DOTDOT', 'ERR_SUEXEC_NOT_FOUND', 'ERR_SUEXEC_SYMLINK', 'ERR_SUEXEC_NOT_IN_ROOT',
  'ERR_SUEXEC_OWNER_MISMATCH', 'ERR_SUEXEC_FILE_WRITABLE', 'ERR_SUEXEC_DIR_WRITABLE', 'ERR_SUEXEC_SETID', 'ERR_SUEXEC_NOT_EXECUTABLE',
] as const

/**
 * getent(1) answers from every NSS source (files, LDAP, sssd), not just /etc/passwd. `--`: a name
 * starting with a dash is a key, never one of getent's options (`--version` printed its banner, a
 * NaN uid; `-i` listed the whole database, root first).
 */
function getent (db: 'passwd' | 'group', key: string): string[] | null {
  try {
    return execFileSync('getent', [db, '--', key], { encoding: 'utf8', env: {} }).trim().split(':')
  } catch {
    return null
  }
}

/** suexec check 6: strictly numeric ids, no sign, no overflow. */
function parseId (raw: string | number, what: string): number | null {
  const s = String(raw)
  if (!/^\d+$/.test(s)) {
    if (/^[-+]?\d/.test(s)) throw spawnError('ERR_IDENTITY_BAD_ID', `${what} ${JSON.stringify(s)} is not a valid id`)
    return null
  }
  const n = Number(s)
  if (n >= 0xffffffff) throw spawnError('ERR_IDENTITY_BAD_ID', `${what} ${s} is out of range`)
  return n
}

export function resolveIdentity (user: string | number | undefined, group: string | number | undefined, policy: IdentityPolicy): Identity {
  if (user === undefined) throw spawnError('ERR_IDENTITY_USER_REQUIRED', 'group is set without user')
  // spawn({uid}) alone leaves the child in gid 0 [VERIFIED, AC-20].
  if (group === undefined) throw spawnError('ERR_IDENTITY_GROUP_REQUIRED', `user ${String(user)} is set without group`)
  if (process.getuid?.() !== 0) throw spawnError('ERR_IDENTITY_NOT_ROOT', 'switching user needs the host to run as root')
  const uidNum = parseId(user, 'user')
  const pw = getent('passwd', String(user))
  if (pw === null) throw spawnError('ERR_IDENTITY_UNKNOWN_USER', `no passwd entry for user ${String(user)}`)
  const gidNum = parseId(group, 'group')
  const gr = getent('group', String(group))
  if (gr === null) throw spawnError('ERR_IDENTITY_UNKNOWN_GROUP', `no group entry for ${String(group)}`)
  const uid = uidNum ?? Number(pw[2])
  const gid = gidNum ?? Number(gr[2])
  if (uid === 0) throw spawnError('ERR_IDENTITY_UID_ZERO', 'refusing to run a backend as uid 0 (suexec 107)')
  if (gid === 0) throw spawnError('ERR_IDENTITY_GID_ZERO', 'refusing to run a backend as gid 0 (suexec 108)')
  if (uid < policy.minUid) throw spawnError('ERR_IDENTITY_UID_BELOW_MIN', `uid ${uid} is below minUid ${policy.minUid}`)
  if (gid < policy.minGid) throw spawnError('ERR_IDENTITY_GID_BELOW_MIN', `gid ${gid} is below minGid ${policy.minGid}`)
  return { uid, gid, user: pw[0], group: gr[0] }
}

function ownerOk (st: Stats, id: Identity): boolean {
  return (st.uid === id.uid && st.gid === id.gid) || (st.uid === 0 && st.gid === 0)
}

/**
 * Every directory above `start`, up to `/`: whoever may rename an entry of one of them can swap
 * the whole subtree below it (audit D: a tenant owning the directory above another tenant's
 * root-owned program directory replaced it and ran as that tenant). Each must be owned by root or
 * the target user and not writable by group or others; a root-owned directory with the sticky bit
 * (/tmp) is accepted, since there only an entry's owner can rename it. Both the path as written
 * (its symlinks can be replaced) and its realpath are walked. Used for the program's directory
 * and, with handoff self, for a unix socket's directory (`what` names it in the message).
 */
export function checkAncestors (start: string, id: Pick<Identity, 'uid'>, what = 'the program', code = 'ERR_SUEXEC_DIR_WRITABLE', linkCode = 'ERR_SUEXEC_SYMLINK'): void {
  checkLinks(start, id, what, linkCode)
  const dirs = new Set<string>()
  for (const first of [start, realpathSync(start)]) {
    for (let d = first, up = dirname(d); up !== d; d = up, up = dirname(d)) dirs.add(up)
  }
  for (const dir of dirs) {
    const st = statSync(dir)
    if (st.uid === 0 && (st.mode & 0o1000) !== 0) continue
    if (st.uid !== 0 && st.uid !== id.uid) throw spawnError(code, `${dir}: directory above ${what} is owned by uid ${st.uid}, not ${id.uid} or root`)
    if ((st.mode & 0o022) !== 0) throw spawnError(code, `${dir}: directory above ${what} is writable by group or others`)
  }
}

/**
 * A symlink on the path as written (`start` itself or a directory above it) is only followed by
 * the checks above, but whoever owns it may re-point it where its directory lets them: in a
 * root-owned sticky directory, which checkAncestors accepts, exactly its owner (audit H8: another
 * tenant's link to the target user's real program directory passed every check, and re-pointed in
 * the window before exec it would run that tenant's code as the target user; fs.protected_symlinks
 * covers only world-writable sticky directories, and may be off). So each one must be owned by
 * root or the target user, as each directory must.
 */
function checkLinks (start: string, id: Pick<Identity, 'uid'>, what: string, code: string): void {
  for (let d = resolve(start); ; d = dirname(d)) {
    let st: Stats | null = null
    try { st = lstatSync(d) } catch { /* reported by the stat of the caller */ }
    if (st !== null && st.isSymbolicLink() && st.uid !== 0 && st.uid !== id.uid) {
      throw spawnError(code, `${d}: symlink on the way to ${what} is owned by uid ${st.uid}, not ${id.uid} or root (its owner can re-point it)`)
    }
    if (dirname(d) === d) return
  }
}

/**
 * handoff self: the program binds its unix socket itself, after the host removed a stale one.
 * Whoever else can create an entry in the socket's directory can bind the name first, and the proxy
 * then sends that user the site's requests; whoever can rename an entry of a directory above can
 * swap the directory. So the socket's own directory must be owned by root or the spawn's user and
 * not writable by group or others, sticky or not (in a sticky directory others can still create
 * the name; sticky only stops them removing it), and every directory above it gets the program's
 * ancestor rule (`checkAncestors`: a root-owned sticky one such as /tmp is fine there).
 * A precondition only: after the program is ready, the socket's owner is checked as well
 * (listen-socket.ts `verifySelfBoundSocket`).
 */
export function checkSocketDir (socketPath: string, owner: Pick<Identity, 'uid'>): void {
  const dir = dirname(resolve(socketPath))
  function unsafe (why: string): never { throw spawnError('ERR_SPAWN_SOCKET_DIR_UNSAFE', `${dir}: ${why}`) }
  let st: Stats
  try { st = statSync(dir) } catch (err) {
    unsafe(`cannot stat the socket's directory (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
  if (!st.isDirectory()) unsafe('the socket\'s directory is not a directory')
  if (st.uid !== 0 && st.uid !== owner.uid) unsafe(`the socket's directory is owned by uid ${st.uid}, not ${owner.uid} or root`)
  if ((st.mode & 0o022) !== 0) {
    const sticky = (st.mode & 0o1000) !== 0 ? ', sticky or not (others can still create the name there)' : ''
    unsafe(`the socket's directory is writable by group or others (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})${sticky}`)
  }
  checkAncestors(dir, owner, 'the socket', 'ERR_SPAWN_SOCKET_DIR_UNSAFE', 'ERR_SPAWN_SOCKET_DIR_UNSAFE')
}

/**
 * handoff self under another user: the program picks its socket's mode itself (php-cgi `-b` makes
 * it 0777), and whoever can connect to a FastCGI or SCGI backend runs code as its user (it runs any
 * SCRIPT_FILENAME it is sent). connect(2) needs search permission on every directory of the path,
 * so some directory on the socket's real path must deny search to others, and to its group unless
 * that is root's or the spawn's own. Checked, not mended: a chown or chmod by root of a path in a
 * directory the tenant writes would follow a symlink the tenant put there (listen-socket.ts sets
 * an fd0 socket's mode under a private name for that reason). ERR_SPAWN_SOCKET_DIR_UNSAFE.
 */
export function checkSocketDirPrivate (socketPath: string, owner: Pick<Identity, 'gid'>): void {
  const dir = dirname(resolve(socketPath))
  let real: string
  try { real = realpathSync(dir) } catch (err) {
    throw spawnError('ERR_SPAWN_SOCKET_DIR_UNSAFE', `${dir}: cannot resolve the socket's directory (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
  for (let d = real; ; d = dirname(d)) {
    const st = statSync(d)
    const groupShut = (st.mode & 0o010) === 0 || st.gid === 0 || st.gid === owner.gid
    if ((st.mode & 0o001) === 0 && groupShut) return
    if (dirname(d) === d) break
  }
  throw spawnError('ERR_SPAWN_SOCKET_DIR_UNSAFE', `${dir}: other users can reach a socket there (no directory on its path denies them search)`)
}

/**
 * `identity.allowedRoots` (suexec's docroot check): the real path of `path` (a program, a CGI
 * docroot) lies inside one of them, boundary-aware (unlike suexec's strncmp, AC-23). A root that
 * cannot be resolved (a typo, a tenant's directory not created yet) contains nothing: skipped,
 * never a raw ENOENT that would refuse every spawn without a code.
 */
export function checkInsideRoots (path: string, policy: IdentityPolicy): void {
  if (policy.allowedRoots === undefined) return
  const real = realpathSync(path)
  const missing: string[] = []
  const inside = policy.allowedRoots.some((root) => {
    let r: string
    try { r = realpathSync(root) } catch { missing.push(root); return false }
    return real === r || real.startsWith(r.endsWith(sep) ? r : r + sep)
  })
  if (!inside) {
    const note = missing.length > 0 ? ` (${missing.join(', ')}: does not exist)` : ''
    throw spawnError('ERR_SUEXEC_NOT_IN_ROOT', `${path}: not inside ${policy.allowedRoots.join(', ')}${note}`)
  }
}

/**
 * suexec runs checks 13-22 after setuid (check 12, "so that the following tests work over NFS"): a
 * program the target user cannot reach fails there ("cannot stat program", 117). Here they run as
 * root, who reaches everything, so each directory on the way (the path as written and its real
 * path) must grant the identity search, and the program execute (read, for a script run through
 * the spawn's interpreter), by the class the kernel picks: owner, else group, else other. Otherwise
 * exec fails with EACCES after every check passed: a 502 ERR_CGI_SPAWN instead of a refusal with
 * its reason (AC-27). `anyGroup`: the child keeps the user's supplementary groups (`groups: user`),
 * whose list is not at hand, so any group grant counts. Mode bits only: an ACL grant is not seen.
 */
export function checkReachable (program: string, id: Identity, opts: { interpreted?: boolean, anyGroup?: boolean } = {}): void {
  const may = (st: Stats, bit: number): boolean => {
    if (st.uid === id.uid) return (st.mode & (bit << 6)) !== 0
    if (st.gid === id.gid || (opts.anyGroup === true && (st.mode & (bit << 3)) !== 0)) return (st.mode & (bit << 3)) !== 0
    return (st.mode & bit) !== 0
  }
  const dirs = new Set<string>()
  for (const first of [program, realpathSync(program)]) {
    for (let d = first, up = dirname(d); up !== d; d = up, up = dirname(d)) dirs.add(up)
  }
  for (const dir of [...dirs].sort((a, b) => a.length - b.length)) {
    if (!may(statSync(dir), 1)) throw spawnError('ERR_SUEXEC_NOT_FOUND', `${program}: uid ${id.uid} cannot search ${dir}, so the program cannot be stat'ed as the target user`)
  }
  const interpreted = opts.interpreted === true
  if (!may(statSync(program), interpreted ? 4 : 1)) throw spawnError('ERR_SUEXEC_NOT_FOUND', `${program}: uid ${id.uid} may not ${interpreted ? 'read' : 'execute'} it`)
}

/** suexec checks 4 and 14-22 on the program a user-switched spawn execs. */
export function checkProgram (program: string, id: Identity, policy: IdentityPolicy, opts: { interpreted?: boolean } = {}): void {
  if (!isAbsolute(program)) throw spawnError('ERR_SUEXEC_RELATIVE_PATH', `${program}: user-switched programs need an absolute path`)
  if (program.split('/').includes('..')) throw spawnError('ERR_SUEXEC_DOTDOT', `${program}: '..' is not allowed`)
  let st: Stats
  try { st = lstatSync(program) } catch {
    throw spawnError('ERR_SUEXEC_NOT_FOUND', `${program}: cannot stat program`)
  }
  // suexec 117: the program itself must not be a symlink. A symlinked directory above it must be
  // owned by root or the target user (checkAncestors), and lie inside allowedRoots by its real path.
  if (st.isSymbolicLink()) throw spawnError('ERR_SUEXEC_SYMLINK', `${program}: program is a symlink`)
  checkInsideRoots(program, policy)
  const dir = statSync(dirname(program))
  if (!ownerOk(dir, id)) throw spawnError('ERR_SUEXEC_OWNER_MISMATCH', `${dirname(program)}: owned by ${dir.uid}:${dir.gid}, not ${id.uid}:${id.gid} or root`)
  if ((dir.mode & 0o022) !== 0) throw spawnError('ERR_SUEXEC_DIR_WRITABLE', `${dirname(program)}: directory writable by group or others`)
  checkAncestors(dirname(program), id)
  if (!ownerOk(st, id)) throw spawnError('ERR_SUEXEC_OWNER_MISMATCH', `${program}: owned by ${st.uid}:${st.gid}, not ${id.uid}:${id.gid} or root`)
  if ((st.mode & 0o022) !== 0) throw spawnError('ERR_SUEXEC_FILE_WRITABLE', `${program}: writable by group or others`)
  if ((st.mode & 0o6000) !== 0) throw spawnError('ERR_SUEXEC_SETID', `${program}: setuid or setgid`)
  // A script run through the spawn's interpreter (`perl -wT script.pl`) is read, not executed.
  if (opts.interpreted !== true && (st.mode & 0o100) === 0) throw spawnError('ERR_SUEXEC_NOT_EXECUTABLE', `${program}: no owner execute bit`)
}
