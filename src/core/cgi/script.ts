/**
 * Script resolution for CGI-family routes: which file runs (SCRIPT_FILENAME), under which URL
 * (SCRIPT_NAME), and what is left over (PATH_INFO). RFC 3875 §4.1.5, §4.1.13, §9.8.
 *
 * The walk mirrors Apache and lighttpd: segment by segment from the docroot, the FIRST existing
 * regular file is the script and everything after it is PATH_INFO. It never walks back from a
 * longer path (that is PHP's `cgi.fix_pathinfo`, which runs `/upload.jpg/x.php` as
 * `upload.jpg`: RELIABILITY §2.2), and the file it finds must satisfy the route's rule
 * (extension), else 403.
 *
 * Errors (ProxyError): ERR_BAD_REQUEST 400 (bad encoding, NUL/CR/LF, backslash, `..`),
 * ERR_SCRIPT_NOT_FOUND 404, ERR_SCRIPT_FORBIDDEN 403 (rule mismatch, symlink policy,
 * escape from the docroot, not a regular file).
 */
import { lstat, readlink, realpath, stat } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import { basename, dirname, isAbsolute, join, relative, sep } from 'node:path'
import { ProxyError } from '../errors.js'
import type { ScriptInfo } from '../types.js'
import { decodePath, encodePath, normalizePrefix, pathInfoOf, stripPrefix } from './url-path.js'

/**
 * How symlinks met during the walk are treated (lighttpd `server.follow-symlink`, Apache
 * `FollowSymLinks` / `SymLinksIfOwnerMatch`). In every mode the final file must still lie inside
 * the docroot after realpath: a link may point anywhere *within* the docroot, never outside it.
 */
export type SymlinkPolicy = 'follow' | 'owner' | 'deny'

export interface ScriptRule {
  /** File-name suffixes the resolved script must end with, e.g. ['.php']. Absent = any file. */
  readonly extensions?: readonly string[]
  /** Index files tried, in order, when the path names a directory, e.g. ['index.php']. */
  readonly index?: readonly string[]
}

export interface ResolveScriptInput {
  /** Directory the URL path maps into (DOCUMENT_ROOT). Absolute. */
  readonly docroot: string
  /** Raw (percent-encoded) URL path, without the query. */
  readonly urlPath: string
  readonly rule: ScriptRule
  readonly symlinks: SymlinkPolicy
  /**
   * Alias-style mount: the URL prefix that maps to the docroot (`/cgi-bin` → `<docroot>`). It is
   * kept in SCRIPT_NAME. Default '' (the URL path maps onto the docroot as is).
   */
  readonly prefix?: string
  /**
   * Refuse a path with a segment that starts with a dot (but a leading `.well-known`) before the
   * file system is looked at: 404 ERR_STATIC_HIDDEN, the same answer whether the dot file exists,
   * is a directory with an index file (no 301 to `/.git/`) or not. For routes whose adapter serves
   * files itself (`capabilities.local`); CGI routes leave it off. Default false.
   */
  readonly hideDotSegments?: boolean
}

/** The one dot directory a `hideDotSegments` walk lets through (RFC 8615), and only first. */
const WELL_KNOWN = '.well-known'

/** A dot segment (`.git`, `.env`) but for a leading `.well-known` (nginx `location ~ /\.(?!well-known)`). */
export function hasDotSegment (rel: readonly string[]): boolean {
  return rel.some((seg, i) => seg.startsWith('.') && !(i === 0 && seg === WELL_KNOWN))
}

function notFound (detail: string): ProxyError {
  return new ProxyError('ERR_SCRIPT_NOT_FOUND', detail, { phase: 'route' })
}

function forbidden (detail: string): ProxyError {
  return new ProxyError('ERR_SCRIPT_FORBIDDEN', detail, { phase: 'route' })
}

