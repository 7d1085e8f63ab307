/**
 * Spooling a request body of unknown length (chunked) so CONTENT_LENGTH is known before the
 * backend sees a byte. RFC 3875 §4.2: "the server MUST remove any such codings from the
 * message-body, and recalculate the CONTENT_LENGTH"; SCGI puts CONTENT_LENGTH first in the
 * netstring (nginx buffers chunked bodies to SCGI for the same reason, RELIABILITY §2.12).
 *
 * Bodies up to `memoryBytes` stay in memory; bigger ones go to a temp file that is unlinked right
 * after it is created, so nothing is left on disk whatever happens; the fd is closed when
 * `cleanup()` runs (the exchange's end), not when a reader ends: the body may be read again. A
 * reader its consumer still needs after the exchange's end (`keepReading`) delays that close until
 * the reader is closed.
 *
 * A spooled body can be read more than once: `replayBody(body)` gives a fresh reader from its
 * first byte (a second reader of the same file, by position, or the same memory), so a request
 * whose backend refused it after reading the body (FastCGI's FCGI_OVERLOADED) can go whole to the
 * next backend, as nginx's `fastcgi_next_upstream` does with a buffered body. A client's stream is
 * never replayable.
 *
 * Over `maxBytes` → ERR_BODY_TOO_LARGE (413). The source stream is then left paused and unread:
 * the caller answers 413 and closes the connection (destroying an IncomingMessage would take the
 * socket, and the 413, with it). Abort (signal, or the source erroring/closing early) →
 * ERR_CLIENT_ABORTED. A full spool filesystem (ENOSPC, quota, or a write that cannot make progress)
 * → ERR_SPOOL_NO_SPACE (507): the body is never handed on short. No file descriptor left for the
 * temp file (EMFILE/ENFILE) → ERR_NO_DESCRIPTORS (503, Retry-After): the proxy is short, not broken.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { Readable } from 'node:stream'
import { ProxyError, isDescriptorShortage, noDescriptors } from './errors.js'

export interface SpoolOptions {
  /** Largest body accepted, bytes. */
  readonly maxBytes: number
  /** The setting `maxBytes` comes from, named in the 413's message (the operator raises it). */
  readonly limitName?: string
  /** Bodies up to this many bytes stay in memory. Default 64 KiB. */
  readonly memoryBytes?: number
  /** Directory for the temp file. Default `os.tmpdir()`. */
  readonly tmpDir?: string
  readonly signal?: AbortSignal
}

export interface SpooledBody {
  readonly length: number
  /** The body from its first byte; `replayBody(body)` gives another reader of it. */
  readonly body: Readable
  /** Release the temp file's fd and end every reader (idempotent; safe after the body was read). */
  cleanup (): Promise<void>
}

/** Makes a fresh reader of a spooled body, keyed by each reader handed out (`replayBody`). */
const REPLAY = new WeakMap<Readable, () => Readable>()
/** Marks a reader handed out as one cleanup() leaves running (`keepReading`). */
const KEEP = new WeakMap<Readable, () => boolean>()

/** Whether `body` is a spooled body that `replayBody` can give again from its first byte. */
export function isReplayable (body: Readable | null): boolean {
  return body !== null && REPLAY.has(body)
}

/**
 * A fresh reader of the spooled `body` from its first byte, or null when `body` is not one (a
 * client's stream is read once). The old reader is left as it is: the caller destroys it.
 */
export function replayBody (body: Readable | null): Readable | null {
  const make = body === null ? undefined : REPLAY.get(body)
  return make === undefined ? null : make()
}

/**
 * Let the spooled `body` (a reader handed out, not yet destroyed) outlive its exchange's cleanup():
 * cleanup() then leaves it running to its end and closes the temp file's fd once it is closed
 * (ended, or destroyed by its reader). For a consumer that goes on reading after the response is
 * over (a CGI script that answers first and reads its body after, src/protocols/cgi/exchange.ts);
 * that consumer must destroy the reader when it stops reading early, or the fd stays open. False
 * when `body` is not a spooled reader (a client's stream) or is gone already: nothing changes.
 */
export function keepReading (body: Readable | null): boolean {
  const keep = body === null ? undefined : KEEP.get(body)
  return keep === undefined ? false : keep()
}

