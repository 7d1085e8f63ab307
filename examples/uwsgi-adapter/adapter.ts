/**
 * A uwsgi-protocol adapter written as an outsider would: only the package's public API.
 * (Imports `../../src/index.js` because the repo does not build `dist/` before tests; a user writes
 * `from 'proxycore'`.)
 *
 * Wire format (uWSGI docs, "The uwsgi protocol"):
 *   request  = u8 modifier1 (0 = WSGI vars) | u16 LE datasize | u8 modifier2 (0)
 *              then datasize bytes of (u16 LE key length, key, u16 LE value length, value)*
 *              then CONTENT_LENGTH body bytes
 *   response = what the app wrote: an HTTP status line, headers, blank line, body; ends at close.
 */
import type { Socket } from 'node:net'
import {
  CgiBodyFramer, CgiResponseParser, ConfigError, OneShotClient, ProxyError, fromSocketError, unwatchAbort, watchAbort,
  type ClientContext, type Endpoint, type Exchange, type ProtocolAdapter, type ResponseHandler
} from '../../src/index.js'

export type UwsgiOptions = Record<string, never>

/** Encode the uwsgi packet header and vars. Throws ProxyError ERR_BAD_HEADER_VALUE when too big. */
export function encodeUwsgiVars (env: Readonly<Record<string, string>>, contentLength: number): Buffer {
  const vars: Buffer[] = []
  const all = { ...env, CONTENT_LENGTH: String(contentLength) }
  for (const [k, v] of Object.entries(all)) {
    const key = Buffer.from(k, 'utf8')
    const value = Buffer.from(v, 'utf8')
    if (key.length > 0xffff || value.length > 0xffff) throw new ProxyError('ERR_BAD_HEADER_VALUE', `uwsgi var ${k} over 64 KiB`)
    const sizes = Buffer.alloc(2)
    sizes.writeUInt16LE(key.length)
    vars.push(Buffer.from(sizes), key)
    sizes.writeUInt16LE(value.length)
    vars.push(Buffer.from(sizes), value)
  }
  const data = Buffer.concat(vars)
  if (data.length > 0xffff) throw new ProxyError('ERR_BAD_HEADER_VALUE', `uwsgi vars block of ${data.length} bytes exceeds 65535`)
  const head = Buffer.alloc(4)
  head.writeUInt8(0, 0)
  head.writeUInt16LE(data.length, 1)
  head.writeUInt8(0, 3)
  return Buffer.concat([head, data])
}

/** One uwsgi exchange: one connection, closed by the server at the end of the response. */
class UwsgiExchange {
  private socket: Socket | null = null
  private settled = false
  private readonly parser: CgiResponseParser
  /** Set once the head is parsed: frames the body by the backend's Content-Length, if any. */
  private framer: CgiBodyFramer | null = null

  constructor (
    private readonly endpoint: Endpoint,
    private readonly ctx: ClientContext,
    private readonly ex: Exchange,
    private readonly handler: ResponseHandler,
    private readonly done: (x: UwsgiExchange) => void,
  ) {
    this.parser = new CgiResponseParser({ maxHeadSize: ctx.limits.maxResponseHeadSize, nph: true })
  }

  start (): void {
    let packet: Buffer
    try {
      packet = encodeUwsgiVars(this.ex.env ?? {}, this.ex.contentLength ?? 0)
    } catch (err) {
      this.fail(err as ProxyError)
      return
    }
    // The core's cheap abort hook when offered, the standard signal otherwise.
    watchAbort(this.ex, this.onAbort)
    this.ctx.connect(this.endpoint).then((s) => this.connected(s, packet), (err: ProxyError) => this.fail(err))
  }

  /** The pool dropped this client. */
  abort (err: ProxyError): void { this.fail(err) }

  private readonly onAbort = (): void => { this.fail(new ProxyError('ERR_CLIENT_ABORTED')) }

  private connected (s: Socket, packet: Buffer): void {
    if (this.settled) { s.destroy(); return }
    this.socket = s
    s.on('data', (chunk: Buffer) => {
      if (this.settled) return
      if (this.framer !== null) { this.body(chunk); return }
      const r = this.parser.push(chunk)
      if ('error' in r) { this.fail(r.error); return }
      if (!r.done) return
      // A HEAD request, a 1xx, 204 or 304 has no body whatever its Content-Length says
      // (RFC 9110 §6.4.1): the framer is then complete at once.
      this.framer = CgiBodyFramer.forResponse(r.head, this.ex.method)
      this.handler.onHead(r.head.status, r.head.headers, { resume: () => { if (!this.settled) s.resume() } }, r.head.statusText)
      this.body(r.rest)
    })
    s.once('end', () => {
      if (this.framer === null) { this.fail(this.parser.end()); return }
      const short = this.framer.eof() // ERR_BACKEND_CLOSED when short of Content-Length
      if (short !== null) this.fail(short)
      else this.end()
    })
    // ECONNRESET / EPIPE → ERR_BACKEND_RESET, anything else ERR_BACKEND_CLOSED; never an end.
    s.once('error', (err: NodeJS.ErrnoException) => this.fail(fromSocketError(err, this.framer === null ? 'head' : 'body', this.endpoint.id)))
    s.write(packet)
    // The core already knows the length (needsContentLength); pipe() gives backpressure.
    this.ex.body?.pipe(s, { end: false })
  }

  private body (chunk: Buffer): void {
    const framer = this.framer as CgiBodyFramer
    const part = framer.take(chunk) // bytes past Content-Length are dropped
    if (part.length > 0 && !this.handler.onData(part)) this.socket?.pause()
    if (framer.complete) this.end()
  }

  private settle (): boolean {
    if (this.settled) return false
    this.settled = true
    unwatchAbort(this.ex, this.onAbort)
    this.socket?.destroy()
    this.done(this)
    return true
  }

  private fail (err: ProxyError): void { if (this.settle()) this.handler.onError(err) }
  private end (): void { if (this.settle()) this.handler.onEnd() }
}

export const uwsgiAdapter: ProtocolAdapter<UwsgiOptions> = {
  name: 'uwsgi',
  capabilities: { keepAlive: false, multiplex: false, upgrade: false, cgiEnv: true, needsContentLength: true, perRequestProcess: false },
  parseOptions (raw: unknown, at: string): UwsgiOptions {
    if (raw === undefined || raw === null || (typeof raw === 'object' && Object.keys(raw).length === 0)) return {}
    throw new ConfigError([{ path: at, message: 'the uwsgi adapter takes no options', found: raw, expected: '{}' }])
  },
  // The core's OneShotClient keeps the exchanges in flight for close()/destroy(): nothing to pool.
  createClient: (endpoint: Endpoint, _opts: UwsgiOptions, ctx: ClientContext) =>
    new OneShotClient<UwsgiExchange>(endpoint, (ex, handler, done) => new UwsgiExchange(endpoint, ctx, ex, handler, done), (x, err) => x.abort(err))
}
