/**
 * The last lines each spawn wrote to stderr, so a FAILED spawn on the status page shows why
 * (php-cgi's "Could not open input file", a Python traceback) without opening a log file.
 *
 * Bounded twice: at most `lines` lines per spawn and `lineBytes` characters per line, so a process
 * flooding stderr costs a fixed amount of memory. Lines are cut on the bytes, never on chunk
 * boundaries: a line that arrives in many chunks (a long JSON log line split by the pipe) is one
 * line, shown with its first `lineBytes` characters and `…`; a UTF-8 character split between two
 * chunks stays one character; a chunk larger than the ring is scanned from its end, so the lines
 * kept are whole lines, never an old partial line glued onto a fragment of another one.
 *
 * What a process writes is shown as text, not replayed: complete ANSI escape sequences (colours,
 * cursor movement, window titles) are removed, and other control characters (an ESC that starts no
 * complete sequence too) appear as `\xHH`, bidi controls and U+2028/U+2029 as `\uXXXX`, so neither
 * the page nor `curl …?format=json | jq -r` on a terminal acts on them (nor reorders the text shown),
 * and no text after a lone escape is lost.
 */
import { StringDecoder } from 'node:string_decoder'
import type { SpawnEvents } from '../spawn/types.js'
import type { SpawnView } from './model.js'

export interface StderrTailOptions {
  /** Lines kept per spawn (default 20). */
  lines?: number
  /** Longest line kept, in characters; the rest is cut with `…` (default 512). */
  lineBytes?: number
}

interface Ring {
  lines: string[]
  /** The bytes of the line not ended yet, at most `keep` of them. */
  partial: Buffer
  /** The pending line is longer than `partial` holds. */
  cut: boolean
}

const NL = 0x0a
const CR = 0x0d
/**
 * ESC-introduced sequences: CSI (`ESC [ … final`), OSC (`ESC ] … BEL|ST`), and two-byte escapes;
 * plus 8-bit CSI. Only complete ones: an OSC without its terminator would otherwise take the rest of
 * the line with it (`FATAL: \x1b]0;` hid the reason after it), and a lone `ESC [` or `ESC ]` is no
 * two-byte escape; they are shown, as `\x1b`, with the text after them.
 */
const ANSI = /\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[ -/]*[0-Z\\^-~])|\x9b[0-?]*[ -/]*[@-~]/g
/**
 * C0 and C1 controls (tab aside), shown as `\xHH`; and, shown as `\uXXXX`, the bidi embedding,
 * override and isolate controls (U+202A–U+202E, U+2066–U+2069), which reorder the text after them
 * as displayed (Trojan Source, CVE-2021-42574), and U+2028/U+2029, a line or paragraph break where
 * the process wrote none.
 */
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g

/** Remove ANSI sequences and show any other control character as `\xHH` or `\uXXXX` (tab stays). */
export function cleanLine (s: string): string {
  return s.replace(ANSI, '').replace(CONTROL, (c) => {
    const n = c.charCodeAt(0)
    return n < 0x100 ? '\\x' + n.toString(16).padStart(2, '0') : '\\u' + n.toString(16)
  })
}

export class StderrTail {
  private readonly rings = new Map<string, Ring>()
  private readonly max: number
  private readonly lineBytes: number
  /** Bytes kept of one line: enough for `lineBytes` characters however they are encoded. */
  private readonly keep: number
  private view: SpawnView | null = null

  constructor (opts: StderrTailOptions = {}) {
    this.max = opts.lines ?? 20
    this.lineBytes = opts.lineBytes ?? 512
    this.keep = 4 * (this.lineBytes + 1)
  }

  /** Follow a manager's `stderr` events until `detach()`. */
  attach (view: SpawnView): void {
    this.detach()
    this.view = view
    view.on('stderr', this.onStderr)
    view.on('output-end', this.onOutputEnd)
  }

  detach (): void {
    this.view?.off('stderr', this.onStderr)
    this.view?.off('output-end', this.onOutputEnd)
    this.view = null
  }

  private readonly onStderr = (e: SpawnEvents['stderr'][0]): void => {
    if (e.stream === 'stderr') this.push(e.spawn, e.chunk)
  }

