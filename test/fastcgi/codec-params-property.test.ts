/**
 * fast-check properties (time-boxed): encodeRequestHead and encodeGetValues give, byte for byte,
 * what a plain spec encoder written here gives (FastCGI 1.0 §3.3 records padded to 8 unless that
 * passes 65535, §3.4 name-value pairs, names and values as UTF-8 (escaped header bytes as themselves), a pair never split across
 * records, every record ≤ 65535 content bytes), and throw the same error (code and message) for
 * what FastCGI cannot carry: an empty name, a NUL, a pair over MAX_PAIR. Environments mix realistic
 * 7-bit CGI variables with non-ASCII text, lone surrogates, NUL, empty values, and lengths at the
 * 127/128 prefix boundary, at MAX_PAIR and past 65535 in total (several records), so the 7-bit
 * fast path, its fall-back to the general encoder, and its scratch buffer growing and shrinking
 * are all taken.
 */
import t from 'tap'
import fc from 'fast-check'
import { MAX_PAIR, Role, encodeGetValues, encodeRequestHead } from '../../src/protocols/fastcgi/codec.js'
import { ProxyError } from '../../src/core/errors.js'

const budget = { numRuns: 400, interruptAfterTimeLimit: 6000 }

function header (type: number, id: number, len: number, pad: number): Buffer {
  return Buffer.from([1, type, id >> 8, id & 0xff, len >> 8, len & 0xff, pad, 0])
}

function lengthBytes (n: number): Buffer {
  if (n <= 127) return Buffer.from([n])
  const b = Buffer.alloc(4)
  b.writeUInt32BE((n | 0x80000000) >>> 0)
  return b
}

/**
 * Text as the wire carries it: UTF-8, except a lone U+DC80-U+DCFF, a request header byte that was
 * not UTF-8 (src/core/cgi/env.ts headerText), which is that one byte again.
 */
function wireBytes (s: string): Buffer {
  const out: Buffer[] = []
  let from = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    const prev = i > 0 ? s.charCodeAt(i - 1) : 0
    if (c >= 0xdc80 && c <= 0xdcff && !(prev >= 0xd800 && prev <= 0xdbff)) {
      out.push(Buffer.from(s.slice(from, i), 'utf8'), Buffer.from([c & 0xff]))
      from = i + 1
    }
  }
  out.push(Buffer.from(s.slice(from), 'utf8'))
  return Buffer.concat(out)
}

/** The spec, the slow and obvious way: every own enumerable key in order. */
function specRecords (type: number, id: number, params: Record<string, string>): Buffer {
  const contents: Buffer[] = []
  let cur: Buffer[] = []
  let curLen = 0
  for (const name of Object.keys(params)) {
    const value = params[name]
    if (name === '' || name.includes('\0') || value.includes('\0')) {
      throw new ProxyError('ERR_BAD_HEADER_VALUE', `FastCGI parameter ${JSON.stringify(name.slice(0, 64))} is empty or contains NUL`)
    }
    const n = wireBytes(name)
    const v = wireBytes(value)
    const pair = Buffer.concat([lengthBytes(n.length), lengthBytes(v.length), n, v])
    if (pair.length > MAX_PAIR) {
      throw new ProxyError('ERR_BAD_HEADER_VALUE', `FastCGI parameter ${JSON.stringify(name.slice(0, 64))} is ${pair.length} bytes, over the ${MAX_PAIR}-byte record limit`)
    }
    if (curLen + pair.length > 65535) { contents.push(Buffer.concat(cur)); cur = []; curLen = 0 }
    cur.push(pair)
    curLen += pair.length
  }
  if (curLen > 0) contents.push(Buffer.concat(cur))
  const out: Buffer[] = []
  for (const c of contents) {
    let pad = (8 - (c.length % 8)) % 8
    if (c.length + pad > 65535) pad = 0
    out.push(header(type, id, c.length, pad), c, Buffer.alloc(pad))
  }
  return Buffer.concat(out)
}

function specHead (id: number, role: number, keepConn: boolean, params: Record<string, string>, endStdin: boolean): Buffer {
  return Buffer.concat([
    header(1, id, 8, 0), Buffer.from([role >> 8, role & 0xff, keepConn ? 1 : 0, 0, 0, 0, 0, 0]),
    specRecords(4, id, params),
    header(4, id, 0, 0),
    endStdin ? header(5, id, 0, 0) : Buffer.alloc(0),
  ])
}

/** Run both; the same bytes, or the same error. */
function outcome (f: () => Buffer): Buffer | { code: string, message: string } {
  try {
    return f()
  } catch (err) {
    if (!(err instanceof ProxyError)) throw err
    return { code: err.code, message: err.message }
  }
}

