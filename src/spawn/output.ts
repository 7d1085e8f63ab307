/**
 * Child stdout/stderr capture: one size-rotated file per spawn plus 'stderr' events.
 *
 * The pipes are always read (flowing mode), so a chatty child never blocks on a full pipe; what
 * the disk cannot take fast enough is dropped and counted instead of queued, so a flood cannot
 * grow the host's memory without bound.
 */
import { createWriteStream, renameSync, rmSync, statSync, type WriteStream } from 'node:fs'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import type { LogOptions } from './types.js'

export const LOG_DEFAULTS = { maxSize: 10 * 1024 * 1024, keep: 3, maxBuffered: 1024 * 1024 } as const

function fileSize (file: string): number {
  try { return statSync(file).size } catch { return 0 }
}

export type OutputListener = (stream: 'stdout' | 'stderr', chunk: Buffer, pid: number) => void

export class OutputSink {
  /** Bytes dropped because the file writer was more than `maxBuffered` behind. */
  dropped = 0
  private readonly file: string | null
  private readonly maxSize: number
  private readonly keep: number
  private readonly maxBuffered: number
  private readonly listener: OutputListener
  private stream: WriteStream | null = null
  private size = 0
  private readonly closing = new Set<Promise<void>>()

  constructor (name: string, opts: LogOptions | undefined, listener: OutputListener) {
    this.file = opts?.dir === undefined ? null : join(opts.dir, `${name}.log`)
    this.maxSize = opts?.maxSize ?? LOG_DEFAULTS.maxSize
    this.keep = opts?.keep ?? LOG_DEFAULTS.keep
    this.maxBuffered = opts?.maxBuffered ?? LOG_DEFAULTS.maxBuffered
    this.listener = listener
  }

  /** Read a child's pipe until it ends. */
  attach (readable: Readable | null, stream: 'stdout' | 'stderr', pid: number): void {
    if (readable === null) return
    readable.on('data', (chunk: Buffer) => this.write(stream, chunk, pid))
    readable.on('error', () => { /* the child went away; its exit is reported elsewhere */ })
  }

  write (stream: 'stdout' | 'stderr', chunk: Buffer, pid: number): void {
    this.listener(stream, chunk, pid)
    if (this.file === null) return
    if (this.stream !== null && this.stream.writableLength > this.maxBuffered) {
      this.dropped += chunk.length
      return
    }
    if (this.stream !== null && this.size > 0 && this.size + chunk.length > this.maxSize) this.rotate()
    if (this.stream === null) {
      this.stream = createWriteStream(this.file, { flags: 'a' })
      this.stream.on('error', () => { /* disk trouble must not crash the host; output is best effort */ })
      this.size = fileSize(this.file)
    }
    this.stream.write(chunk)
    this.size += chunk.length
  }

  private rotate (): void {
    this.endStream()
    const file = this.file as string
    // Renaming under an open fd is safe on POSIX: the old writer keeps its inode.
    if (this.keep === 0) {
      rmSync(file, { force: true })
    } else {
      for (let i = this.keep - 1; i >= 1; i--) {
        try { renameSync(`${file}.${i}`, `${file}.${i + 1}`) } catch { /* not there yet */ }
      }
      try { renameSync(file, `${file}.1`) } catch { /* not there yet */ }
    }
  }

  private endStream (): void {
    const s = this.stream
    if (s === null) return
    this.stream = null
    const done = new Promise<void>((resolve) => { s.once('close', () => resolve()); s.end() })
    this.closing.add(done)
    void done.then(() => this.closing.delete(done))
  }

  /** Flush and close the file (no fd stays open after the manager closes). */
  async close (): Promise<void> {
    this.endStream()
    await Promise.all([...this.closing])
  }
}
