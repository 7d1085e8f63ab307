/**
 * Where a protocol's head encoder writes (FastCGI PARAMS records, the SCGI netstring): one Buffer
 * kept between requests, grown on demand, and dropped back to its first size after an environment
 * grew it past `keep` bytes, so one unusually large request does not pin memory for good.
 * Requests are encoded one at a time (synchronously), so one scratch per encoder module suffices.
 */
export class Scratch {
  buf: Buffer

  constructor (private readonly first = 4096, private readonly keep = 65536) {
    this.buf = Buffer.allocUnsafeSlow(first)
  }

  /** Grow to hold `need` bytes, keeping the first `used`; returns the new buffer. */
  grow (need: number, used: number): Buffer {
    let size = this.buf.length * 2
    while (size < need) size *= 2
    const bigger = Buffer.allocUnsafeSlow(size)
    this.buf.copy(bigger, 0, 0, used)
    this.buf = bigger
    return bigger
  }

  /** After copying the encoded bytes out: let go of a buffer grown for an unusually large environment. */
  release (): void {
    if (this.buf.length > this.keep) this.buf = Buffer.allocUnsafeSlow(this.first)
  }
}