/** lstat that maps "does not exist" (ENOENT, ENOTDIR, ENAMETOOLONG) to null. */
async function lstatOrNull (path: string): Promise<Stats | null> {
  try {
    return await lstat(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENAMETOOLONG') return null
    if (code === 'EACCES') throw forbidden('permission denied')
    throw err
  }
}

/**
 * `inner` lies strictly inside `root`, boundary-aware (`/srv/www2` is not inside `/srv/www`). Only a
 * whole `..` element leads out: `..hidden.sh` or `..notes.txt` is an ordinary name inside.
 */
export function isInside (root: string, inner: string): boolean {
  const rel = relative(root, inner)
  return rel !== '' && rel !== '..' && !rel.startsWith('..' + sep) && !isAbsolute(rel)
}

/** Links followed in a row before the walk gives up (the kernel's own limit, MAXSYMLINKS). */
const MAX_LINK_HOPS = 40

/**
 * realpath(3) in user space, for the owner rule: the same answer (or the same failure), and the
 * owner of every link met at a place inside the docroot is pushed to `owners`. realpath follows a
 * link in a target's directory part (`x → dB/t.php`) unseen, which let another user's link take
 * part in a chain (audit G). A link outside the docroot (the docroot's own path, `/var` → ...) is
 * not the site's: where the hop ends is what the docroot bound judges.
 */
async function realpathOwners (path: string, realRoot: string, owners: number[]): Promise<string> {
  const todo = path.split('/').reverse()
  let cur = '/'
  let links = 0
  while (todo.length > 0) {
    const part = todo.pop() as string
    if (part === '' || part === '.') continue
    if (part === '..') { cur = dirname(cur); continue }
    const next = join(cur, part)
    const st = await lstat(next)
    if (!st.isSymbolicLink()) {
      if (todo.length > 0 && !st.isDirectory()) throw Object.assign(new Error(`not a directory: ${next}`), { code: 'ENOTDIR' })
      cur = next
      continue
    }
    if (++links > MAX_LINK_HOPS) throw Object.assign(new Error(`too many levels of symlinks: ${next}`), { code: 'ELOOP' })
    if (isInside(realRoot, next)) owners.push(st.uid)
    const target = await readlink(next)
    if (isAbsolute(target)) cur = '/'
    todo.push(...target.split('/').reverse())
  }
  return cur
}

/**
 * Where a link leads, followed one hop at a time without ever looking up a name outside the
 * docroot: each hop's directory must resolve inside it (or be it), else 403 whatever lies there.
 * proxycore resolves as root, so a `stat` of the target would let a site user's link into another
 * site's 0700 tree tell which names exist there (403 for one that does, 404 for one that does
 * not); nginx and Apache, unprivileged, answer both alike. A relative target is taken from the
 * link's real directory and left unnormalised, so `..` is resolved by the kernel, as an open
 * would. A hop whose target is the docroot itself (`self → ../www`, or its absolute path) is taken:
 * it names nothing outside. `owners` gets the owner of every further link of the chain (the first
 * is the caller's) and of every link in a hop's directory part, for the owner rule (null: not
 * wanted, realpath(3) itself finds the directory). null: the link dangles inside the docroot.
 */
async function linkTarget (path: string, realRoot: string, owners: number[] | null): Promise<string | null> {
  const within = (p: string): boolean => p === realRoot || isInside(realRoot, p)
  let cur = path
  for (let hop = 0; hop < MAX_LINK_HOPS; hop++) {
    let target: string
    try {
      target = await readlink(cur)
    } catch {
      return null // replaced since its lstat: no longer a link here
    }
    let next: string
    try {
      next = isAbsolute(target) ? target : (await realpath(dirname(cur))).replace(/\/$/, '') + sep + target
    } catch {
      return null
    }
    const name = basename(next)
    let dir: string
    try {
      // A target ending in `.` or `..` names a directory by its parent: resolve it whole.
      const whole = name === '.' || name === '..' ? next : dirname(next)
      dir = owners === null ? await realpath(whole) : await realpathOwners(whole, realRoot, owners)
    } catch {
      throw forbidden('symlink leads outside the docroot') // cannot tell where without looking there
    }
    cur = name === '.' || name === '..' ? dir : join(dir, name)
    // The docroot is a real path: a link that names it (its parent, then its own name) leads in.
    if (cur === realRoot) return cur
    if (!within(dir)) throw forbidden('symlink leads outside the docroot')
    const st = await lstatOrNull(cur)
    if (st === null) return null
    if (!st.isSymbolicLink()) return cur
    owners?.push(st.uid)
  }
  throw forbidden('too many levels of symlinks')
}

/**
 * Apply the symlink policy to one path element and return what it points at (the link target's
 * stats, or the element's own stats when it is not a link). null when a link dangles inside the
 * docroot; a link leading outside is refused before anything there is looked at (linkTarget).
 * Under `owner`, every link of a chain (a → b → file) must have the final target's owner.
 */
async function followPolicy (path: string, st: Stats, policy: SymlinkPolicy, realRoot: string): Promise<Stats | null> {
  if (!st.isSymbolicLink()) return st
  if (policy === 'deny') throw forbidden('symlink in script path')
  const owners = policy === 'owner' ? [st.uid] : null
  const real = await linkTarget(path, realRoot, owners)
  if (real === null) return null
  let target: Stats
  try {
    target = await stat(real)
  } catch {
    return null
  }
  // SymLinksIfOwnerMatch: the link and its target must belong to the same user, and so must every
  // link of a chain (Apache compares the first only): a link another user owns, and may re-point,
  // takes no part in what a site's link resolves to.
  if (owners !== null && owners.some((uid) => uid !== target.uid)) throw forbidden('symlink owner does not match its target')
  return target
}

/** Trailing dots or spaces name another file on some filesystems: never a script (AC-52). */
function suspiciousName (seg: string): boolean {
  return /[. ]$/.test(seg)
}

/** Resolve a URL path under a docroot to the script that serves it. */
export async function resolveScript (input: ResolveScriptInput): Promise<ScriptInfo> {
  if (!isAbsolute(input.docroot)) throw new ProxyError('ERR_INTERNAL', 'docroot must be absolute')
  const prefix = normalizePrefix(input.prefix ?? '')
  const { segments, trailingSlash } = decodePath(input.urlPath)
  const rel = stripPrefix(segments, prefix)
  if (rel === null) throw notFound('path outside the route prefix')
  if (input.hideDotSegments === true && hasDotSegment(rel)) throw new ProxyError('ERR_STATIC_HIDDEN', 'a dot segment in the path', { phase: 'route' })

  let realRoot: string
  try {
    realRoot = await realpath(input.docroot)
  } catch {
    throw notFound('docroot does not exist')
  }

  let dir = input.docroot
  for (let i = 0; i <= rel.length; i++) {
    if (i === rel.length) {
      // The whole path is a directory: try the index files (lighttpd `index-file.names`).
      return await resolveIndex(input, realRoot, dir, prefix, rel)
    }
    const seg = rel[i]
    if (suspiciousName(seg)) throw notFound('trailing dot or space in path segment')
    const path = join(dir, seg)
    const own = await lstatOrNull(path)
    if (own === null) throw notFound('no such file')
    const st = await followPolicy(path, own, input.symlinks, realRoot)
    if (st === null) throw notFound('dangling symlink')
    if (st.isDirectory()) {
      dir = path
      continue
    }
    if (!st.isFile()) throw forbidden('not a regular file')
    return await finish(input, realRoot, path, prefix, rel.slice(0, i + 1), pathInfoOf(rel.slice(i + 1), trailingSlash))
  }
  throw notFound('no such file')
}

/**
 * Thrown, not a ProxyError, when the path names a directory that has an index file but lacks the
 * trailing slash (`/dir`): the client is sent to `/dir/` (301; Apache mod_dir `DirectorySlash`,
 * lighttpd and nginx do the same), else the index's relative links would resolve against the
 * parent. `location` is an absolute path built from the decoded, normalised segments, never from
 * the raw target, so it cannot become `//host` (an open redirect); the caller appends the query.
 */
export class DirectoryRedirect extends Error {
  constructor (readonly location: string) {
    super(`directory without its trailing slash: redirect to ${location}`)
    this.name = 'DirectoryRedirect'
  }
}

async function resolveIndex (input: ResolveScriptInput, realRoot: string, dir: string, prefix: string, rel: string[]): Promise<ScriptInfo> {
  for (const name of input.rule.index ?? []) {
    const path = join(dir, name)
    const own = await lstatOrNull(path)
    if (own === null) continue
    const st = await followPolicy(path, own, input.symlinks, realRoot)
    if (st === null || !st.isFile()) continue
    const script = await finish(input, realRoot, path, prefix, [...rel, name], '')
    // Only once the index passed every check: the redirect never points at what would be refused.
    const segs = [...prefix.split('/').filter((s) => s !== ''), ...rel]
    if (segs.length > 0 && !input.urlPath.endsWith('/')) throw new DirectoryRedirect(encodePath('/' + segs.join('/')) + '/')
    return script
  }
  throw notFound('directory without an index file')
}

async function finish (input: ResolveScriptInput, realRoot: string, filename: string, prefix: string, scriptSegs: string[], pathInfo: string): Promise<ScriptInfo> {
  const base = scriptSegs[scriptSegs.length - 1]
  const exts = input.rule.extensions
  // RELIABILITY §2.2: the file found must be one this route may execute.
  if (exts !== undefined && !exts.some((ext) => base.length > ext.length && base.endsWith(ext))) {
    throw forbidden(`script does not match the route's extensions (${exts.join(', ')})`)
  }
  let real: string
  try {
    real = await realpath(filename)
  } catch {
    throw notFound('script vanished during resolution')
  }
  // CVE-2021-41773 class: whatever the links say, the file stays inside the docroot.
  if (!isInside(realRoot, real)) throw forbidden('script resolves outside the docroot')
  return {
    filename,
    name: prefix + '/' + scriptSegs.join('/'),
    pathInfo,
    docroot: input.docroot,
    symlinks: input.symlinks
  }
}

export interface FixedScriptInput {
  /** The one program every request under the prefix runs (a WSGI app, a CGI binary, index.php). */
  readonly scriptFilename: string
  /** The route prefix the app is mounted at: SCRIPT_NAME (`/` or '' → '', lighttpd fix-root-scriptname). */
  readonly prefix: string
  /** Raw (percent-encoded) URL path, without the query. */
  readonly urlPath: string
  /** DOCUMENT_ROOT; '' (default) for single-entry-point apps. */
  readonly docroot?: string
}

/**
 * Single-entry-point apps: SCRIPT_NAME is the matched prefix, PATH_INFO the decoded rest
 * (same decoding rules as `resolveScript`). Throws ERR_SCRIPT_NOT_FOUND outside the prefix.
 */
export function fixedScript (input: FixedScriptInput): ScriptInfo {
  const prefix = normalizePrefix(input.prefix)
  const { segments, trailingSlash } = decodePath(input.urlPath)
  const rest = stripPrefix(segments, prefix)
  if (rest === null) throw notFound('path outside the route prefix')
  return {
    filename: input.scriptFilename,
    name: prefix,
    pathInfo: pathInfoOf(rest, trailingSlash || input.urlPath.endsWith('/')),
    docroot: input.docroot ?? ''
  }
}