/** How far each spooled temp-file reader has read its file (fileReader). */
const READ = new WeakMap<Readable, { pos: number }>()

/**
 * How many bytes the spooled `body` has read from its temp file so far, or 0 for any other stream
 * (a client's own, a spool held in memory). With the reader's own buffered bytes it says how much
 * its consumer took: the exchange's head deadline waits while a backend takes the body (exchange.ts
 * checkBodySent).
 */
export function spooledBytesRead (body: Readable): number {
  return READ.get(body)?.pos ?? 0
}

/** Bytes per read of the temp file: as fs.createReadStream's default. */
const FILE_READ_BYTES = 64 * 1024

/**
 * A reader of the first `length` bytes of `handle`, by position: readers of one file do not share
 * a file offset, and none of them closes the fd (cleanup() does). A file that ends short (it
 * cannot, unless something truncated it) fails the reader: a body is never handed on short.
 */
function fileReader (handle: FileHandle, length: number): Readable {
  const at = { pos: 0 }
  const r = new Readable({
    highWaterMark: FILE_READ_BYTES,
    read () {
      const n = Math.min(FILE_READ_BYTES, length - at.pos)
      if (n <= 0) { this.push(null); return }
      const buf = Buffer.allocUnsafe(n)
      handle.read(buf, 0, n, at.pos).then(({ bytesRead }) => {
        if (this.destroyed) return
        if (bytesRead === 0) { this.destroy(new ProxyError('ERR_INTERNAL', `spooled body file ended at ${at.pos} of ${length} bytes`, { phase: 'request' })); return }
        at.pos += bytesRead
        this.push(bytesRead < n ? buf.subarray(0, bytesRead) : buf)
      }, (err: unknown) => { if (!this.destroyed) this.destroy(toProxyError(err)) })
    },
  })
  READ.set(r, at)
  return r
}

export const DEFAULT_SPOOL_MEMORY = 64 * 1024

/** errnos that mean the spool directory's filesystem is full (blocks, inodes, quota, size limit). */
const NO_SPACE = new Set(['ENOSPC', 'EDQUOT', 'EFBIG'])

/**
 * Write all of `buf`: a write on a nearly full filesystem can succeed short without an error
 * (write(2) returns what fit), and only the next one fails with ENOSPC. A body must never be
 * spooled short, or the backend would read a truncated CONTENT_LENGTH's worth.
 */
async function writeAll (file: FileHandle, buf: Buffer): Promise<void> {
  let off = 0
  while (off < buf.length) {
    let n: number
    try {
      n = (await file.write(buf, off, buf.length - off)).bytesWritten
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? ''
      throw NO_SPACE.has(code) ? noSpace(code, err) : err
    }
    if (n <= 0) throw noSpace('a write of 0 bytes')
    off += n
  }
}

function noSpace (why: string, cause?: unknown): ProxyError {
  return new ProxyError('ERR_SPOOL_NO_SPACE', why, { phase: 'request', ...(cause !== undefined ? { cause } : {}) })
}

/** A temp file that exists on disk only between open and unlink, both inside this function. */
async function openAnonymousFile (dir: string): Promise<FileHandle> {
  const path = join(dir, `proxycore-spool-${randomUUID()}`)
  let handle: FileHandle
  try {
    handle = await open(path, 'wx+', 0o600)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? ''
    // No descriptor left (EMFILE/ENFILE): a shortage that passes, not a bug of the proxy.
    if (isDescriptorShortage(err)) throw noDescriptors('opening the body spool file', err as NodeJS.ErrnoException, 'request')
    throw NO_SPACE.has(code) ? noSpace(code, err) : err
  }
  try {
    await unlink(path)
  } catch (err) {
    await handle.close()
    throw err
  }
  return handle
}

