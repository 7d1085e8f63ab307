/**
 * Send exactly `total` request-body bytes into a sink (a backend socket, a CGI's stdin), pausing
 * the source while the sink is full. Used by adapters that frame the body by CONTENT_LENGTH (SCGI,
 * CGI): bytes past it are never sent, and a body that ends short fails the exchange.
 */
import type { IncomingMessage } from 'node:http'
import type { Readable, Writable } from 'node:stream'
import { ProxyError } from './errors.js'

export interface BodyPump {
  /** Still sending (not finished, failed or stopped). */
  readonly active: boolean
  /** Stop listening (the exchange ended some other way). */
  stop (): void
}

export function pumpBody (body: Readable, total: number, sink: Writable, opts: { endSink: boolean, onFail: (err: ProxyError) => void }): BodyPump {
  let sent = 0
  let active = true
  const onDrain = (): void => { body.resume() }
  const onChunk = (chunk: Buffer): void => {
    const part = chunk.length > total - sent ? chunk.subarray(0, total - sent) : chunk
    sent += part.length
    if (!sink.write(part)) body.pause()
    if (sent === total) {
      stop()
      if (opts.endSink) sink.end()
    }
  }
  // A client whose body stops short of its Content-Length fails the request stream ('aborted'),
  // it never ends it: a clean end before `total` can only be a source of ours (a spooled body),
  // so it is our fault, and the client, still connected, must get an answer.
  const onEnd = (): void => {
    stop()
    if (sent < total) opts.onFail(new ProxyError('ERR_INTERNAL', `request body source ended at ${sent} of ${total} bytes`, { phase: 'request' }))
  }
  // A source that fails with a code of its own (a spooled body) keeps it; the client's stream
  // failing means the client went away.
  const onError = (err: Error): void => {
    stop()
    opts.onFail(err instanceof ProxyError ? err : new ProxyError('ERR_CLIENT_ABORTED', 'request body failed', { cause: err, phase: 'request' }))
  }
  const stop = (): void => {
    if (!active) return
    active = false
    body.off('data', onChunk)
    body.off('end', onEnd)
    body.off('error', onError)
    sink.off('drain', onDrain)
    sink.off('close', stop)
  }
  sink.on('drain', onDrain)
  sink.once('close', stop)
  body.on('data', onChunk)
  body.once('end', onEnd)
  body.once('error', onError)
  body.resume()
  return { get active () { return active }, stop }
}

/**
 * The bounds of discardBody as the core uses them (src/core/exchange.ts discardUnreadBody, with
 * the route's maxBodySize when smaller; runtime.ts refuse): an unread request body is read and
 * dropped up to this many bytes and for this long (nginx's lingering_time), then the connection is
 * closed instead: past that, closing costs the client less than sending the rest for nothing.
 */
export const DISCARD_MAX_BYTES = 16 * 1024 * 1024
export const DISCARD_MAX_MS = 30_000

/**
 * Read the rest of a request body nobody wants any more, and drop it (nginx's
 * discard_request_body), so node:http goes on to the next request of the connection. Why not
 * just close the connection: closing a socket with unread bytes makes the kernel answer with a
 * reset, which can destroy the response before the client read it (the reason nginx lingers),
 * and once a response head went out keep-alive can no longer be taken back; the bytes dropped
 * are the ones the client sends anyway. Bounded: past `maxBytes` more, or `maxMs`, the
 * connection is closed after all. Nothing to do when the body ended or the client is gone.
 *
 * It reads with 'readable' + read(), not by resuming the flow: a consumer that let go of the
 * body with a 'readable' listener still attached (an async iterator) would keep resume() from
 * doing anything.
 */
export function discardBody (req: IncomingMessage, maxBytes: number, maxMs: number): void {
  if (req.complete || req.destroyed || req.socket.destroyed) return
  const socket = req.socket
  let left = maxBytes
  // A request node has already dumped (its response ended before anyone read it) passes its body
  // bytes to nobody: read() counts nothing, and only the socket's own counter shows them.
  const start = socket.bytesRead
  const watch = setInterval(() => { if (socket.bytesRead - start > maxBytes) giveUp() }, 20)
  watch.unref()
  const done = (): void => {
    clearTimeout(timer)
    clearInterval(watch)
    req.off('readable', drain)
    req.off('end', done)
    socket.off('close', done)
  }
  const giveUp = (): void => { done(); socket.destroy() }
  const drain = (): void => {
    for (let chunk = req.read() as Buffer | null; chunk !== null; chunk = req.read() as Buffer | null) {
      left -= chunk.length
      if (left < 0) { giveUp(); return }
    }
  }
  const timer = setTimeout(giveUp, maxMs)
  timer.unref() // the socket keeps the process alive while it is open; this timer need not
  req.unpipe()
  req.on('readable', drain)
  req.once('end', done)
  socket.once('close', done)
}

/**
 * nginx's lingering close, for a connection that ends after this response (the client sent
 * `Connection: close`, HTTP/1.0, or the proxy decided to close) while the client is still sending
 * a request body nobody reads. node:http ends such a socket with destroySoon(): FIN, then close(2)
 * once the FIN is out. Bytes the client sends after that close make the kernel answer with a
 * reset, and a reset makes the client's kernel drop what it had not read yet: the response. A
 * client still uploading saw EPIPE instead of the 413 it had been sent (1 run in 40 under load).
 * Here the socket's destroySoon() sends the FIN as before, then keeps reading (discardBody drops
 * the bytes, within its byte and time bounds) and closes only once the body has ended or the
 * client closed its side. Called before the response ends; nothing changes for a body already
 * read or a connection kept alive.
 */
export function lingerOnClose (req: IncomingMessage): void {
  const socket = req.socket
  if (req.complete || socket.destroyed) return
  // The request whose response may end the connection: the latest one of the socket. Once
  // installed for a first request (answered early, its body dropped, the connection kept), the
  // override stays on the socket: it must judge by the request it closes after, not by that first
  // one (long complete), or a later upload answered early with `Connection: close` was closed at
  // its FIN and the rest of it met a reset.
  const installed = LINGERING.has(socket)
  LINGERING.set(socket, req)
  if (installed) return
  socket.destroySoon = function lingeringDestroySoon (this: typeof socket): void {
    const last = LINGERING.get(this) ?? req
    if (this.writable) this.end()
    let clientDone = false
    const close = (): void => {
      if (!this.destroyed && this.writableFinished && (clientDone || last.complete)) this.destroy()
    }
    const clientEnded = (): void => { clientDone = true; close() }
    this.once('finish', close)
    last.once('end', close)
    this.once('end', clientEnded)
    // A request node stopped reading (req.destroyed) is never read to its end: no reason to wait.
    if (last.destroyed) clientDone = true
    close()
  }
}

/** Sockets whose destroySoon lingers (lingerOnClose), with the last request that asked for it. */
const LINGERING = new WeakMap<IncomingMessage['socket'], IncomingMessage>()
