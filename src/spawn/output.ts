/**
 * Child stdout/stderr capture: one size-rotated file per spawn plus 'stderr' events.
 *
 * The pipes are always read (flowing mode), so a chatty child never blocks on a full pipe; what
 * the disk cannot take fast enough is dropped and counted instead of queued, so a flood cannot
 * grow the host's memory without bound.
 *
 * The processes of a spawn share its file, chunk by chunk. A UTF-8 character a pipe read cut in
 * two is held (per process and stream, at most 3 bytes) until that stream's next chunk, so another
 * process's output never lands between its halves; when the pipe ends first, the held bytes are
 * written as they are (the file has every byte the program wrote) and the end is reported, so the
 * log without a file (`logOutput`) can flush its decoder too.
 */
import { closeSync, constants, createWriteStream, fstatSync, mkdirSync, openSync, renameSync, rmSync, type WriteStream } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Readable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import { Utf8Carry } from '../utf8.js'
import type { LogOptions, SpawnEvents } from './types.js'

export const LOG_DEFAULTS = { maxSize: 10 * 1024 * 1024, keep: 3, maxBuffered: 1024 * 1024 } as const

/** After the log file failed (directory gone, disk full), output is dropped this long before it is opened again. */
const REOPEN_AFTER_MS = 1000

/**
 * The log file is opened without following a symlink (O_NOFOLLOW) and without blocking
 * (O_NONBLOCK: a FIFO nobody reads fails with ENXIO instead of hanging a pool thread and close()),
 * and only a plain file is written: whoever can write log.dir must not make the host, often root,
 * append children's output to /etc/something through a link planted at `<name>.log`.
 */
const LOG_OPEN_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK

function openLogFile (file: string): { fd: number, size: number } {
  const fd = openSync(file, LOG_OPEN_FLAGS, 0o666)
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new Error(`${file} is not a plain file`)
    return { fd, size: st.size }
  } catch (err) {
    closeSync(fd)
    throw err
  }
}

export type OutputListener = (stream: 'stdout' | 'stderr', chunk: Buffer, pid: number) => void
/** A process's stdout or stderr ended (after its last chunk), or was cut off. */
export type OutputEndListener = (stream: 'stdout' | 'stderr', pid: number) => void

export class OutputSink {
  /** Bytes dropped because the file writer was more than `maxBuffered` behind. */
  dropped = 0
  private readonly file: string | null
  private readonly maxSize: number
  private readonly keep: number
  private readonly maxBuffered: number
  private readonly listener: OutputListener
  private readonly onEnd: OutputEndListener
  /** The incomplete character each process's stream ended its last chunk with (file only). */
  private readonly carries = new Map<string, Utf8Carry>()
  private stream: WriteStream | null = null
  private size = 0
  private readonly closing = new Set<Promise<void>>()
  private closed = false
  /** Bytes handed to each open stream, to count what a failing one lost. */
  private readonly queued = new Map<WriteStream, number>()
  /** When the log file last failed (Date.now()); 0 = never. */
  private failedAt = 0

  constructor (name: string, opts: LogOptions | undefined, listener: OutputListener, onEnd: OutputEndListener = () => {}) {
    this.file = opts?.dir === undefined ? null : join(opts.dir, `${name}.log`)
    this.maxSize = opts?.maxSize ?? LOG_DEFAULTS.maxSize
    this.keep = opts?.keep ?? LOG_DEFAULTS.keep
    this.maxBuffered = opts?.maxBuffered ?? LOG_DEFAULTS.maxBuffered
    this.listener = listener
    this.onEnd = onEnd
  }

  /** Read a child's pipe until it ends. */
  attach (readable: Readable | null, stream: 'stdout' | 'stderr', pid: number): void {
    if (readable === null) return
    readable.on('data', (chunk: Buffer) => this.write(stream, chunk, pid))
    readable.on('error', () => { /* the child went away; its exit is reported elsewhere */ })
    // 'close' comes after the last 'data', whether the pipe ended or was cut off (releaseOutput).
    readable.once('close', () => this.ended(stream, pid))
  }

  write (stream: 'stdout' | 'stderr', chunk: Buffer, pid: number): void {
    this.listener(stream, chunk, pid)
    if (this.file === null) return
    const key = `${pid}:${stream}`
    let carry = this.carries.get(key)
    if (carry === undefined) { carry = new Utf8Carry(); this.carries.set(key, carry) }
    const bytes = carry.take(chunk, false)
    if (bytes.length > 0) this.toFile(bytes)
  }

  /** A process's pipe ended: what its carry held goes to the file as written, then the end is told. */
  private ended (stream: 'stdout' | 'stderr', pid: number): void {
    const key = `${pid}:${stream}`
    const carry = this.carries.get(key)
    if (carry !== undefined) {
      this.carries.delete(key)
      const rest = carry.end()
      if (rest.length > 0) this.toFile(rest)
    }
    this.onEnd(stream, pid)
  }

  private toFile (chunk: Buffer): void {
    if (this.file === null) return
    // Closed (a program that left its group, setsid, may still write), or the file failed a moment
    // ago (its directory gone, disk full): drop and count rather than open a file per chunk.
    if (this.closed || (this.stream === null && Date.now() - this.failedAt < REOPEN_AFTER_MS)) {
      this.dropped += chunk.length
      return
    }
    if (this.stream !== null && this.stream.writableLength > this.maxBuffered) {
      this.dropped += chunk.length
      return
    }
    if (this.stream !== null && this.size > 0 && this.size + chunk.length > this.maxSize) this.rotate()
    const s = this.stream ?? this.open(this.file)
    if (s === null) {
      this.dropped += chunk.length
      return
    }
    this.queued.set(s, (this.queued.get(s) ?? 0) + chunk.length)
    s.write(chunk)
    this.size += chunk.length
  }

