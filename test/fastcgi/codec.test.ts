/**
 * Encoder golden vectors, written by hand from the FastCGI 1.0 spec (§3.3 header, §3.4 name-value
 * pairs, §4.1 GET_VALUES, §5.1 BEGIN_REQUEST, §5.4 ABORT_REQUEST, §6.2 STDIN).
 */
import t from 'tap'
import {
  MAX_CONTENT, Role, decodePairs, encodeAbortRequest, encodeGetValues, encodeRequestHead, paddingFor,
  setRequestId, stdinFraming,
} from '../../src/protocols/fastcgi/codec.js'
import { ProxyError } from '../../src/core/errors.js'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')

t.test('BEGIN_REQUEST + one PARAMS pair + terminators (responder, keep-conn, id 1)', async (t) => {
  const buf = encodeRequestHead(1, Role.RESPONDER, true, { A: 'b' }, true)
  t.same(buf, hex(`
    01 01 0001 0008 00 00   0001 01 0000000000
    01 04 0001 0004 04 00   01 01 41 62  00000000
    01 04 0001 0000 00 00
    01 05 0001 0000 00 00`))
})

t.test('BEGIN_REQUEST body: authorizer role, no keep-conn, id 0x1234; no STDIN terminator when the body streams', async (t) => {
  const buf = encodeRequestHead(0x1234, Role.AUTHORIZER, false, {}, false)
  t.same(buf, hex(`01 01 1234 0008 00 00  0002 00 0000000000   01 04 1234 0000 00 00`))
})

t.test('name-value lengths: 127 bytes uses 1 byte, 128 bytes uses 4 bytes with the high bit (§3.4)', async (t) => {
  const v127 = 'v'.repeat(127)
  const b127 = encodeRequestHead(1, Role.RESPONDER, true, { X: v127 }, false)
  // content = 1 + 1 + 1 + 127 = 130 -> 0x0082, padding 6
  t.same(b127.subarray(16, 16 + 8 + 3), hex('01 04 0001 0082 06 00  01 7f 58'))
  const v128 = 'v'.repeat(128)
  const b128 = encodeRequestHead(1, Role.RESPONDER, true, { X: v128 }, false)
  // content = 1 + 4 + 1 + 128 = 134 -> 0x0086, padding 2
  t.same(b128.subarray(16, 16 + 8 + 6), hex('01 04 0001 0086 02 00  01 80000080 58'))
  t.same(b128.subarray(16 + 8 + 6, 16 + 8 + 134), Buffer.from(v128))
  t.same(b128.subarray(16 + 8 + 134, 16 + 8 + 136), hex('0000'), 'padding is zeros')
  const name200 = 'N'.repeat(200)
  const bn = encodeRequestHead(1, Role.RESPONDER, true, { [name200]: '' }, false)
  t.same(bn.subarray(24, 29), hex('800000c8 00'), '200-byte name: 4-byte name length, 1-byte value length')
})

t.test('empty value is kept (QUERY_STRING set and empty)', async (t) => {
  const buf = encodeRequestHead(1, Role.RESPONDER, true, { QUERY_STRING: '' }, false)
  t.same(buf.subarray(16, 16 + 8 + 14), Buffer.concat([hex('01 04 0001 000e 02 00 0c 00'), Buffer.from('QUERY_STRING')]))
})

t.test('many pairs: records ≤ 65535 bytes, never splitting a pair, each record decodable on its own', async (t) => {
  const env: Record<string, string> = {}
  for (let i = 0; i < 40; i++) env[`HTTP_X_${i}`] = String(i).repeat(3000 / String(i).length)
  const buf = encodeRequestHead(7, Role.RESPONDER, true, env, true)
  let off = 16
  const seen = new Map<string, string>()
  let records = 0
  for (;;) {
    t.equal(buf[off], 1, 'version')
    const type = buf[off + 1]
    const len = buf.readUInt16BE(off + 4)
    const pad = buf[off + 6]
    t.equal(buf.readUInt16BE(off + 2), 7, 'request id')
    t.ok(len <= MAX_CONTENT && len + pad <= MAX_CONTENT, 'php: contentLength + padding ≤ 65535')
    if (type !== 4 || len === 0) break
    t.equal((len + pad) % 8, 0, 'padded to 8')
    const one = decodePairs(buf.subarray(off + 8, off + 8 + len))
    t.ok(one, 'record holds whole pairs only')
    for (const [k, v] of one!) seen.set(k, v)
    records++
    off += 8 + len + pad
  }
  t.ok(records >= 2, `split into ${records} records`)
  t.same([...seen], Object.entries(env))
})

t.test('largest pair fits one record without padding; one byte more is refused before any I/O', async (t) => {
  // 1 + 4 + 1 + 65529 = 65535
  const big = 'x'.repeat(65529)
  const buf = encodeRequestHead(1, Role.RESPONDER, true, { X: big }, false)
  t.same(buf.subarray(16, 24), hex('01 04 0001 ffff 00 00'))
  const err = t.throws(() => encodeRequestHead(1, Role.RESPONDER, true, { X: big + 'x' }, false)) as unknown as ProxyError
  t.equal(err.code, 'ERR_BAD_HEADER_VALUE')
})

