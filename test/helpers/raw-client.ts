/**
 * A raw HTTP/1.1 client on loopback for upload tests: the test decides when each byte of the body
 * goes, and reads the final response (its status and its body, Content-Length or chunked framed).
 */
import { connect, type Socket } from 'node:net'
import { waitFor } from './leaks.js'

/** A raw HTTP/1.1 client: the test decides when each byte of the body goes. */
export class Raw {
  readonly socket: Socket
  raw = ''
  closed = false
  constructor (port: number, head: string) {
    this.socket = connect({ host: '127.0.0.1', port })
    this.socket.on('error', () => {})
    this.socket.on('data', (d: Buffer) => { this.raw += d.toString('latin1') })
    this.socket.on('close', () => { this.closed = true })
    this.socket.write(head)
  }

  /** Write `buf` in 64 KiB pieces, each once the previous one left (stops if the server closed). */
  async send (buf: Buffer): Promise<void> {
    for (let off = 0; off < buf.length && !this.closed; off += 65536) {
      const piece = buf.subarray(off, off + 65536)
      // A server that closes while the write waits for 'drain' ends the wait too.
      await new Promise<void>((resolve) => {
        if (this.socket.write(piece)) { resolve(); return }
        const done = (): void => { this.socket.off('drain', done); this.socket.off('close', done); resolve() }
        this.socket.once('drain', done)
        this.socket.once('close', done)
      })
    }
  }

  /**
   * Keep writing 1 MiB pieces until the server closes the connection, `max` bytes went, or `ms`
   * passed; the bytes written. For a body the proxy should stop taking (its discard cap).
   */
  async flood (max = 200 * 1024 * 1024, ms = 60_000): Promise<number> {
    let sent = 0
    const piece = Buffer.alloc(1024 * 1024)
    const deadline = Date.now() + ms
    while (!this.closed && sent < max && Date.now() < deadline) {
      await this.send(piece)
      sent += piece.length
    }
    return sent
  }

  status (): number {
    const finals = [...this.raw.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1])).filter((s) => s >= 200)
    return finals[0] ?? 0
  }

  /** The final response's body (Content-Length framed), once complete. */
  body (): string | null {
    const at = this.raw.search(/HTTP\/1\.1 [2-5]\d\d/)
    if (at < 0) return null
    const rest = this.raw.slice(at)
    const end = rest.indexOf('\r\n\r\n')
    if (end < 0) return null
    const head = rest.slice(0, end)
    const body = rest.slice(end + 4)
    const cl = /\r\ncontent-length: *(\d+)/i.exec(head)
    if (cl !== null) return body.length >= Number(cl[1]) ? body.slice(0, Number(cl[1])) : null
    if (/\r\ntransfer-encoding: *chunked/i.test(head)) return dechunk(body)
    return this.closed ? body : null
  }

  async answered (ms = 20_000): Promise<boolean> { return await waitFor(() => this.body() !== null || this.closed, ms) }
}

/** A whole chunked body (no trailers), or null while incomplete. */
function dechunk (s: string): string | null {
  let out = ''
  for (let at = 0; ;) {
    const eol = s.indexOf('\r\n', at)
    if (eol < 0) return null
    const n = parseInt(s.slice(at, eol), 16)
    if (n === 0) return s.indexOf('\r\n', eol + 2) >= 0 ? out : null
    if (s.length < eol + 2 + n + 2) return null
    out += s.slice(eol + 2, eol + 2 + n)
    at = eol + 2 + n + 2
  }
}

export const postHead = (path: string, length: number, extra = ''): string =>
  `POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: ${length}\r\n${extra}\r\n`


/**
 * A client that sends `head` and never reads: what the proxy may write is only what the socket
 * buffers take (for tests of a client that stops reading).
 */
export function stalledClient (port: number, head: string): Socket {
  const sock = connect({ host: '127.0.0.1', port })
  sock.on('error', () => {})
  sock.pause()
  sock.write(head)
  return sock
}
