/**
 * Protocol upgrades (WebSocket and any `Upgrade:`): the backend answers 101 and from then on the
 * proxy is a byte tunnel. Close and errors propagate both ways; a backend that answers with a plain
 * response instead gets that response written to the client socket and the socket closed.
 *
 * Before any of that, an upgrade goes through the same gates as a request (nginx and lighttpd run
 * their access and auth phases before proxying anything): the route's admission — a tunnel holds
 * its slot for as long as it is open, as an exchange in flight — and the route's authorizer.
 */
import { STATUS_CODES, ServerResponse, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex, Readable } from 'node:stream'
import { ProxyError, toProxyError } from './errors.js'
import { authorizeExchange } from './exchange.js'
import { filterResponseHeaders, forwardRequestHeaders, validStatus } from './headers.js'
import type { Backend } from './pool.js'
import { RequestFacts } from './request-facts.js'
import type { CompiledRoute } from './route.js'
import type { ProxyRuntime, Target } from './runtime.js'
import type { ClientInfo, Exchange, FlowControl, RawHeaders, ScriptInfo, UpgradeHandler } from './types.js'

export class UpgradeExchange extends RequestFacts implements Exchange, UpgradeHandler {
  readonly headers: RawHeaders
  readonly env: Record<string, string> | null = null
  readonly script: ScriptInfo | null = null
  readonly body: Readable | null = null
  readonly contentLength: number | null = null
  readonly role = 'responder' as const
  readonly signal: AbortSignal
  private readonly ac = new AbortController()
  private backend: Backend | null = null
  private backendSocket: Duplex | null = null
  private done: (() => void) | null = null
  private ended = false
  private admitted = false
  private authRes: ServerResponse | null = null

  constructor (
    private readonly rt: ProxyRuntime,
    private readonly route: CompiledRoute,
    readonly req: IncomingMessage,
    private readonly socket: Duplex,
    private readonly head: Buffer,
    target: Target,
    client: ClientInfo,
    peer: string,
  ) {
    super(rt.nextId(), target, req, client, route.name, route.adapterOptions)
    this.signal = this.ac.signal
    this.headers = forwardRequestHeaders(req, client, peer, {
      host: route.s.hostHeader, xForwarded: route.s.xForwarded, forwarded: route.s.forwarded, via: route.s.via, peerTrusted: route.s.peerTrusted(peer),
    }, true)
  }

  /** Where the authorizer writes a denial: set by admit() before the authorizer is asked. */
  get res (): ServerResponse {
    if (this.authRes === null) throw new ProxyError('ERR_INTERNAL', 'upgrade: no response before the authorizer step')
    return this.authRes
  }

  start (done: () => void): void {
    this.done = done
    const route = this.route
    route.stats.requests++
    this.socket.on('error', this.onClientGone)
    this.socket.on('close', this.onClientGone)
    if (route.admission.tryAcquire()) { this.admit(); return }
    route.admission.acquire(this.signal).then(() => {
      if (this.ended) { route.admission.release(); return }
      this.admit()
    }, (err: ProxyError) => {
      if (err.code === 'ERR_QUEUE_FULL' || err.code === 'ERR_QUEUE_TIMEOUT') route.stats.dropped++
      this.refuse(err)
    })
  }

  private admit (): void {
    this.admitted = true
    const a = this.route.authorizer
    if (a === null) { this.connect(); return }
    // A denial goes through node:http on the raw socket, framed as any response is, with
    // `connection: close`; the socket ends with it.
    const res = new ServerResponse(this.req)
    res.shouldKeepAlive = false
    try {
      res.assignSocket(this.socket as Socket)
    } catch (err) {
      this.refuse(toProxyError(err))
      return
    }
    res.once('finish', () => this.socket.end())
    this.authRes = res
    authorizeExchange(this, a).then((denied) => {
      if (this.ended) return
      // The authorizer's own answer went to the client; the socket closes once it is written.
      if (denied !== null) { this.finish(); return }
      res.detachSocket(this.socket as Socket)
      this.connect()
    }, (err: unknown) => this.refuse(toProxyError(err)))
  }

  private connect (): void {
    const pool = this.route.pool
    const b = pool.pick({ url: this.url, client: this.client.address }, null)
    const client = b?.client
    if (b === null || client?.upgrade === undefined) { this.refuse(new ProxyError('ERR_NO_BACKEND', undefined, { phase: 'connect' })); return }
    this.backend = b
    pool.started(b)
    client.upgrade(this, this)
  }

  onUpgrade (status: number, headers: RawHeaders, backend: Duplex, head: Buffer): void {
    if (this.ended) { backend.destroy(); return }
    this.backendSocket = backend
    const out = filterResponseHeaders(headers, status, null, this.httpVersion)
    let text = `HTTP/1.1 101 ${STATUS_CODES[101]}\r\n`
    for (let i = 0; i < out.length; i += 2) text += `${out[i]}: ${out[i + 1]}\r\n`
    this.socket.write(`${text}\r\n`)
    if (head.length > 0) this.socket.write(head)
    if (this.head.length > 0) backend.write(this.head)
    backend.on('error', () => this.destroy())
    backend.on('close', () => this.destroy())
    this.socket.pipe(backend)
    backend.pipe(this.socket)
  }

  onHead (status: number, headers: RawHeaders, _flow: FlowControl, statusText?: string): void {
    if (this.ended) return
    if (!validStatus(status)) { this.refuse(new ProxyError('ERR_BAD_RESPONSE', `status ${status}`)); return }
    const out = filterResponseHeaders(headers, status, null, this.httpVersion)
    let text = `HTTP/1.1 ${status} ${statusText ?? STATUS_CODES[status] ?? ''}\r\n`
    for (let i = 0; i < out.length; i += 2) {
      const lower = out[i].toLowerCase()
      if (lower === 'content-length' || lower === 'transfer-encoding') continue
      text += `${out[i]}: ${out[i + 1]}\r\n`
    }
    // The body length is not known here: frame it by closing the connection.
    this.socket.write(`${text}connection: close\r\n\r\n`)
  }

  onData (chunk: Buffer): boolean {
    if (!this.ended) this.socket.write(chunk)
    return true
  }

  onEnd (): void {
    this.socket.end()
    this.finish()
  }

  onError (err: ProxyError): void {
    if (this.ended) return
    if (err.retryable && this.backend !== null) this.route.pool.connectFailed(this.backend, err.code)
    this.refuse(err)
  }

  private refuse (err: ProxyError): void {
    if (this.ended) return
    if (this.socket.writable) {
      const status = err.status
      const retry = status === 503 ? `retry-after: ${this.route.pool.retryAfterSeconds()}\r\n` : ''
      this.socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nconnection: close\r\n${retry}content-length: 0\r\n\r\n`)
    }
    if (err.code !== 'ERR_CLIENT_ABORTED') this.rt.log.warn({ code: err.code, route: this.routeName, url: this.url }, `upgrade failed: ${err.message}`)
    this.finish()
  }

  private readonly onClientGone = (): void => { this.destroy() }

  destroy (): void {
    this.backendSocket?.destroy()
    this.socket.destroy()
    if (!this.ac.signal.aborted) this.ac.abort()
    this.finish()
  }

  private finish (): void {
    if (this.ended) return
    this.ended = true
    if (this.backend !== null) { this.route.pool.finished(this.backend); this.backend = null }
    if (this.admitted) { this.admitted = false; this.route.admission.release() }
    this.done?.()
  }
}