t.test('NUL in a name or value is refused (§6.1)', async (t) => {
  for (const pair of [['A', 'b\0c'], ['A\0', 'b'], ['', 'b']] as Array<[string, string]>) {
    const err = t.throws(() => encodeRequestHead(1, Role.RESPONDER, true, { [pair[0]]: pair[1] }, false)) as unknown as ProxyError
    t.equal(err.code, 'ERR_BAD_HEADER_VALUE')
  }
})

t.test('UTF-8 values are length-counted in bytes', async (t) => {
  const buf = encodeRequestHead(1, Role.RESPONDER, true, { F: 'café' }, false)
  t.same(buf.subarray(16, 16 + 8 + 2 + 1 + 5), Buffer.concat([hex('01 04 0001 0008 00 00 01 05 46'), Buffer.from('café')]))
})

t.test('setRequestId rewrites every record header', async (t) => {
  const buf = encodeRequestHead(1, Role.RESPONDER, true, { A: 'b', C: 'd'.repeat(300) }, true)
  setRequestId(buf, 0x0203)
  const expect = encodeRequestHead(0x0203, Role.RESPONDER, true, { A: 'b', C: 'd'.repeat(300) }, true)
  t.same(buf, expect)
})

t.test('ABORT_REQUEST and GET_VALUES (§5.4, §4.1)', async (t) => {
  t.same(encodeAbortRequest(3), hex('01 02 0003 0000 00 00'))
  const gv = encodeGetValues(['FCGI_MAX_CONNS', 'FCGI_MAX_REQS', 'FCGI_MPXS_CONNS'])
  t.same(gv, Buffer.concat([
    hex('01 09 0000 0030 00 00'),
    hex('0e 00'), Buffer.from('FCGI_MAX_CONNS'),
    hex('0d 00'), Buffer.from('FCGI_MAX_REQS'),
    hex('0f 00'), Buffer.from('FCGI_MPXS_CONNS'),
  ]))
})

t.test('STDIN framing and padding rule', async (t) => {
  const f = stdinFraming(1, 5)
  t.same(f.header, hex('01 05 0001 0005 03 00'))
  t.same(f.padding, hex('000000'))
  t.equal(stdinFraming(1, 8).padding, null)
  t.same(stdinFraming(2, 65535).header, hex('01 05 0002 ffff 00 00'), 'no padding that would push past 65535')
  t.equal(paddingFor(65528), 0)
  t.equal(paddingFor(65527), 1)
  t.equal(paddingFor(65529), 0)
  t.equal(paddingFor(0), 0)
})

t.test('decodePairs: 1- and 4-byte lengths; truncation is null', async (t) => {
  t.same([...decodePairs(Buffer.concat([hex('01 02'), Buffer.from('abc'), hex('80000001 00'), Buffer.from('z')]))!], [['a', 'bc'], ['z', '']])
  t.equal(decodePairs(hex('05 01 41')), null)
  t.equal(decodePairs(hex('80 00')), null)
  t.same([...decodePairs(Buffer.alloc(0))!], [])
})

t.test('round trip: 7-bit environments (one latin1 write per record) and Unicode ones (UTF-8 path) decode to what was sent', async (t) => {
  const { default: fc } = await import('fast-check')
  const decodeHead = (buf: Buffer): Array<[string, string]> => {
    const out: Array<[string, string]> = []
    let off = 16
    for (;;) {
      const len = buf.readUInt16BE(off + 4)
      if (len === 0) return out
      for (const [k, v] of decodePairs(buf.subarray(off + 8, off + 8 + len)) ?? []) out.push([k, Buffer.from(v, 'latin1').toString('utf8')])
      off += 8 + len + buf[off + 6]
    }
  }
  const name = fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !s.includes('\0'))
  const ascii = fc.string({ maxLength: 300 }).map((s) => s.replace(/[^\x01-\x7f]/g, 'a'))
  const unicode = fc.string({ unit: 'grapheme', maxLength: 200 }).filter((s) => !s.includes('\0'))
  fc.assert(fc.property(fc.uniqueArray(fc.tuple(name.map((s) => s.replace(/[^\x01-\x7f]/g, 'N')), fc.oneof(ascii, unicode)), { selector: (p) => p[0], maxLength: 30 }), (env) => {
    const params = Object.fromEntries(env)
    const got = decodeHead(encodeRequestHead(1, Role.RESPONDER, true, params, true))
    // decodePairs keys are latin1; names here are 7-bit, values are compared as UTF-8 text. Pairs
    // go in the object's key order (integer-like names first).
    return JSON.stringify(got) === JSON.stringify(Object.entries(params))
  }), { numRuns: 300 })
  t.pass('300 random environments round-trip')
})