const cgiName = fc.stringMatching(/^[A-Z][A-Z0-9_]{0,30}$/)
const asciiText = fc.string({ unit: 'binary-ascii', maxLength: 200 }).filter((s) => !s.includes('\0'))
const anyText = fc.string({ unit: 'binary', maxLength: 60 }) // any code point, NUL and surrogates included
const utf16 = fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength: 20 })
// Lengths where the prefix grows (127/128) and where a pair with a 1-byte name reaches MAX_PAIR
// (1 + 4 + 1 + 65529 = 65535), in a 1-byte and a 2-byte UTF-8 character.
const longText = fc.tuple(
  fc.constantFrom(0, 1, 126, 127, 128, 129, 255, 256, 30000, 65527, 65528, 65529, 65530, 65531, 32764, 32765),
  fc.constantFrom('v', 'é', '\u20ac'),
  fc.option(fc.constantFrom('\0', 'é', 'x', '\ud800'), { nil: undefined }),
).map(([n, ch, tail]) => ch.repeat(ch === 'v' ? n : Math.floor(n / 2)) + (tail ?? ''))

const name = fc.oneof(
  { weight: 6, arbitrary: cgiName },
  { weight: 1, arbitrary: anyText },
  { weight: 1, arbitrary: utf16 },
  { weight: 1, arbitrary: fc.constantFrom('', 'N'.repeat(127), 'N'.repeat(128), 'Ñ'.repeat(64), '__proto__', '0', '12', 'constructor') },
)
const value = fc.oneof(
  { weight: 6, arbitrary: asciiText },
  { weight: 1, arbitrary: anyText },
  { weight: 1, arbitrary: utf16 },
  { weight: 1, arbitrary: fc.constant('') },
  { weight: 1, arbitrary: longText },
)
const envArb = fc.tuple(fc.array(fc.tuple(name, value), { maxLength: 40 }), fc.boolean()).map(([pairs, nullProto]) => {
  const env: Record<string, string> = nullProto ? Object.create(null) : {}
  for (const [k, v] of pairs) {
    if (k === '__proto__' && !nullProto) Object.defineProperty(env, k, { value: v, enumerable: true, writable: true, configurable: true })
    else env[k] = v
  }
  return env
})

t.test('encodeRequestHead: the same bytes or the same error as the spec encoder', async (t) => {
  const seen = { ascii: 0, unicode: 0, refused: 0 }
  fc.assert(fc.property(envArb, fc.integer({ min: 0, max: 0xffff }), fc.boolean(), fc.boolean(), (env, id, keep, endStdin) => {
    const got = outcome(() => encodeRequestHead(id, Role.RESPONDER, keep, env, endStdin))
    const want = outcome(() => specHead(id, Role.RESPONDER, keep, env, endStdin))
    if (Buffer.isBuffer(got) && Buffer.isBuffer(want)) {
      seen[/[^\x01-\x7f]/.test(Object.keys(env).join('') + Object.values(env).join('')) ? 'unicode' : 'ascii']++
      return got.equals(want)
    }
    seen.refused++
    return !Buffer.isBuffer(got) && !Buffer.isBuffer(want) && got.code === want.code && got.message === want.message
  }), budget)
  // Each path was taken: 7-bit (fast), UTF-8 (general), and a refusal.
  t.ok(seen.ascii > 20 && seen.unicode > 20 && seen.refused > 20, JSON.stringify(seen))
})

t.test('plain 7-bit environments past 65535 bytes: several records, scratch grown then shrunk', async (t) => {
  const big = fc.array(fc.tuple(cgiName, fc.constantFrom(0, 1000, 20000, 40000, 65000, 65500).map((n) => 'a'.repeat(n))), { minLength: 2, maxLength: 12 })
  let multi = 0
  fc.assert(fc.property(big, fc.array(fc.tuple(cgiName, asciiText), { maxLength: 30 }), (bigPairs, smallPairs) => {
    for (const pairs of [bigPairs, smallPairs]) {
      const env: Record<string, string> = Object.fromEntries(pairs)
      const got = outcome(() => encodeRequestHead(1, Role.RESPONDER, true, env, true))
      const want = outcome(() => specHead(1, Role.RESPONDER, true, env, true))
      if (!Buffer.isBuffer(got) || !Buffer.isBuffer(want) || !got.equals(want)) return false
      if (got.length > 16 + 65536 + 16) multi++
    }
    return true
  }), { numRuns: 60, interruptAfterTimeLimit: 6000 })
  t.ok(multi > 0, `${multi} heads spanned more than one PARAMS record`)
})

t.test('an inherited enumerable property is never encoded (fast and general path)', async (t) => {
  const proto = { PHP_VALUE: 'auto_prepend_file=/tmp/x' }
  for (const own of [{ SCRIPT_NAME: '/a.php' }, { SCRIPT_NAME: '/é.php' }]) {
    const env: Record<string, string> = Object.assign(Object.create(proto), own)
    t.same(encodeRequestHead(1, Role.RESPONDER, true, env, false), specHead(1, Role.RESPONDER, true, own, false))
  }
})

t.test('encodeGetValues: the same bytes as the spec encoder', async (t) => {
  let runs = 0
  fc.assert(fc.property(fc.array(fc.oneof(cgiName, fc.constantFrom('FCGI_MAX_CONNS', 'é', 'N'.repeat(200))), { maxLength: 10 }), (names) => {
    runs++
    const params: Record<string, string> = Object.create(null)
    for (const n of names) params[n] = ''
    return encodeGetValues(names).equals(specRecords(9, 0, params))
  }), budget)
  t.ok(runs > 20, `${runs} name lists compared`)
})