  /** The file opened for appending, or null (counted by the caller) when it cannot be. */
  private open (file: string): WriteStream | null {
    // log.dir is made as runDir is (PM2 makes its log directory too): a missing one dropped every
    // byte of output, counted on the status page but never written.
    try { mkdirSync(dirname(file), { recursive: true, mode: 0o750 }) } catch { /* the open below fails and counts */ }
    let opened: { fd: number, size: number }
    try {
      opened = openLogFile(file)
    } catch {
      // Missing directory, a symlink (ELOOP), a FIFO or device, disk trouble: retry later.
      this.failedAt = Date.now()
      return null
    }
    const s = createWriteStream(file, { fd: opened.fd })
    this.stream = s
    this.size = opened.size
    this.queued.set(s, 0)
    s.on('error', () => {
      // Disk trouble must not crash the host; output is best effort. What this stream had not
      // written is lost: count it, and open the file anew later (the directory may come back).
      this.dropped += Math.max(0, (this.queued.get(s) ?? 0) - s.bytesWritten)
      this.queued.set(s, s.bytesWritten)
      if (this.stream === s) {
        this.stream = null
        this.failedAt = Date.now()
      }
    })
    s.once('close', () => this.queued.delete(s))
    return s
  }

  private rotate (): void {
    this.endStream()
    const file = this.file as string
    // Renaming under an open fd is safe on POSIX: the old writer keeps its inode.
    if (this.keep === 0) {
      try { rmSync(file, { force: true }) } catch { /* its directory unreadable: the reopen fails and counts */ }
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
    // A stream that failed (its 'close' already emitted) must not be waited for: close() would hang.
    const done = new Promise<void>((resolve) => {
      if (s.closed || s.destroyed) { resolve(); return }
      s.once('close', () => resolve())
      s.end()
    })
    this.closing.add(done)
    void done.then(() => this.closing.delete(done))
  }

  /** Flush and close the file (no fd stays open after the manager closes). */
  async close (): Promise<void> {
    // Pipes still open (a process that left its group) or not yet reported closed: their held
    // bytes are written now, not dropped with the file.
    for (const carry of this.carries.values()) {
      const rest = carry.end()
      if (rest.length > 0) this.toFile(rest)
    }
    this.carries.clear()
    this.closed = true
    this.endStream()
    await Promise.all([...this.closing])
  }
}

/**
 * Output chunks as text, per process and stream, for logging them chunk by chunk. A pipe splits
 * output wherever a write (or the 64 KiB pipe buffer) ends, so a UTF-8 character can straddle two
 * chunks; decoded alone, each half became U+FFFD. The incomplete tail is held for that stream's
 * next chunk; `end(pid, stream)` at the end of the pipe hands back what is still held, as U+FFFD
 * (a character the program never finished, shown as invalid bytes are everywhere else it is
 * decoded), and forgets the decoder.
 */
export class OutputText {
  /** node's StringDecoder holds an incomplete character's bytes until the next write. */
  private readonly decoders = new Map<string, StringDecoder>()

  text (pid: number, stream: 'stdout' | 'stderr', chunk: Buffer): string {
    const key = `${pid}:${stream}`
    let d = this.decoders.get(key)
    if (d === undefined) { d = new StringDecoder('utf8'); this.decoders.set(key, d) }
    return d.write(chunk)
  }

  /** The stream (both, without `stream`) ended: the text still held (U+FFFD per incomplete character; usually ''). */
  end (pid: number, stream?: 'stdout' | 'stderr'): string {
    let rest = ''
    for (const s of stream === undefined ? ['stdout', 'stderr'] as const : [stream]) {
      const key = `${pid}:${s}`
      rest += this.decoders.get(key)?.end() ?? ''
      this.decoders.delete(key)
    }
    return rest
  }
}

/** The events `logOutput` follows (a SpawnManager's). */
interface OutputEvents {
  on (event: 'stderr', fn: (e: SpawnEvents['stderr'][0]) => void): unknown
  on (event: 'output-end', fn: (e: SpawnEvents['output-end'][0]) => void): unknown
}

/**
 * Without a logDir: children's output goes to the host's log, one line per chunk (never mixed
 * into the host's own), decoded per process and stream so a character split between two chunks is
 * logged whole; whitespace-only chunks are skipped. A character still incomplete when its pipe ends
 * (the program exited in the middle of it) is logged as U+FFFD, in an entry of its own.
 */
/** The one logger method the output needs (structural: spawn/ imports nothing from core/). */
type InfoLogger = { info (obj: object, msg?: string): void }

export function logOutput (manager: OutputEvents, log: InfoLogger): void {
  const text = new OutputText()
  const entry = (e: { spawn: string, pid: number, stream: 'stdout' | 'stderr' }, s: string): void => {
    const line = s.trimEnd()
    if (line !== '') log.info({ spawn: e.spawn, pid: e.pid, stream: e.stream }, line)
  }
  manager.on('stderr', (e) => entry(e, text.text(e.pid, e.stream, e.chunk)))
  // Per pipe, not at the process's exit: output can still arrive after the exit is reported.
  manager.on('output-end', (e) => entry(e, text.end(e.pid, e.stream)))
}
