/**
 * The HTTP client's field-name strings (src/protocols/http/client.ts fieldName): always the
 * latin1 decode of the bytes, and a name seen before is not decoded again.
 */
import t from 'tap'
import { fieldName } from '../../src/protocols/http/client.js'

// First: the next test fills every length's slots on purpose.
t.test('a name seen before is not decoded again', async (t) => {
  const name = Buffer.from('X-Seen-Before', 'latin1')
  fieldName(name)
  const original = Buffer.prototype.toString
  let decoded = 0
  Buffer.prototype.toString = function (this: Buffer, ...args: Parameters<Buffer['toString']>): string { decoded++; return original.apply(this, args) }
  try {
    for (let i = 0; i < 10; i++) t.equal(fieldName(Buffer.from('X-Seen-Before', 'latin1')), 'X-Seen-Before')
  } finally {
    Buffer.prototype.toString = original
  }
  t.equal(decoded, 0, 'no decode for a kept name')
})

t.test('fieldName is the latin1 decode of any bytes', async (t) => {
  const names = ['Content-Type', 'content-type', 'CONTENT-TYPE', 'Date', 'date', 'X', '', 'Keep-Alive', 'Connection', 'x'.repeat(32), 'y'.repeat(33), 'y'.repeat(100)]
  const bytes = [...names.map((n) => Buffer.from(n, 'latin1')), Buffer.from([0xc4, 0x80, 0xff, 0x41]), Buffer.from([0x41, 0xff, 0x80, 0xc4])]
  // Twice, and the second time after the cache for each length may be full: same answers.
  for (let round = 0; round < 3; round++) {
    for (const b of bytes) t.equal(fieldName(b), b.toString('latin1'), `${round}: ${JSON.stringify(b.toString('latin1'))}`)
    // fill every length's slots with other names
    for (let n = 1; n <= 33; n++) for (let k = 0; k < 6; k++) fieldName(Buffer.alloc(n, 97 + k))
  }
  // Names that differ in one byte, in every position, each kept apart.
  const base = Buffer.from('x-abcdefghijkl', 'latin1')
  for (let i = 0; i < base.length; i++) {
    const b = Buffer.from(base)
    b[i] = b[i] ^ 0x20
    t.equal(fieldName(b), b.toString('latin1'))
    t.equal(fieldName(base), base.toString('latin1'))
  }
})
