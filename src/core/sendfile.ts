/**
 * X-Sendfile (lighttpd `x-sendfile`, Apache mod_xsendfile): a backend answers with
 * `X-Sendfile: /abs/path` (or `X-LIGHTTPD-send-file`) and the proxy sends that file itself, so PHP
 * can do access checks without streaming large files through its workers.
 *
 * Only regular files under the route's allow-listed roots are served, checked on the real path
 * (boundary-aware: `/srv/files2` is not inside `/srv/files`), so a backend cannot make the proxy
 * read anything else (lighttpd `x-sendfile-docroot`). The check is made again on the opened
 * descriptor, because whoever can write inside a root can swap a name for a symlink between the
 * check and the open (openInsideRoots). The file must be one the owner of its allowed root could
 * read itself (readableByOwner, the static adapter's docroot rule): a hard link is no symlink, its
 * real path is inside the root, and a proxy running as root opens anything (ownerRefusal). The body
 * is exactly the size announced in Content-Length, whatever happens to the file while it is sent
 * (FileBody).
 */
import { close, closeSync, constants, fstatSync, open as openCallback, read as readCallback, readlinkSync, statSync, type Stats } from 'node:fs'
import { open, realpath, type FileHandle } from 'node:fs/promises'
import { validateHeaderName, validateHeaderValue } from 'node:http'
import { Readable } from 'node:stream'
import { isInside } from './cgi/script.js'
import { ProxyError } from './errors.js'
import type { RawHeaders } from './types.js'

const SENDFILE_HEADERS = new Set(['x-sendfile', 'x-lighttpd-send-file'])

/**
 * O_NOFOLLOW: a last path element swapped for a symlink after the root check fails (ELOOP) instead
 * of being followed. O_NONBLOCK: opening a FIFO or a device must not park a libuv threadpool thread
 * until a writer shows up (four of them stalled every file operation of the proxy); for the regular
 * files we serve it changes nothing.
 */
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK

/** Bytes per read, as fs.ReadStream. */
const CHUNK = 64 * 1024

/** The X-Sendfile path of a response head, or null. */
export function sendfilePath (headers: RawHeaders): string | null {
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]
    if ((n.length === 10 || n.length === 20) && SENDFILE_HEADERS.has(n.toLowerCase())) return headers[i + 1].trim()
  }
  return null
}

export interface OpenedFile {
  /** Exactly `size` bytes, or an error (never a short 'end'). */
  stream: Readable
  size: number
  /** Response headers: the backend's, minus X-Sendfile and its own length/encoding. */
  headers: RawHeaders
}

/** Test seam: `afterCheck` runs between the root check of the real path and its open. */
export interface SendfileHooks {
  afterCheck?: (real: string) => void | Promise<void>
}

function forbidden (detail: string): ProxyError {
  return new ProxyError('ERR_SENDFILE_FORBIDDEN', detail, { phase: 'head' })
}

function notFound (path: string): ProxyError {
  return new ProxyError('ERR_SCRIPT_NOT_FOUND', `X-Sendfile ${path}`, { phase: 'head' })
}

/**
 * EACCES/EPERM: the proxy's own user may not reach or open the file (a proxy that does not run as
 * root, a file or directory of another user). The backend asked for a file it cannot have: a
 * refusal (502) that says so, not an internal error (500, "report a bug"), nor a 404 for a file
 * that may well exist. Null for any other error.
 */
function deniedToProxy (err: unknown, path: string): ProxyError | null {
  const code = (err as NodeJS.ErrnoException | null)?.code
  return code === 'EACCES' || code === 'EPERM' ? forbidden(`permission denied to the proxy's user (${code}): ${path}`) : null
}

/** Open the file a backend asked for, or fail with ERR_SENDFILE_FORBIDDEN / ERR_SCRIPT_NOT_FOUND. */
export async function openSendfile (path: string, roots: readonly string[], backendHeaders: RawHeaders, hooks: SendfileHooks = {}): Promise<OpenedFile> {
  if (!path.startsWith('/') || path.includes('\0')) throw forbidden(`not an absolute path: ${JSON.stringify(path)}`)
  const headers = fileHeaders(backendHeaders)
  let real: string
  try {
    real = await realpath(path)
  } catch (err) {
    throw deniedToProxy(err, path) ?? notFound(path)
  }
  if (!roots.some((root) => isInside(root, real))) throw forbidden(path)
  await hooks.afterCheck?.(real)
  let opened: Awaited<ReturnType<typeof openInsideRoots>>
  try {
    opened = await openInsideRoots(real, roots)
  } catch (err) {
    throw deniedToProxy(err, real) ?? err
  }
  const { fh, size, stats } = opened
  // On the descriptor's own stats: what is sent is what was checked.
  const refusal = ownerRefusal(real, roots, stats)
  if (refusal !== null) {
    await fh.close()
    throw forbidden(refusal)
  }
  let range: { start: number, end: number } | null
  try {
    range = backendRange(backendHeaders, size, real)
  } catch (err) {
    await fh.close()
    throw err
  }
  if (range !== null) {
    headers.push('Content-Length', String(range.end - range.start))
    return { stream: new FileBody(fh, range.end, real, range.start), size: range.end - range.start, headers }
  }
  headers.push('Content-Length', String(size))
  if (size === 0) {
    // Nothing to read: no descriptor is kept for an empty body.
    await fh.close()
    return { stream: Readable.from([]), size, headers }
  }
  // The descriptor is handed to the stream, which closes it (also on destroy).
  return { stream: new FileBody(fh, size, real), size, headers }
}