/** Read `source` to its end and return it with a known length. */
export async function spoolBody (source: Readable, opts: SpoolOptions): Promise<SpooledBody> {
  const memoryBytes = Math.min(opts.memoryBytes ?? DEFAULT_SPOOL_MEMORY, opts.maxBytes)
  let chunks: Buffer[] = []
  let length = 0
  let file: FileHandle | null = null
  let writing: Promise<void> = Promise.resolve()

  // A second caller (cleanup() after the body's own 'close') waits for the close already running.
  let closing: Promise<void> = Promise.resolve()
  const closeFile = async (): Promise<void> => {
    const f = file
    if (f !== null) {
      file = null
      closing = f.close().catch(() => {})
    }
    await closing
  }

  try {
    await new Promise<void>((resolve, reject) => {
      const signal = opts.signal
      let stopped = false
      const stop = (err: ProxyError | null): void => {
        if (stopped) return
        stopped = true
        source.off('data', onData)
        source.off('end', onEnd)
        source.off('error', onError)
        source.off('close', onClose)
        signal?.removeEventListener('abort', onAbort)
        if (err !== null) {
          source.pause()
          reject(err)
        } else {
          resolve()
        }
      }
      const onAbort = (): void => stop(new ProxyError('ERR_CLIENT_ABORTED', 'aborted while spooling the body', { phase: 'request' }))
      const onError = (err: Error): void => stop(new ProxyError('ERR_CLIENT_ABORTED', 'request body stream failed', { phase: 'request', cause: err }))
      const onClose = (): void => { if (!source.readableEnded) onAbort() }
      const onEnd = (): void => { writing.then(() => stop(null), (err: unknown) => stop(toProxyError(err))) }
      const onData = (chunk: Buffer | string): void => {
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
        length += buf.length
        if (length > opts.maxBytes) {
          const name = opts.limitName !== undefined ? ` (${opts.limitName})` : ''
          stop(new ProxyError('ERR_BODY_TOO_LARGE', `over ${opts.maxBytes} bytes${name}`, { phase: 'request' }))
          return
        }
        if (file === null && length <= memoryBytes) {
          chunks.push(buf)
          return
        }
        // Disk: write in order, with the source paused while a write is outstanding (backpressure).
        source.pause()
        const pending = chunks.concat(buf)
        chunks = []
        writing = writing.then(async () => {
          file ??= await openAnonymousFile(opts.tmpDir ?? tmpdir())
          for (const c of pending) await writeAll(file, c)
        })
        writing.then(() => { if (!stopped && !source.destroyed) source.resume() }, (err: unknown) => stop(toProxyError(err)))
      }
      if (signal?.aborted === true) { onAbort(); return }
      signal?.addEventListener('abort', onAbort, { once: true })
      source.on('data', onData)
      source.once('end', onEnd)
      source.once('error', onError)
      source.once('close', onClose)
      source.resume()
    })
    await writing
  } catch (err) {
    await writing.catch(() => {})
    await closeFile()
    throw toProxyError(err)
  }

  // Every reader handed out, so cleanup() ends them all but the kept ones (keepReading), whose
  // close it awaits; each can make the next (replayBody).
  const readers = new Set<Readable>()
  const kept = new Set<Readable>()
  let keptGone: (() => void) | null = null
  let keptClosed: Promise<void> | null = null
  let cleaned = false
  const handle: FileHandle | null = file
  const whole = handle === null && length > 0 ? Buffer.concat(chunks) : null
  chunks = []
  const reader = (): Readable => {
    const r = handle !== null ? fileReader(handle, length) : Readable.from(whole === null ? [] : [whole])
    if (cleaned) {
      r.destroy()
      return r
    }
    readers.add(r)
    r.once('close', () => {
      readers.delete(r)
      if (kept.delete(r) && kept.size === 0) keptGone?.()
    })
    REPLAY.set(r, reader)
    KEEP.set(r, () => {
      if (r.destroyed || !readers.has(r)) return false
      kept.add(r)
      return true
    })
    return r
  }
  const body = reader()
  return {
    length,
    body,
    cleanup: async () => {
      cleaned = true
      for (const r of readers) if (!kept.has(r)) r.destroy()
      readers.clear()
      if (kept.size > 0) {
        keptClosed ??= new Promise<void>((resolve) => { keptGone = resolve })
        await keptClosed
      }
      // FileHandle.close() waits for a read still in flight: "cleaned up" means the fd is gone.
      await closeFile()
    }
  }
}

function toProxyError (err: unknown): ProxyError {
  if (err instanceof ProxyError) return err
  return new ProxyError('ERR_INTERNAL', `spooling the request body failed: ${(err as Error).message}`, { cause: err, phase: 'request' })
}
