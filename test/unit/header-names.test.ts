/**
 * Header names compared without lower-case copies (src/core/headers.ts sameName, isHopByHop): the
 * same answers as `toLowerCase()`, and the per-request passes over the request and response
 * fields (forwardRequestHeaders, filterResponseHeaders) make no lower-case copy of a name.
 */
import type { IncomingMessage } from 'node:http'
import t from 'tap'
import { HOP_BY_HOP, filterResponseHeaders, forwardRequestHeaders, isHopByHop, sameName, type ForwardOptions } from '../../src/core/headers.js'
import type { ClientInfo } from '../../src/core/types.js'

/** Every case spelling of an ASCII name (2^letters, capped). */
function spellings (lower: string): string[] {
  const out = new Set<string>([lower, lower.toUpperCase()])
  for (let mask = 0; mask < 64; mask++) {
    let s = ''
    for (let i = 0; i < lower.length; i++) s += (mask >> (i % 6)) & 1 ? lower[i].toUpperCase() : lower[i]
    out.add(s)
  }
  return [...out]
}

const NAMES = [
  ...HOP_BY_HOP, 'content-length', 'location', 'content-location', 'set-cookie', 'via', 'host', 'expect', 'forwarded',
  'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'content-type', 'date', 'x-a',
]
/** Names toLowerCase answers in ways ASCII folding alone would not, and near misses. */
const ODD = [
  '\u212Aeep-alive', // KELVIN SIGN: toLowerCase makes it `k`
  'Conne\u212Ation', 'te\u0130', '\u0130e', 'T\u00C9', 'connection\u00A0', '', 'x', 'connectio', 'connectionx',
  'keep\ralive', 'keep@alive', 'KEEP_ALIVE', 'Conn`ction', '@e', '`e', 'te\r', 'keep-alivE',
]

t.test('sameName and isHopByHop answer as toLowerCase does', async (t) => {
  let checked = 0
  for (const lower of NAMES) {
    for (const name of [...spellings(lower), ...ODD]) {
      for (const other of NAMES) {
        if (sameName(name, other) !== (name.toLowerCase() === other)) t.fail(`sameName(${JSON.stringify(name)}, ${other})`)
        checked++
      }
      if (isHopByHop(name) !== HOP_BY_HOP.has(name.toLowerCase())) t.fail(`isHopByHop(${JSON.stringify(name)})`)
    }
  }
  t.ok(isHopByHop('\u212Aeep-Alive'), 'the Kelvin sign spells keep-alive for toLowerCase, and here')
  t.notOk(isHopByHop('Keep\rAlive'), 'CR is not a folded hyphen')
  t.ok(checked > 1000)
})

/** Runs fn while recording the strings String.prototype.toLowerCase was called on. */
function lowerCased<T> (fn: () => T): { result: T, on: string[] } {
  const original = String.prototype.toLowerCase
  const on: string[] = []
  String.prototype.toLowerCase = function (this: string): string { on.push(String(this)); return original.call(this) }
  try {
    return { result: fn(), on }
  } finally {
    String.prototype.toLowerCase = original
  }
}

