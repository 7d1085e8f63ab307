/**
 * The last lines each spawn wrote to stderr, so a FAILED spawn on the status page shows why
 * (php-cgi's "Could not open input file", a Python traceback) without opening a log file.
 *
 * Bounded twice: at most `lines` lines per spawn and `lineBytes` bytes per line, so a process
 * flooding stderr costs a fixed amount of memory. A partial line is kept until its newline arrives
 * (or it reaches `lineBytes`).
 */
import type { SpawnEvents } from '../spawn/types.js'
import type { SpawnView } from './model.js'

export interface StderrTailOptions {
  /** Lines kept per spawn (default 20). */
  lines?: number
  /** Longest line kept; the rest is cut with `…` (default 512). */
  lineBytes?: number
}

interface Ring {
  lines: string[]
  partial: string
}

export class StderrTail {
  private readonly rings = new Map<string, Ring>()
  private readonly max: number
  private readonly lineBytes: number
  private view: SpawnView | null = null

  constructor (opts: StderrTailOptions = {}) {
    this.max = opts.lines ?? 20
    this.lineBytes = opts.lineBytes ?? 512
  }

  /** Follow a manager's `stderr` events until `detach()`. */
  attach (view: SpawnView): void {
    this.detach()
    this.view = view
    view.on('stderr', this.onStderr)
  }

  detach (): void {
    this.view?.off('stderr', this.onStderr)
    this.view = null
  }

  private readonly onStderr = (e: SpawnEvents['stderr'][0]): void => {
    if (e.stream === 'stderr') this.push(e.spawn, e.chunk)
  }

  push (spawn: string, chunk: Buffer): void {
    let ring = this.rings.get(spawn)
    if (ring === undefined) { ring = { lines: [], partial: '' }; this.rings.set(spawn, ring) }
    // Only the tail of a huge chunk can survive the ring, so never decode more than that.
    const cap = this.max * (this.lineBytes + 1)
    const text = ring.partial + (chunk.length > cap ? chunk.subarray(chunk.length - cap) : chunk).toString('utf8')
    const parts = text.split('\n')
    ring.partial = parts.pop() ?? ''
    for (const line of parts) this.add(ring, line)
    if (ring.partial.length >= this.lineBytes) { this.add(ring, ring.partial); ring.partial = '' }
  }

  private add (ring: Ring, raw: string): void {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw
    if (line === '') return
    ring.lines.push(line.length > this.lineBytes ? `${line.slice(0, this.lineBytes)}…` : line)
    if (ring.lines.length > this.max) ring.lines.splice(0, ring.lines.length - this.max)
  }

  /** Complete lines, oldest first, plus a pending partial line. */
  lines (spawn: string): string[] {
    const ring = this.rings.get(spawn)
    if (ring === undefined) return []
    return ring.partial === '' ? [...ring.lines] : [...ring.lines, ring.partial].slice(-this.max)
  }
}
