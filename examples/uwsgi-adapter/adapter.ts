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
  CgiResponseParser, ConfigError, ProxyError,
  type BackendClient, type ClientContext, type Endpoint, type Exchange, type ProtocolAdapter, type ResponseHandler
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

class UwsgiClient implements BackendClient {
  inflight = 0
  private readonly sockets = new Set<Socket>()
  private waiters: Array<() => void> = []

  constructor (private readonly endpoint: Endpoint, private readonly ctx: ClientContext) {}

  dispatch (ex: Exchange, handler: ResponseHandler): void {
    this.inflight++
    let socket: Socket | null = null
    let settled = false
    let remaining: number | null = null
    const parser: CgiResponseParser | null = new CgiResponseParser({ maxHeadSize: this.ctx.limits.maxResponseHeadSize, nph: true })
    let inHead = true
    const settle = (): boolean => {
      if (settled) return false
      settled = true
      ex.signal.removeEventListener('abort', onAbort)
      if (socket !== null) { socket.destroy(); this.sockets.delete(socket) }
      if (--this.inflight === 0) for (const w of this.waiters.splice(0)) w()
      return true
    }
    const fail = (err: ProxyError): void => { if (settle()) handler.onError(err) }
    const end = (): void => { if (settle()) handler.onEnd() }
    const onAbort = (): void => fail(ex.signal.reason instanceof ProxyError ? ex.signal.reason : new ProxyError('ERR_CLIENT_ABORTED'))

    let packet: Buffer
    try {
      packet = encodeUwsgiVars(ex.env ?? {}, ex.contentLength ?? 0)
    } catch (err) {
      return fail(err as ProxyError)
    }
    ex.signal.addEventListener('abort', onAbort, { once: true })
    const body = (chunk: Buffer): void => {
      const part = remaining === null ? chunk : chunk.subarray(0, remaining)
      if (remaining !== null) remaining -= part.length
      if (part.length > 0 && !handler.onData(part)) socket?.pause()
      if (remaining === 0) end()
    }
    this.ctx.connect(this.endpoint).then((s) => {
      if (settled) { s.destroy(); return }
      socket = s
      this.sockets.add(s)
      s.on('data', (chunk: Buffer) => {
        if (settled) return
        if (!inHead) return body(chunk)
        const r = (parser as CgiResponseParser).push(chunk)
        if ('error' in r) return fail(r.error)
        if (!r.done) return
        inHead = false
        remaining = r.head.contentLength
        handler.onHead(r.head.status, r.head.headers, { resume: () => { if (!settled) s.resume() } }, r.head.statusText)
        body(r.rest)
      })
      s.once('end', () => {
        if (inHead) return fail((parser as CgiResponseParser).end())
        if (remaining !== null && remaining > 0) return fail(new ProxyError('ERR_BACKEND_CLOSED', 'short body'))
        end()
      })
      s.once('error', (err) => fail(new ProxyError(inHead ? 'ERR_BACKEND_RESET' : 'ERR_BACKEND_CLOSED', err.message, { cause: err })))
      s.write(packet)
      // The core already knows the length (needsContentLength); pipe() gives backpressure.
      ex.body?.pipe(s, { end: false })
    }, (err: ProxyError) => fail(err))
  }

  close (): Promise<void> {
    return this.inflight === 0 ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve))
  }

  destroy (): void {
    for (const s of this.sockets) s.destroy(new Error('client destroyed'))
  }
}

export const uwsgiAdapter: ProtocolAdapter<UwsgiOptions> = {
  name: 'uwsgi',
  capabilities: { keepAlive: false, multiplex: false, upgrade: false, cgiEnv: true, needsContentLength: true, perRequestProcess: false },
  parseOptions (raw: unknown, at: string): UwsgiOptions {
    if (raw === undefined || raw === null || (typeof raw === 'object' && Object.keys(raw).length === 0)) return {}
    throw new ConfigError([{ path: at, message: 'the uwsgi adapter takes no options', found: raw, expected: '{}' }])
  },
  createClient: (endpoint: Endpoint, _opts: UwsgiOptions, ctx: ClientContext) => new UwsgiClient(endpoint, ctx)
}
