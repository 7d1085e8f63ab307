/**
 * The byte rule for header values on every CGI-family wire (docs/protocols/cgi.md "Header bytes"):
 * buildCgiEnv decodes valid UTF-8 and escapes every other byte (headerText), and the FastCGI PARAMS
 * and SCGI netstring encoders write each escaped byte back as itself, so the backend gets the bytes
 * the client sent. Pure: no process, no socket. The real peers: header-bytes-peers.test.ts.
 */
import t from 'tap'
import { buildCgiEnv, headerText, type CgiEnvInput } from '../../src/core/cgi/env.js'
import { envBytes, hasRawBytes } from '../../src/utf8.js'
import { decodePairs, encodeRequestHead, HEADER_LEN, RecordType, Role } from '../../src/protocols/fastcgi/codec.js'
import { encodeScgiHead } from '../../src/protocols/scgi/netstring.js'

const latin1 = (b: number[] | Buffer): string => Buffer.from(b).toString('latin1')

function env (value: number[] | Buffer, extra: Record<string, string> = {}): Record<string, string> {
  const input: CgiEnvInput = {
    method: 'GET', url: '/x', path: '/x', query: '', httpVersion: '1.1', headers: {},
    rawHeaders: ['Host', 'h', 'X-T', latin1(value)],
    client: { address: '127.0.0.1', port: 1, localAddress: '127.0.0.1', localPort: 2, secure: false },
    script: { filename: '/srv/x', name: '/x', pathInfo: '', docroot: '/srv' },
    serverSoftware: 'proxycore/test', contentLength: null, params: extra,
  }
  return buildCgiEnv(input)
}

/** The PARAMS stream of an encoded FastCGI request head, as name → value bytes (latin1 strings). */
function fastcgiParams (head: Buffer): Map<string, string> {
  const parts: Buffer[] = []
  let off = HEADER_LEN + 8 // BEGIN_REQUEST
  while (off + HEADER_LEN <= head.length) {
    const len = head.readUInt16BE(off + 4)
    if (head[off + 1] === RecordType.PARAMS) parts.push(head.subarray(off + HEADER_LEN, off + HEADER_LEN + len))
    off += HEADER_LEN + len + head[off + 6]
  }
  const pairs = decodePairs(Buffer.concat(parts))
  if (pairs === null) throw new Error('PARAMS do not decode')
  return pairs
}

/** The SCGI netstring's pairs as name → value bytes (latin1 strings). */
function scgiPairs (head: Buffer): Map<string, string> {
  const colon = head.indexOf(0x3a)
  const len = Number(head.toString('latin1', 0, colon))
  if (head.length !== colon + 1 + len + 1 || head[head.length - 1] !== 0x2c) throw new Error('bad netstring')
  const fields = head.toString('latin1', colon + 1, colon + 1 + len).split('\0')
  const out = new Map<string, string>()
  for (let i = 0; i + 1 < fields.length; i += 2) out.set(fields[i], fields[i + 1])
  return out
}

