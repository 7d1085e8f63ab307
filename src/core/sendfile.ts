/**
 * X-Sendfile (lighttpd `x-sendfile`, Apache mod_xsendfile): a backend answers with
 * `X-Sendfile: /abs/path` (or `X-LIGHTTPD-send-file`) and the proxy sends that file itself, so PHP
 * can do access checks without streaming large files through its workers.
 *
 * Only regular files under the route's allow-listed roots are served, checked on the real path
 * (boundary-aware: `/srv/files2` is not inside `/srv/files`), so a backend cannot make the proxy
 * read anything else (lighttpd `x-sendfile-docroot`). The check is made again on the opened
 * descriptor, because whoever can write inside a root can swap a name for a symlink between the
 * check and the open (openInsideRoots). The body is exactly the size announced in Content-Length,
 * whatever happens to the file while it is sent (FileBody).
 */
import { constants, type Stats } from 'node:fs'
import { open, readlink, realpath, stat, type FileHandle } from 'node:fs/promises'
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

/** Open the file a backend asked for, or fail with ERR_SENDFILE_FORBIDDEN / ERR_SCRIPT_NOT_FOUND. */
export async function openSendfile (path: string, roots: readonly string[], backendHeaders: RawHeaders, hooks: SendfileHooks = {}): Promise<OpenedFile> {
  if (!path.startsWith('/') || path.includes('\0')) throw forbidden(`not an absolute path: ${JSON.stringify(path)}`)
  let real: string
  try {
    real = await realpath(path)
  } catch {
    throw notFound(path)
  }
  if (!roots.some((root) => isInside(root, real))) throw forbidden(path)
  await hooks.afterCheck?.(real)
  const { fh, size } = await openInsideRoots(real, roots)
  const headers: string[] = []
  for (let i = 0; i < backendHeaders.length; i += 2) {
    const n = backendHeaders[i].toLowerCase()
    if (SENDFILE_HEADERS.has(n) || n === 'content-length' || n === 'content-encoding' || n === 'transfer-encoding') continue
    headers.push(backendHeaders[i], backendHeaders[i + 1])
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
    const stats = await verifyOpened(fh, real, roots)
    return { fh, size: stats.size, stats }
  } catch (err) {
    await fh.close()
    throw err
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

/** The stats of the opened file, or ERR_SENDFILE_FORBIDDEN when it is not the file that was checked. */
async function verifyOpened (fh: FileHandle, real: string, roots: readonly string[]): Promise<Stats> {
  const st = await fh.stat()
  // Before any read: a FIFO would block the read, a device may never end.
  if (!st.isFile()) throw forbidden(`not a regular file: ${real}`)
  const where = await descriptorPath(fh.fd)
  if (where !== null && !roots.some((root) => isInside(root, where))) throw forbidden(`resolved outside the allowed roots while opened: ${real}`)
  let now: Stats
  try {
    now = await stat(real)
  } catch {
    throw forbidden(`changed while opened: ${real}`)
  }
  if (now.dev !== st.dev || now.ino !== st.ino) throw forbidden(`changed while opened: ${real}`)
  return st
}

/**
 * Where the kernel says a descriptor points, or null where /proc is not mounted: then the dev/ino
 * comparison is the only check, which a directory swapped for a symlink and left so defeats.
 */
async function descriptorPath (fd: number): Promise<string | null> {
  try {
    return await readlink(`/proc/self/fd/${fd}`)
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

  constructor (private readonly fh: FileHandle, private readonly size: number, private readonly name: string, start = 0) {
    super({ highWaterMark: CHUNK })
    this.pos = start
  }

  override _read (): void {
    const want = Math.min(CHUNK, this.size - this.pos)
    const buf = Buffer.allocUnsafe(want)
    this.fh.read(buf, 0, want, this.pos).then(({ bytesRead }) => {
      if (this.destroyed) return
      if (bytesRead === 0) {
        this.destroy(new Error(`${this.name} shrank while sent: ${this.pos} of ${this.size} bytes`))
        return
      }
      this.pos += bytesRead
      this.push(bytesRead === want ? buf : buf.subarray(0, bytesRead))
      if (this.pos === this.size) this.push(null)
    }, (err: Error) => { this.destroy(err) })
  }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    // FileHandle.close waits for a read still in flight.
    this.fh.close().then(() => cb(err), (closeErr: Error) => cb(err ?? closeErr))
  }
}
