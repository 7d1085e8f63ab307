/**
 * Test-side FastCGI building blocks written straight from the FastCGI 1.0 spec (not through our
 * encoder): a record builder, a recording decoder sink that merges streamed pieces, and chunked
 * feeding.
 */
import { RecordDecoder, type RecordSink } from '../../../src/protocols/fastcgi/decoder.js'
import type { ProxyError } from '../../../src/core/errors.js'

/** FastCGI 1.0 §3.3 record: 8-byte header, content, padding (zeros). */
export function rec (type: number, id: number, content: Buffer | string = Buffer.alloc(0), padding = 0): Buffer {
  const body = typeof content === 'string' ? Buffer.from(content, 'latin1') : content
  const h = Buffer.from([1, type, id >> 8, id & 0xff, body.length >> 8, body.length & 0xff, padding, 0])
  return Buffer.concat([h, body, Buffer.alloc(padding)])
}

/** FastCGI 1.0 §5.5 END_REQUEST body. */
export function endBody (appStatus: number, protocolStatus: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeUInt32BE(appStatus, 0)
  b[4] = protocolStatus
  return b
}

/** FastCGI 1.0 §3.4 name-value pairs, lengths written by hand. */
export function pairs (list: Array<[string, string]>): Buffer {
  const parts: Buffer[] = []
  const len = (n: number): Buffer => n < 128 ? Buffer.from([n]) : Buffer.from([0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff])
  for (const [n, v] of list) parts.push(len(Buffer.byteLength(n)), len(Buffer.byteLength(v)), Buffer.from(n), Buffer.from(v))
  return Buffer.concat(parts)
}

export type Event =
  | ['stdout' | 'stderr', number, string]
  | ['stdoutEnd' | 'stderrEnd', number]
  | ['end', number, number, number]
  | ['values', Array<[string, string]>]
  | ['unknownType', number]
  | ['error', string, string]

/** Records decoder events; consecutive stream pieces of one request are merged (chunking-independent). */
export class Recorder implements RecordSink {
  readonly events: Event[] = []
  active: Set<number>
  constructor (active: Iterable<number> = [1]) { this.active = new Set(active) }
  accepts (id: number): boolean { return this.active.has(id) }
  private piece (kind: 'stdout' | 'stderr', id: number, chunk: Buffer): void {
    const last = this.events[this.events.length - 1]
    if (last !== undefined && last[0] === kind && last[1] === id) last[2] += chunk.toString('latin1')
    else this.events.push([kind, id, chunk.toString('latin1')])
  }
  stdout (id: number, chunk: Buffer): boolean { this.piece('stdout', id, chunk); return true }
  stderr (id: number, chunk: Buffer): void { this.piece('stderr', id, chunk) }
  stdoutEnd (id: number): void { this.events.push(['stdoutEnd', id]) }
  stderrEnd (id: number): void { this.events.push(['stderrEnd', id]) }
  endRequest (id: number, appStatus: number, protocolStatus: number): void { this.events.push(['end', id, appStatus, protocolStatus]) }
  values (v: Map<string, string>): void { this.events.push(['values', [...v]]) }
  unknownType (type: number): void { this.events.push(['unknownType', type]) }
  error (err: ProxyError): void { this.events.push(['error', err.code, err.message]) }
}

/** Decode `bytes` cut into `chunks` (lengths; the remainder goes last). */
export function decodeChunked (bytes: Buffer, cuts: number[], active?: Iterable<number>): Event[] {
  const r = new Recorder(active)
  const d = new RecordDecoder(r)
  let off = 0
  for (const n of cuts) {
    d.write(bytes.subarray(off, Math.min(bytes.length, off + n)))
    off = Math.min(bytes.length, off + n)
  }
  if (off < bytes.length) d.write(bytes.subarray(off))
  return r.events
}

/** Every way of feeding `bytes` we check: whole, split at every boundary, and one byte at a time. */
export function* feedings (bytes: Buffer): Generator<[string, number[]]> {
  yield ['whole', []]
  for (let i = 1; i < bytes.length; i++) yield [`split at ${i}`, [i]]
  yield ['1-byte writes', Array.from({ length: bytes.length }, () => 1)]
}