/**
 * The byte range a backend's `Content-Range: bytes FIRST-LAST/LENGTH` names in the file (LENGTH the
 * file's size, or `*`), or null when it sends none. A backend that does ranges itself (a PHP
 * download script answering a resumed download with 206 and `Content-Range: bytes 4-9/10`) got the
 * whole file under that Content-Range and a Content-Length of the whole file: the client wrote
 * bytes 0-9 where 4-9 belong, a silently corrupt download. Now exactly the named bytes are sent; a
 * range the file cannot fill, or a form this does not read (`bytes *\/10`, several ranges), is
 * refused with 502 ERR_BAD_RESPONSE_HEADER rather than sent under a wrong Content-Range.
 */
function backendRange (backendHeaders: RawHeaders, size: number, real: string): { start: number, end: number } | null {
  let value: string | null = null
  for (let i = 0; i < backendHeaders.length; i += 2) {
    if (backendHeaders[i].length !== 13 || backendHeaders[i].toLowerCase() !== 'content-range') continue
    if (value !== null) throw badRange('more than one Content-Range', real)
    value = backendHeaders[i + 1]
  }
  if (value === null) return null
  const m = /^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15}|\*)$/.exec(value.trim())
  if (m === null) throw badRange(`Content-Range ${JSON.stringify(value)} names no byte range of the file`, real)
  const first = Number(m[1])
  const last = Number(m[2])
  if (first > last || last >= size || (m[3] !== '*' && Number(m[3]) !== size)) {
    throw badRange(`Content-Range ${JSON.stringify(value)} does not fit the file's ${size} bytes`, real)
  }
  return { start: first, end: last + 1 }
}

function badRange (detail: string, real: string): ProxyError {
  return new ProxyError('ERR_BAD_RESPONSE_HEADER', `X-Sendfile ${real}: ${detail}`, { phase: 'head' })
}

/**
 * The file response's fields: the backend's, minus X-Sendfile and its own framing. Checked here as
 * node:http's writeHead will check them: the caller writes the head once the file is open, outside
 * the guard of the ordinary response path, and a field node refuses (a custom adapter's control
 * character) threw there, in a promise callback: an unhandled rejection that ended the proxy, with
 * the file's descriptor left open. Refused before the file is looked at: 502
 * ERR_BAD_RESPONSE_HEADER, as for any response.
 */
function fileHeaders (backendHeaders: RawHeaders): string[] {
  const headers: string[] = []
  for (let i = 0; i < backendHeaders.length; i += 2) {
    const name = backendHeaders[i]
    const n = name.toLowerCase()
    if (SENDFILE_HEADERS.has(n) || n === 'content-length' || n === 'content-encoding' || n === 'transfer-encoding') continue
    try {
      validateHeaderName(name)
      validateHeaderValue(name, backendHeaders[i + 1])
    } catch (err) {
      throw new ProxyError('ERR_BAD_RESPONSE_HEADER', (err as Error).message, { phase: 'head', cause: err })
    }
    headers.push(name, backendHeaders[i + 1])
  }
  return headers
}

/**
 * Could the owner of a directory read this file itself (POSIX permission bits: the owner's, else the
 * group's when the file has the directory's group, else the others')? The proxy may run as root and
 * read anything; a site owner must not make it hand out what the site owner could not read: a hard
 * link to /etc/shadow or to another site's private file (no symlink rule sees a hard link), a
 * mode-000 file. A directory owned by root speaks for no site: everything is readable. ACLs and the
 * owner's other groups are not looked at (a group-readable file of another group is refused). The
 * static adapter's docroot rule and X-Sendfile's allowed-root rule (ownerRefusal).
 */
