/**
 * Backend addresses: `host:port`, `[v6]:port`, `unix:/path` (a bare absolute path is a unix socket
 * too, as in lighttpd's `socket`). Parsed once at load; `id` is the display form used in logs,
 * metrics and the status page.
 */
import { isIP } from 'node:net'
import type { Endpoint } from './types.js'

export class AddressError extends Error {
  constructor (readonly input: string, reason: string) {
    super(`invalid address ${JSON.stringify(input)}: ${reason}`)
    this.name = 'AddressError'
  }
}

/**
 * A DNS host name (RFC 1123 labels; `_` too, as Docker and Compose service names have it),
 * optionally fully qualified with a final dot.
 */
const HOST_NAME = /^(?=.{1,253}\.?$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i

export function parseEndpoint (input: string): Endpoint {
  const s = input.trim()
  if (s.startsWith('unix:')) return unixEndpoint(s.slice(5), input)
  if (s.startsWith('/')) return unixEndpoint(s, input)
  // nginx's proxy_pass habit: a URL, not an address.
  const url = /^[a-z][a-z0-9+.-]*:\/\//i.exec(s)
  if (url !== null) throw new AddressError(input, prefixReason(url[0]))
  let host: string
  let portText: string
  if (s.startsWith('[')) {
    const close = s.indexOf(']')
    if (close < 0 || s[close + 1] !== ':') throw new AddressError(input, 'expected [v6]:port')
    host = s.slice(1, close)
    if (isIP(host) !== 6) throw new AddressError(input, 'not an IPv6 address inside [...]')
    portText = s.slice(close + 2)
  } else {
    const colon = s.lastIndexOf(':')
    if (colon <= 0) throw new AddressError(input, 'expected host:port, [v6]:port or unix:/path')
    host = s.slice(0, colon)
    if (host.includes(':')) {
      if (isIP(host) === 6) throw new AddressError(input, 'IPv6 addresses need brackets: [::1]:port')
      const prefix = /^[a-z][a-z0-9+.-]*:/i.exec(host)
      throw new AddressError(input, prefix !== null ? prefixReason(prefix[0]) : 'expected host:port, [v6]:port or unix:/path')
    }
    // Whatever else is before the last ':' would load and fail each connect (a DNS lookup of
    // `my host` or `user@h`), and http's URL parser would read `user@h` as h: refused here.
    if (isIP(host) === 0 && !HOST_NAME.test(host)) throw new AddressError(input, `${JSON.stringify(host)} is not an IP address or a host name (letters, digits, "-" and "_", dot-separated labels of at most 63, 253 in all)`)
    portText = s.slice(colon + 1)
  }
  if (!/^\d{1,5}$/.test(portText)) throw new AddressError(input, 'port must be a number')
  const port = Number(portText)
  if (port < 1 || port > 65535) throw new AddressError(input, 'port must be 1-65535')
  const id = isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`
  return { kind: 'tcp', host, port, id }
}

function prefixReason (prefix: string): string {
  return `no "${prefix}" prefix: write host:port, [v6]:port or unix:/path (the route's protocol says how to talk to it)`
}

function unixEndpoint (path: string, input: string): Endpoint {
  if (!path.startsWith('/')) throw new AddressError(input, 'unix socket path must be absolute')
  if (path.includes('\0')) throw new AddressError(input, 'NUL in path')
  // sun_path is 108 bytes on Linux including the terminating NUL.
  if (Buffer.byteLength(path) > 107) throw new AddressError(input, 'unix socket path longer than 107 bytes')
  return { kind: 'unix', path, id: `unix:${path}` }
}
