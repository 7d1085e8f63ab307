/**
 * A 206 with several ranges (RFC 9110 §14.6, `multipart/byteranges`), as nginx and Apache send it:
 * a random boundary per response, each part with the file's Content-Type and its Content-Range,
 * a Content-Length computed before the first byte, and the ranges read from the open file as the
 * client takes them (one chunk at a time, never the whole file in memory).
 */
import { randomBytes } from 'node:crypto'
import { read as readCallback } from 'node:fs'
import { Readable } from 'node:stream'
import { closeVerified } from '../../core/sendfile.js'
import type { ByteRange } from './ranges.js'

/**
 * More ranges than this (once overlapping and adjacent ones are merged) get the whole file, 200:
 * Apache's `MaxRanges` default since CVE-2011-3192 ("Apache Killer"); nginx has no limit unless
 * `max_ranges` is set.
 */
export const MAX_RANGES = 200

/** Bytes per read, as fs.ReadStream and FileBody (src/core/sendfile.ts). */
const CHUNK = 64 * 1024

interface Part { head: Buffer, start: number, end: number }

/** The head fields of the answer and its body, not started. */
export interface Multipart { contentType: string, length: number, body: MultipartBody }

/**
 * The multipart answer for `ranges` of the open regular file `fd` (closeVerified-able, now owned
 * by the body) of `size` bytes, whose parts carry `type` (the file's Content-Type).
 */
export function multipartByteranges (fd: number, name: string, size: number, type: string, ranges: readonly ByteRange[]): Multipart {
  // 32 hex digits: 128 random bits, a new one per response, so no file's bytes can be made to
  // hold the delimiter of the answer that carries them (RFC 2046 §5.1.1).
  const boundary = randomBytes(16).toString('hex')
  const parts: Part[] = ranges.map((r) => ({
    // nginx's layout: each delimiter starts with CRLF, the first one too (a preamble-free CRLF).
    head: Buffer.from(`\r\n--${boundary}\r\nContent-Type: ${type}\r\nContent-Range: bytes ${r.start}-${r.end}/${size}\r\n\r\n`, 'latin1'),
    start: r.start,
    end: r.end + 1,
  }))
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1')
  let length = tail.length
  for (const p of parts) length += p.head.length + (p.end - p.start)
  return { contentType: `multipart/byteranges; boundary=${boundary}`, length, body: new MultipartBody(fd, name, parts, tail) }
}

/**
 * The parts' heads and the file's bytes in turn, exactly the announced length: a file that shrinks
 * errors the stream (the connection is cut, never a short body), one that grows is read only up to
 * each range's end. Owns `fd` and closes it when it ends or is destroyed, once no read of it is in
 * flight (a descriptor closed under a read could be reused by another open first), as FileBody.
 */
export class MultipartBody extends Readable {
  private part = 0
  private headSent = false
  private pos: number
  private reading = false
  private closeAfterRead: (() => void) | null = null

  constructor (private readonly fd: number, private readonly name: string, private readonly parts: readonly Part[], private readonly tail: Buffer) {
    super({ highWaterMark: CHUNK })
    this.pos = parts[0]?.start ?? 0
  }

  override _read (): void {
    const p = this.parts[this.part]
    if (p === undefined) {
      this.push(this.tail)
      this.push(null)
      return
    }
    if (!this.headSent) {
      this.headSent = true
      this.push(p.head)
      return
    }
    const want = Math.min(CHUNK, p.end - this.pos)
    const buf = Buffer.allocUnsafe(want)
    this.reading = true
    readCallback(this.fd, buf, 0, want, this.pos, (err, bytesRead) => {
      this.reading = false
      const closing = this.closeAfterRead
      if (closing !== null) { closing(); return }
      if (this.destroyed) return
      if (err !== null) { this.destroy(err); return }
      if (bytesRead === 0) {
        this.destroy(new Error(`${this.name} shrank while sent: no byte at ${this.pos}`))
        return
      }
      this.pos += bytesRead
      if (this.pos === p.end) {
        this.part++
        this.headSent = false
        this.pos = this.parts[this.part]?.start ?? 0
      }
      this.push(bytesRead === want ? buf : buf.subarray(0, bytesRead))
    })
  }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    const finish = (): void => { const closeErr = closeVerified(this.fd); cb(err ?? closeErr) }
    if (this.reading) this.closeAfterRead = finish
    else finish()
  }
}
