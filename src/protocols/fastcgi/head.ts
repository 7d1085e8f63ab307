/**
 * The CGI response head at the start of FCGI_STDOUT (RFC 3875 §6; FastCGI 1.0 §6.1: "Role protocols
 * do not support the non-parsed header feature of CGI"). The client talks to it through
 * `HeadParser`, the shape of the shared core parser planned at `src/core/cgi/response-head.ts`;
 * this is the adapter's own implementation of that shape, kept until the shared one is in place.
 */
import { ProxyError } from '../../core/errors.js'
import type { RawHeaders } from '../../core/types.js'

export interface CgiHead {
  status: number
  statusText?: string
  /** Flat raw list: [name, value, ...]. `Status` is consumed; a client-redirect `Location` stays. */
  headers: RawHeaders
  /** RFC 3875 §6.2.2 local redirect: a `Location` path without a Status line. */
  localRedirect?: string
}

export type HeadResult =
  | { done: false }
  | { done: true, head: CgiHead, rest: Buffer }
  | { error: ProxyError }

export interface HeadParser {
  push (chunk: Buffer): HeadResult
}

// RFC 9110 §5.6.2 token
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
// RFC 9110 §5.5: no CR, LF or NUL in a field value (response splitting, RELIABILITY §2.3)
const BAD_VALUE = /[\0\r\n]/

export class CgiResponseParser implements HeadParser {
  private readonly maxHeadSize: number
  private parts: Buffer[] = []
  private size = 0

  constructor (opts: { maxHeadSize: number }) {
    this.maxHeadSize = opts.maxHeadSize
  }

  push (chunk: Buffer): HeadResult {
    // Search only the new bytes plus the 3 before them for the blank line.
    const from = Math.max(0, this.size - 3)
    this.parts.push(chunk)
    this.size += chunk.length
    const buf = this.parts.length === 1 ? chunk : Buffer.concat(this.parts, this.size)
    this.parts = [buf]
    const end = findBlankLine(buf, from)
    if (end === null) {
      if (this.size > this.maxHeadSize) return { error: new ProxyError('ERR_RESPONSE_HEAD_TOO_LARGE', `over ${this.maxHeadSize} bytes`, { phase: 'head' }) }
      return { done: false }
    }
    if (end.headEnd > this.maxHeadSize) return { error: new ProxyError('ERR_RESPONSE_HEAD_TOO_LARGE', `${end.headEnd} bytes, limit ${this.maxHeadSize}`, { phase: 'head' }) }
    const parsed = parseHead(buf.toString('latin1', 0, end.headEnd))
    if ('error' in parsed) return parsed
    return { done: true, head: parsed, rest: buf.subarray(end.bodyStart) }
  }
}

/** RFC 3875 §6.3: lines end in LF (CRLF accepted); the head ends at the first empty line. */
function findBlankLine (buf: Buffer, from: number): { headEnd: number, bodyStart: number } | null {
  let i = buf.indexOf(10, from)
  while (i !== -1) {
    if (i === 0) return { headEnd: 0, bodyStart: 1 }
    if (buf[i - 1] === 10) return { headEnd: i - 1, bodyStart: i + 1 }
    if (buf[i - 1] === 13 && i >= 2 && buf[i - 2] === 10) return { headEnd: i - 2, bodyStart: i + 1 }
    if (i === 1 && buf[0] === 13) return { headEnd: 0, bodyStart: 2 }
    i = buf.indexOf(10, i + 1)
  }
  return null
}

function parseHead (text: string): CgiHead | { error: ProxyError } {
  const headers: RawHeaders = []
  let status: number | null = null
  let statusText: string | undefined
  let location: string | undefined
  const lines = text.length === 0 ? [] : text.split('\n')
  for (let line of lines) {
    if (line.endsWith('\r')) line = line.slice(0, -1)
    const colon = line.indexOf(':')
    const name = colon > 0 ? line.slice(0, colon) : ''
    // An obs-fold continuation or a nameless line is not a header (RFC 9112 §5.2).
    if (!TOKEN.test(name)) return { error: badHeader(`malformed CGI response header line ${JSON.stringify(line.slice(0, 80))}`) }
    const value = line.slice(colon + 1).trim()
    if (BAD_VALUE.test(value)) return { error: badHeader(`forbidden byte in ${name}`) }
    const lower = name.toLowerCase()
    if (lower === 'status') {
      // RFC 3875 §6.3.3 Status = "Status:" status-code SP reason-phrase
      const m = /^([1-9]\d\d)(?:\s+(.*))?$/.exec(value)
      if (m === null || status !== null) return { error: badHeader(`bad Status ${JSON.stringify(value.slice(0, 80))}`) }
      status = Number(m[1])
      if (m[2]) statusText = m[2]
      continue
    }
    if (lower === 'location') location = value
    headers.push(name, value)
  }
  // RFC 3875 §6.2.2 local redirect: an abs-path Location and nothing that makes it a document.
  if (location !== undefined && location.startsWith('/') && !location.startsWith('//') && status === null) {
    return { status: 200, headers, localRedirect: location }
  }
  // RFC 3875 §6.2.3 client redirect: Location with an absolute URI implies 302.
  const head: CgiHead = { status: status ?? (location !== undefined ? 302 : 200), headers }
  if (statusText !== undefined) head.statusText = statusText
  return head
}

function badHeader (detail: string): ProxyError {
  return new ProxyError('ERR_BAD_RESPONSE_HEADER', detail, { phase: 'head' })
}
