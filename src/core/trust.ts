/**
 * Trusted proxies (nginx realip with real_ip_recursive, lighttpd mod_extforward): the client address
 * is the socket peer unless the peer is trusted; then ONE configured header (X-Forwarded-For by
 * default, nginx `real_ip_header`, lighttpd `extforward.headers`) is walked right to left, trusted
 * hops skipped, and the first untrusted entry is the client. An invalid entry stops the walk.
 * Nothing is ever taken from a header by default (RELIABILITY §2.8).
 *
 * Only one header: a front proxy that appends X-Forwarded-For (nginx `$proxy_add_x_forwarded_for`)
 * passes a client's own `Forwarded` through untouched, so believing whichever header is present
 * would let that client pick its address.
 */
import type Address from 'ipaddr.js'
import { lazy } from '../lazy.js'

type IP = Address.IPv4 | Address.IPv6

// CommonJS, so through `require` (src/lazy.ts says why), at the first trusted-proxy list.
const ipaddr = lazy<typeof Address>('ipaddr.js')

export class TrustedProxies {
  private readonly ranges: Array<[IP, number]>

  /**
   * @param header where a trusted peer's client chain is read (`forwardedChain`); the other
   * header is never believed.
   */
  constructor (list: readonly string[], readonly header: ForwardedHeader = 'x-forwarded-for') {
    this.ranges = list.flatMap((entry) => {
      if (entry.includes('/')) return rangesOf(ipaddr().parseCIDR(entry))
      const addr = ipaddr().parse(entry)
      return rangesOf([addr, addr.kind() === 'ipv4' ? 32 : 128])
    })
  }

  get empty (): boolean { return this.ranges.length === 0 }

  has (address: string): boolean {
    if (this.ranges.length === 0) return false
    let addr: IP
    try { addr = normalize(ipaddr().parse(address)) } catch { return false }
    for (const [range, bits] of this.ranges) {
      if (addr.kind() === range.kind() && addr.match(range, bits)) return true
    }
    return false
  }

  /**
   * The real client address given the peer and the forwarding chain (left = oldest). Returns the
   * peer when it is not trusted.
   */
  resolve (peer: string, chain: readonly string[]): string {
    if (!this.has(peer)) return peer
    let client = peer
    for (let i = chain.length - 1; i >= 0; i--) {
      const hop = canonicalHop(chain[i])
      if (hop === null) break
      client = hop
      if (!this.has(hop)) break
    }
    return client
  }
}

/**
 * A chain entry as an address in its canonical form (`2001:DB8:0::1` is `2001:db8::1`, an
 * IPv4-mapped one plain IPv4), or null unless it is written as a proxy writes one: dotted-quad
 * IPv4 or IPv6. ipaddr.js's `isValid` also takes inet_aton's forms (`3221225985`, `0300.0.2.1`,
 * `127.1`), which were handed on raw as REMOTE_ADDR; nginx realip stops at them, and so does the walk.
 */
function canonicalHop (hop: string): string | null {
  const lib = ipaddr()
  if (!lib.IPv4.isValidFourPartDecimal(hop) && !lib.IPv6.isValid(hop)) return null
  try { return normalize(lib.parse(hop)).toString() } catch { return null }
}

/**
 * A list entry in the form `has` compares: peers and hops are looked up as plain IPv4 when they are
 * IPv4-mapped (`::ffff:10.0.0.5`, as a dual-stack socket reports them), so a mapped entry is kept
 * as the IPv4 range it covers (`::ffff:10.0.0.0/104` is `10.0.0.0/8`). Kept as written, a mapped
 * entry never matched: the load balancer it names was not trusted (nor a status `allow` entry
 * allowed). A wider IPv6 range (`::/0`) is left alone: it never reaches IPv4 peers.
 */
function rangesOf ([addr, bits]: [IP, number]): Array<[IP, number]> {
  if (addr.kind() !== 'ipv6') return [[addr, bits]]
  const v6 = addr as Address.IPv6
  if (bits >= 96 && v6.isIPv4MappedAddress()) return [[v6.toIPv4Address(), bits - 96]]
  return [[addr, bits]]
}

function normalize (a: IP): IP {
  return a.kind() === 'ipv6' && (a as Address.IPv6).isIPv4MappedAddress() ? (a as Address.IPv6).toIPv4Address() : a
}

/** The one header a trusted peer's client chain is read from. */
export type ForwardedHeader = 'x-forwarded-for' | 'forwarded'

/**
 * Addresses of the chain in `header` (left = oldest): `X-Forwarded-For: a, b` or
 * `Forwarded: for=a, for="[b]:1"`. The other header is ignored.
 */
export function forwardedChain (xff: string | undefined, forwarded: string | undefined, header: ForwardedHeader = 'x-forwarded-for'): string[] {
  if (header === 'forwarded') {
    if (forwarded === undefined) return []
    const out: string[] = []
    for (const element of forwarded.split(',')) {
      for (const pair of element.split(';')) {
        const eq = pair.indexOf('=')
        if (eq < 0 || pair.slice(0, eq).trim().toLowerCase() !== 'for') continue
        let v = pair.slice(eq + 1).trim()
        if (v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1)
        if (v.startsWith('[')) v = v.slice(1, v.indexOf(']'))
        else if (v.includes(':') && v.indexOf(':') === v.lastIndexOf(':')) v = v.slice(0, v.indexOf(':'))
        out.push(v)
      }
    }
    return out
  }
  if (xff === undefined) return []
  return xff.split(',').map((s) => s.trim()).filter((s) => s.length > 0)
}

/**
 * Whether the hop next to a trusted peer was HTTPS: the rightmost `X-Forwarded-Proto` value (the one
 * our peer appended; the left part may be the client's own), or with `forwarded` the `proto=` of the
 * rightmost `Forwarded` element. Null when the header says nothing.
 */
export function forwardedSecure (xfp: string | undefined, forwarded: string | undefined, header: ForwardedHeader = 'x-forwarded-for'): boolean | null {
  if (header === 'forwarded') {
    if (forwarded === undefined) return null
    const last = forwarded.slice(forwarded.lastIndexOf(',') + 1)
    for (const pair of last.split(';')) {
      const eq = pair.indexOf('=')
      if (eq > 0 && pair.slice(0, eq).trim().toLowerCase() === 'proto') return pair.slice(eq + 1).trim().replace(/^"|"$/g, '').toLowerCase() === 'https'
    }
    return null
  }
  if (xfp === undefined) return null
  return xfp.slice(xfp.lastIndexOf(',') + 1).trim().toLowerCase() === 'https'
}

/** `::ffff:127.0.0.1` -> `127.0.0.1`, as CGI scripts and logs expect. */
export function plainAddress (a: string | undefined): string {
  if (a === undefined) return ''
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a
}