export function readableByOwner (root: Stats, st: Stats): boolean {
  if (root.uid === 0) return true
  if (st.uid === root.uid) return (st.mode & 0o400) !== 0
  if (st.gid === root.gid) return (st.mode & 0o040) !== 0
  return (st.mode & 0o004) !== 0
}

/**
 * Why the opened file `st` (named `real`) may not be sent, or null: every allowed root `real` lies
 * in must be owned by root or let its owner read the file (readableByOwner). Every one, not the
 * first: with `/srv` (root's) and `/srv/site` (the site's) both allowed, a file under `/srv/site`
 * still needs the site owner's read access. A file with r-- for owner, group and others (0644, the
 * usual download) is readable by any owner: no stat(2) of a root then. Otherwise one stat(2) per
 * root the file lies in (usually one), synchronous for the reasons of verifyOpened: a directory's
 * inode the realpath(3) of the file just walked through. Taken now, never cached: a root given
 * to another owner, or replaced, is judged as it is now.
 */
function ownerRefusal (real: string, roots: readonly string[], st: Stats): string | null {
  if ((st.mode & 0o444) === 0o444) return null
  for (const root of roots) {
    if (!isInside(root, real)) continue
    let rootStats: Stats | undefined
    try {
      rootStats = statSync(root, { throwIfNoEntry: false })
    } catch {
      rootStats = undefined
    }
    if (rootStats === undefined) return `allowed root ${root} cannot be read: ${real}`
    if (!readableByOwner(rootStats, st)) return `not readable by the owner of its allowed root ${root}: ${real}`
  }
  return null
}

/**
 * Open `real` (a real path the caller found inside `roots`) and prove the descriptor is that file:
 * a regular file, still inside a root, with the dev/ino the name has now. Between the caller's
 * check and this open, a writer inside the root may have swapped the last element for a symlink
 * (O_NOFOLLOW refuses it) or a directory on the way for a symlink leading out (only the
 * descriptor's own path, /proc/self/fd/N, shows that). Returns the open handle and its size; the
 * caller owns the handle.
 */
export async function openInsideRoots (real: string, roots: readonly string[]): Promise<{ fh: FileHandle, size: number, stats: Stats }> {
  let fh: FileHandle
  try {
    fh = await open(real, OPEN_FLAGS)
  } catch (err) {
    throw openError(err, real)
  }
  try {
    const stats = verifyOpened(fh.fd, real, roots)
    return { fh, size: stats.size, stats }
  } catch (err) {
    await fh.close()
    throw err
  }
}

/**
 * openInsideRoots on a bare descriptor (the static adapter): the same open, the same checks, but
 * the caller gets the fd number and closes it itself, synchronously (closeVerified) once it is
 * done: a FileHandle can only be closed through the thread pool, one more round trip per request.
 * On a refusal the descriptor is closed here.
 */
export function openFdInsideRoots (real: string, roots: readonly string[]): Promise<{ fd: number, stats: Stats }> {
  return new Promise((resolve, reject) => {
    openCallback(real, OPEN_FLAGS, (err, fd) => {
      if (err !== null) { reject(openError(err, real)); return }
      let stats: Stats
      try {
        stats = verifyOpened(fd, real, roots)
      } catch (checkErr) {
        // Not known to be a regular file (a device's close may wait on its driver): closed off the
        // main thread.
        close(fd, () => {})
        reject(checkErr)
        return
      }
      resolve({ fd, stats })
    })
  })
}

/**
 * Close a descriptor openFdInsideRoots returned. Synchronously: verifyOpened proved it a regular
 * file opened read-only, whose close(2) writes nothing back and waits on no device (a local file
 * system; the core's script cache already makes synchronous stat(2) and realpath(3) calls on the same
 * paths, src/core/route.ts, so a docroot on a file system whose metadata calls block is slow
 * there first). Errors are returned, not thrown.
 */
export function closeVerified (fd: number): Error | null {
  try {
    closeSync(fd)
    return null
  } catch (err) {
    return err as Error
  }
}

function openError (err: unknown, real: string): unknown {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOENT' || code === 'ENOTDIR') return notFound(real)
  // ELOOP: the name became a symlink after the check (O_NOFOLLOW). ENXIO: a socket, or a device
  // without its driver: not a regular file either way.
  if (code === 'ELOOP') return forbidden(`became a symlink while opened: ${real}`)
  if (code === 'ENXIO') return forbidden(`not a regular file: ${real}`)
  return err
}

