/**
 * Send exactly `total` request-body bytes into a sink (a backend socket, a CGI's stdin), pausing
 * the source while the sink is full. Used by adapters that frame the body by CONTENT_LENGTH (SCGI,
 * CGI): bytes past it are never sent, and a body that ends short fails the exchange.
 */
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
  const onEnd = (): void => {
    stop()
    if (sent < total) opts.onFail(new ProxyError('ERR_CLIENT_ABORTED', `request body ended at ${sent} of ${total} bytes`, { phase: 'request' }))
  }
  const onError = (err: Error): void => {
    stop()
    opts.onFail(new ProxyError('ERR_CLIENT_ABORTED', 'request body failed', { cause: err, phase: 'request' }))
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