t.test('filterResponseHeaders: no lower-case copy of any name, the same fields out', async (t) => {
  const head = ['Content-Type', 'text/plain', 'Content-Length', '100', 'Date', 'x', 'Connection', 'keep-alive', 'Keep-Alive', 'timeout=5', 'Transfer-Encoding', 'chunked', 'X-A', '1']
  const { result, on } = lowerCased(() => filterResponseHeaders(head, 200, null, '1.1'))
  t.same(result, ['Content-Type', 'text/plain', 'Content-Length', '100', 'Date', 'x', 'X-A', '1'])
  const names = new Set(head.filter((_, i) => i % 2 === 0))
  t.same(on.filter((s) => names.has(s)), [], 'no field name was lower-cased')

  // With a prefix rewrite and Via: the mapped fields found in any case.
  const rw = { prefix: '/app/', upstreamPrefix: '/', backendAuthorities: ['b:1'], clientHost: 'c', via: 'pc' }
  const head2 = ['LOCATION', '/x', 'Content-location', 'http://b:1/y', 'SET-COOKIE', 'a=1; Path=/z', 'VIA', '1.0 up', 'Server', 's']
  const r2 = lowerCased(() => filterResponseHeaders(head2, 302, rw, '1.1'))
  t.same(r2.result, ['LOCATION', '/app/x', 'Content-location', '/app/y', 'SET-COOKIE', 'a=1; Path=/app/z', 'Server', 's', 'via', '1.0 up, 1.1 pc'])
  const names2 = new Set(head2.filter((_, i) => i % 2 === 0))
  t.same(r2.on.filter((s) => names2.has(s)), [], 'no field name was lower-cased')

  // The behaviours the copies gave: a 204's Content-Length, Connection-listed fields (these are
  // lower-cased: the listed names are a Set of lower-case names), a 101's upgrade fields kept.
  t.same(filterResponseHeaders(['CONTENT-LENGTH', '0', 'X', 'y'], 204, null, '1.1'), ['X', 'y'])
  t.same(filterResponseHeaders(['Connection', 'X-Drop', 'x-DROP', '1', 'X-Keep', '2'], 200, null, '1.1'), ['X-Keep', '2'])
  t.same(filterResponseHeaders(['\u212Aeep-Alive', '5', 'X', 'y'], 200, null, '1.1'), ['X', 'y'], 'a name toLowerCase folds to keep-alive is still dropped')
  t.same(filterResponseHeaders(['Connection', 'Upgrade', 'UPGRADE', 'websocket'], 101, null, '1.1'), ['Connection', 'Upgrade', 'UPGRADE', 'websocket'])
})

t.test('forwardRequestHeaders: no lower-case copy of any name, the same fields out', async (t) => {
  const raw = ['Host', 'a.example', 'User-Agent', 'ua', 'Accept', '*/*', 'X-Forwarded-For', '10.0.0.1', 'X-FORWARDED-PROTO', 'https', 'x-Forwarded-Host', 'evil', 'EXPECT', '100-continue', 'Keep-Alive', '5', 'Connection', 'keep-alive', 'Via', '1.0 a', 'Forwarded', 'for=x', 'X_Forwarded_Host', 'evil2']
  const req = {
    rawHeaders: raw,
    headers: { host: 'a.example', connection: 'keep-alive', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil' },
    httpVersion: '1.1',
  } as unknown as IncomingMessage
  const client: ClientInfo = { address: '192.0.2.1', port: 1, localAddress: '127.0.0.1', localPort: 2, secure: false }
  const opts: ForwardOptions = { host: 'preserve', xForwarded: true, forwarded: true, via: 'pc', peerTrusted: false }
  const { result, on } = lowerCased(() => forwardRequestHeaders(req, client, '192.0.2.1', opts, false))
  t.same(result, [
    'Host', 'a.example', 'User-Agent', 'ua', 'Accept', '*/*',
    'x-forwarded-for', '10.0.0.1, 192.0.2.1', 'x-forwarded-proto', 'http', 'x-forwarded-host', 'a.example',
    'forwarded', 'for=192.0.2.1;proto=http;host=a.example', 'via', '1.0 a, 1.1 pc',
  ])
  const names = new Set(raw.filter((_, i) => i % 2 === 0))
  t.same(on.filter((s) => names.has(s)), [], 'no field name was lower-cased')

  // A trusted peer's X-Forwarded-Proto/Host are kept, in the client's spelling.
  const trusted = forwardRequestHeaders(req, client, '192.0.2.1', { ...opts, forwarded: false, via: '', peerTrusted: true }, false)
  t.same(trusted.slice(0, 10), ['Host', 'a.example', 'User-Agent', 'ua', 'Accept', '*/*', 'X-FORWARDED-PROTO', 'https', 'x-Forwarded-Host', 'evil'])
  t.same(trusted.slice(10), ['Via', '1.0 a', 'Forwarded', 'for=x', 'x-forwarded-for', '10.0.0.1, 192.0.2.1'])
})