/**
 * The stats of the opened file, or ERR_SENDFILE_FORBIDDEN when it is not the file that was checked.
 *
 * Synchronous, on the main thread, once the (asynchronous) open has returned: all three checks
 * are made, in the same order, on the same descriptor and name as before; only where they run
 * changed. Each was a thread-pool round trip (the profile put the three at 40–50 µs of CPU per
 * request, far more than the system calls), and none of them waits on a disk: fstat(2) of an
 * open descriptor reads its in-memory inode, readlink(2) of /proc/self/fd/N asks the kernel's own
 * table, stat(2) of the name walks dentries the open just brought into the cache (a few µs each
 * on a local file system; see closeVerified for that assumption). Run synchronously, no other
 * round trip sits between the open's return and the last check: the window only got shorter.
 *
 * What each proves: fstat, that the descriptor holds a regular file (before any read); the
 * descriptor's path, that the file was reached inside a root (a directory on the way swapped for
 * a symlink leading out shows there and nowhere else); the stat of the name, that the checked
 * name still denotes the opened inode. Where /proc is mounted the name check adds no proof of
 * containment (renaming the opened file after the open needs write access to its directory, and
 * a rename onto `real` passes both checks alike), but it is kept everywhere: a stat(2) now, and
 * one more independent check a swap would have to defeat (the only one without /proc).
 */
function verifyOpened (fd: number, real: string, roots: readonly string[]): Stats {
  const st = fstatSync(fd)
  // Before any read: a FIFO would block the read, a device may never end.
  if (!st.isFile()) throw forbidden(`not a regular file: ${real}`)
  const where = descriptorPath(fd)
  if (where !== null && !roots.some((root) => isInside(root, where))) throw forbidden(`resolved outside the allowed roots while opened: ${real}`)
  let now: Stats | undefined
  try {
    now = statSync(real, { throwIfNoEntry: false })
  } catch {
    now = undefined
  }
  if (now === undefined || now.dev !== st.dev || now.ino !== st.ino) throw forbidden(`changed while opened: ${real}`)
  return st
}

/**
 * Where the kernel says a descriptor points, or null where /proc is not mounted: then the dev/ino
 * comparison is the only check, which a directory swapped for a symlink and left so defeats.
 */
function descriptorPath (fd: number): string | null {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`)
  } catch {
    return null
  }
}

/**
 * The body of a sent file: bytes [start, size) and not one more, though the file may grow while it
 * is sent (extra bytes would be read by the client as the next response on a kept-alive
 * connection). A file that shrank cannot fill the announced Content-Length: the stream errors
 * instead of ending, so the exchange cuts the connection rather than keeping it alive after a
 * short body. `size` is the end offset (exclusive); `start` (default 0) serves a byte range. The
 * stream owns the handle and closes it when it ends or is destroyed.
 */
export class FileBody extends Readable {
  private pos: number
  /** A bare descriptor: a read is in the thread pool (the descriptor must not be closed under it). */
  private reading = false
  private closeAfterRead: (() => void) | null = null

  /**
   * `file`: a FileHandle (closed through the thread pool), or a descriptor from openFdInsideRoots
   * (closed synchronously by closeVerified, once no read of it is in flight).
   */
  constructor (private readonly file: FileHandle | number, private readonly size: number, private readonly name: string, start = 0) {
    super({ highWaterMark: CHUNK })
    this.pos = start
  }

  override _read (): void {
    const want = Math.min(CHUNK, this.size - this.pos)
    const buf = Buffer.allocUnsafe(want)
    const file = this.file
    if (typeof file === 'number') {
      this.reading = true
      readCallback(file, buf, 0, want, this.pos, (err, bytesRead) => {
        this.reading = false
        const closing = this.closeAfterRead
        if (closing !== null) { closing(); return }
        if (err !== null) { this.destroy(err); return }
        this.got(buf, want, bytesRead)
      })
      return
    }
    file.read(buf, 0, want, this.pos).then(({ bytesRead }) => { this.got(buf, want, bytesRead) }, (err: Error) => { this.destroy(err) })
  }

  private got (buf: Buffer, want: number, bytesRead: number): void {
    if (this.destroyed) return
    if (bytesRead === 0) {
      this.destroy(new Error(`${this.name} shrank while sent: ${this.pos} of ${this.size} bytes`))
      return
    }
    this.pos += bytesRead
    this.push(bytesRead === want ? buf : buf.subarray(0, bytesRead))
    if (this.pos === this.size) this.push(null)
  }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    const file = this.file
    if (typeof file === 'number') {
      // A descriptor closed while a read of it runs could be reused by another open before the
      // read does: that read would go to someone else's file. Closed once the read is back.
      const finish = (): void => { const closeErr = closeVerified(file); cb(err ?? closeErr) }
      if (this.reading) this.closeAfterRead = finish
      else finish()
      return
    }
    // FileHandle.close waits for a read still in flight.
    file.close().then(() => cb(err), (closeErr: Error) => cb(err ?? closeErr))
  }
}