  private readonly onOutputEnd = (e: SpawnEvents['output-end'][0]): void => {
    if (e.stream === 'stderr') this.end(e.spawn)
  }

  /**
   * A process of `spawn` closed its stderr (it exited): its last line ends there, newline or not,
   * so the next process's output (a crash loop's next run) is not glued onto it. A character it
   * left incomplete shows as U+FFFD. (Lines are kept per spawn: a process that ends while another
   * of the spawn is in the middle of a line ends that line too.)
   */
  end (spawn: string): void {
    const ring = this.rings.get(spawn)
    if (ring === undefined || (ring.partial.length === 0 && !ring.cut)) return
    this.add(ring, ring.partial, ring.cut)
    ring.partial = Buffer.alloc(0)
    ring.cut = false
  }

  push (spawn: string, chunk: Buffer): void {
    let ring = this.rings.get(spawn)
    if (ring === undefined) { ring = { lines: [], partial: Buffer.alloc(0), cut: false }; this.rings.set(spawn, ring) }
    if (this.max <= 0) return
    const last = chunk.lastIndexOf(NL)
    if (last < 0) { this.extend(ring, chunk); return }
    // Walk back from the last newline over at most `max` non-empty lines: older ones would only be
    // pushed out of the ring again, so a huge chunk costs `max` line decodes, not its size.
    const found: Buffer[] = [] // newest first
    let end = last
    let first: Buffer | null = null // the chunk's first line, which ends the pending partial line
    while (found.length < this.max) {
      const start = end === 0 ? -1 : chunk.lastIndexOf(NL, end - 1)
      const line = chunk.subarray(start + 1, end)
      if (start < 0) { first = line; break }
      if (!(line.length === 0 || (line.length === 1 && line[0] === CR))) found.push(line)
      end = start
    }
    if (first !== null) {
      this.extend(ring, first)
      this.add(ring, ring.partial, ring.cut)
    }
    for (let i = found.length - 1; i >= 0; i--) this.add(ring, found[i], false)
    ring.partial = Buffer.alloc(0)
    ring.cut = false
    this.extend(ring, chunk.subarray(last + 1))
  }

  /** Append to the pending line, keeping at most `keep` bytes of it. */
  private extend (ring: Ring, bytes: Buffer): void {
    if (bytes.length === 0) return
    const room = this.keep - ring.partial.length
    if (room <= 0) { ring.cut = true; return }
    if (bytes.length > room) ring.cut = true
    ring.partial = Buffer.concat([ring.partial, bytes.subarray(0, room)])
  }

  private add (ring: Ring, bytes: Buffer, cut: boolean): void {
    const line = this.decode(bytes, cut, true)
    if (line === '') return
    ring.lines.push(line)
    if (ring.lines.length > this.max) ring.lines.splice(0, ring.lines.length - this.max)
  }

  /** One line's bytes as shown: decoded, cleaned, cut to `lineBytes` characters. */
  private decode (bytes: Buffer, cut: boolean, ended: boolean): string {
    let b = bytes
    if (b.length > this.keep) { b = b.subarray(0, this.keep); cut = true }
    if (!cut && ended && b.length > 0 && b[b.length - 1] === CR) b = b.subarray(0, -1)
    // A line cut (or still pending) may end inside a UTF-8 character: leave that half out.
    const text = cut || !ended ? new StringDecoder('utf8').write(b) : b.toString('utf8')
    let s = cleanLine(text)
    if (s.length > this.lineBytes) {
      s = s.slice(0, this.lineBytes)
      cut = true
    }
    // Never end on half a surrogate pair.
    if (cut && s.length > 0) {
      const c = s.charCodeAt(s.length - 1)
      if (c >= 0xd800 && c <= 0xdbff) s = s.slice(0, -1)
    }
    return cut ? `${s}…` : s
  }

  /** Complete lines, oldest first, plus a pending partial line. */
  lines (spawn: string): string[] {
    const ring = this.rings.get(spawn)
    if (ring === undefined) return []
    const pending = ring.partial.length === 0 ? '' : this.decode(ring.partial, ring.cut, false)
    return pending === '' ? [...ring.lines] : [...ring.lines, pending].slice(-this.max)
  }
}