/** A small seeded PRNG (mulberry32): the same cases on every run. */
function rng (seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const CASES: number[][] = [
  [0xe9], [0xff], [0x63, 0x61, 0x66, 0xe9], [0xc3, 0xa9, 0xe9], [0xe2, 0x82], [0xe2, 0x82, 0xac, 0x80],
  [0xed, 0xa0, 0x80], // a UTF-8-encoded surrogate: not well-formed
  [0xf0, 0x9f, 0x92, 0xa9, 0xa9], [0xc0, 0xaf], [0xf4, 0x90, 0x80, 0x80], [0xf5], [0xdc, 0x80],
  Array.from({ length: 128 }, (_, i) => 0x80 + i),
  Array.from({ length: 300 }, (_, i) => 0x80 + (i % 128)), // over 127 bytes: 4-byte FastCGI length
]

t.test('headerText + envBytes give back every byte string; valid UTF-8 decodes as before', async (t) => {
  const next = rng(34)
  const samples = [...CASES]
  for (let i = 0; i < 2000; i++) {
    const n = Math.floor(next() * 12)
    // Mostly high bytes and UTF-8 lead/continuation bytes, so that near-valid sequences are common.
    samples.push(Array.from({ length: n }, () => next() < 0.2 ? 0x20 + Math.floor(next() * 0x5f) : 0x80 + Math.floor(next() * 0x80)))
  }
  let bad = 0
  for (const bytes of samples) {
    const text = headerText(latin1(bytes))
    if (!envBytes(text).equals(Buffer.from(bytes))) {
      if (bad++ < 5) t.fail(`bytes ${Buffer.from(bytes).toString('hex')} came back as ${envBytes(text).toString('hex')}`)
    }
    let utf8: string | null = null
    try { utf8 = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(bytes)) } catch {}
    if (utf8 !== null && text !== utf8) {
      if (bad++ < 5) t.fail(`valid UTF-8 ${Buffer.from(bytes).toString('hex')} is not decoded as text`)
    }
    if ((utf8 === null) !== hasRawBytes(text)) {
      if (bad++ < 5) t.fail(`${Buffer.from(bytes).toString('hex')}: hasRawBytes ${hasRawBytes(text)}`)
    }
  }
  t.equal(bad, 0, `${samples.length} byte strings round-trip`)
  t.equal(headerText(latin1([0x63, 0x61, 0x66, 0xc3, 0xa9])), 'café', 'UTF-8 is decoded to text, as before')
  t.equal(headerText('plain'), 'plain')
  // A paired surrogate (an astral char) is text, not an escaped byte: U+1F4A9 is D83D DCA9.
  t.notOk(hasRawBytes('\u{1f4a9}'))
  t.same(envBytes('\u{1f4a9}'), Buffer.from('\u{1f4a9}', 'utf8'))
})

t.test('FastCGI PARAMS carry the header bytes as sent', async (t) => {
  for (const bytes of CASES) {
    const e = env(bytes, { PATH_INFO: '/é' })
    const pairs = fastcgiParams(encodeRequestHead(1, Role.RESPONDER, true, e, true))
    t.equal(pairs.get('HTTP_X_T'), latin1(bytes), `${Buffer.from(bytes).toString('hex').slice(0, 40)}`)
    t.equal(pairs.get('PATH_INFO'), latin1(Buffer.from('/é', 'utf8')), 'Unicode text still goes as UTF-8')
    t.equal(pairs.get('HTTP_HOST'), 'h')
  }
  const utf8 = fastcgiParams(encodeRequestHead(1, Role.RESPONDER, true, env(Buffer.from('café €', 'utf8')), true))
  t.equal(utf8.get('HTTP_X_T'), latin1(Buffer.from('café €', 'utf8')), 'valid UTF-8 unchanged')
})

t.test('SCGI netstring carries the header bytes as sent', async (t) => {
  for (const bytes of CASES) {
    const pairs = scgiPairs(encodeScgiHead(env(bytes, { PATH_INFO: '/é' }), 0))
    t.equal(pairs.get('HTTP_X_T'), latin1(bytes), `${Buffer.from(bytes).toString('hex').slice(0, 40)}`)
    t.equal(pairs.get('PATH_INFO'), latin1(Buffer.from('/é', 'utf8')), 'Unicode text still goes as UTF-8')
  }
  const utf8 = scgiPairs(encodeScgiHead(env(Buffer.from('café €', 'utf8')), 0))
  t.equal(utf8.get('HTTP_X_T'), latin1(Buffer.from('café €', 'utf8')), 'valid UTF-8 unchanged')
})

t.test('Content-Type and joined same-name fields keep their bytes too', async (t) => {
  const e = buildCgiEnv({
    method: 'POST', url: '/x', path: '/x', query: '', httpVersion: '1.1', headers: {},
    rawHeaders: ['Host', 'h', 'Content-Type', 'text/plain; x=\xe9', 'X-A', '\xe9', 'X-A', '\xc3\xa9'],
    client: { address: '127.0.0.1', port: 1, localAddress: '127.0.0.1', localPort: 2, secure: false },
    script: { filename: '/srv/x', name: '/x', pathInfo: '', docroot: '/srv' },
    serverSoftware: 'proxycore/test', contentLength: 0,
  })
  const pairs = scgiPairs(encodeScgiHead(e, 0))
  t.equal(pairs.get('CONTENT_TYPE'), 'text/plain; x=\xe9')
  t.equal(pairs.get('HTTP_X_A'), '\xe9, \xc3\xa9', 'each field as sent, joined with ", "')
  t.equal(fastcgiParams(encodeRequestHead(1, Role.RESPONDER, true, e, false)).get('HTTP_X_A'), '\xe9, \xc3\xa9')
})
