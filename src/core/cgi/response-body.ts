/**
 * What every CGI-family adapter does once the head is parsed: hand it to the core (or signal a
 * local redirect), then frame the body. Shared so FastCGI, SCGI and CGI behave the same.
 *
 * Body framing (CVE-2024-24795, AC-43): a backend Content-Length is forwarded to the client, so it
 * must be true. Bytes past it are discarded (the client framing must never desync); EOF before it
 * is an error, so the core aborts the client connection instead of ending cleanly. Without a
 * Content-Length the body runs to EOF (RFC 3875 §6.4; SCGI closes to end a response).
 */
import { ProxyError } from '../errors.js'
import type { FlowControl, ResponseHandler } from '../types.js'
import type { CgiHead } from './response-head.js'

/** RFC 9110 §6.4.1 / §9.3.2: no content follows the head of a HEAD response, a 1xx, 204 or 304. */
export function isBodyless (method: string, status: number): boolean {
  return method === 'HEAD' || status < 200 || status === 204 || status === 304
}

export class CgiBodyFramer {
  private remaining: number | null

  constructor (contentLength: number | null) {
    this.remaining = contentLength
  }

  /** The framer for `head` answering a `method` request: complete at once when bodyless. */
  static forResponse (head: CgiHead, method: string): CgiBodyFramer {
    return new CgiBodyFramer(isBodyless(method, head.status) ? 0 : head.contentLength)
  }

  /** The body is complete by length (never true for an EOF-delimited body). */
  get complete (): boolean {
    return this.remaining === 0
  }

  /** The part of `chunk` that belongs to the body (possibly empty). */
  take (chunk: Buffer): Buffer {
    if (this.remaining === null) return chunk
    const data = chunk.length > this.remaining ? chunk.subarray(0, this.remaining) : chunk
    this.remaining -= data.length
    return data
  }

  /** The backend's output ended: null when the body is complete, else the error to report. */
  eof (): ProxyError | null {
    if (this.remaining === null || this.remaining === 0) return null
    return new ProxyError('ERR_BACKEND_CLOSED', `${this.remaining} bytes short of Content-Length`, { phase: 'body' })
  }
}

/**
 * Deliver a parsed head: a §6.2.2 local redirect goes to `handler.onLocalRedirect` when the core
 * takes it (the route enabled local redirects); otherwise the head goes to `onHead` as it is, a 302
 * with Location and the script's other fields (a login's Set-Cookie) and its body after it, as
 * lighttpd sends it. Returns 'redirect' when the adapter must discard the rest of the output.
 */
export function deliverCgiHead (head: CgiHead, handler: ResponseHandler, flow: FlowControl): 'redirect' | 'body' {
  if (head.localRedirect !== undefined && handler.onLocalRedirect !== undefined && handler.takesLocalRedirects?.() !== false) {
    handler.onLocalRedirect(head.localRedirect)
    return 'redirect'
  }
  handler.onHead(head.status, head.headers, flow, head.statusText)
  return 'body'
}
