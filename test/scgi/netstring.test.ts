import t from 'tap'
import { encodeScgiHead } from '../../src/protocols/scgi/netstring.js'
import { ProxyError } from '../../src/core/errors.js'

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1')

t.test('SCGI spec §4 example, byte for byte', async (t) => {
  const got = encodeScgiHead({ REQUEST_METHOD: 'POST', REQUEST_URI: '/deepthought' }, 27)
  const want = bytes('70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/deepthought\x00,')
  t.same(got, want)
})

t.test('GET: CONTENT_LENGTH "0" is still first (§3 MUST)', async (t) => {
  t.same(encodeScgiHead({}, 0), bytes('24:CONTENT_LENGTH\x000\x00SCGI\x001\x00,'))
})

t.test('empty values are sent (QUERY_STRING is a MUST)', async (t) => {
  t.same(encodeScgiHead({ QUERY_STRING: '' }, 0), bytes('38:CONTENT_LENGTH\x000\x00SCGI\x001\x00QUERY_STRING\x00\x00,'))
})

t.test('the env cannot add a second CONTENT_LENGTH or SCGI', async (t) => {
  const got = encodeScgiHead({ CONTENT_LENGTH: '999', content_length: '5', SCGI: '2', X: 'y' }, 3)
  t.same(got, bytes('28:CONTENT_LENGTH\x003\x00SCGI\x001\x00X\x00y\x00,'))
})

t.test('length prefix counts UTF-8 bytes, no leading zero', async (t) => {
  const got = encodeScgiHead({ PATH_INFO: '/é' }, 0)
  const payload = Buffer.concat([bytes('CONTENT_LENGTH\x000\x00SCGI\x001\x00PATH_INFO\x00/'), Buffer.from([0xc3, 0xa9, 0])])
  t.same(got, Buffer.concat([bytes(`${payload.length}:`), payload, bytes(',')]))
  t.match(got.toString('latin1'), /^[1-9]\d*:/)
})

function code (fn: () => unknown): string | undefined {
  try { fn() } catch (err) { return err instanceof ProxyError ? `${err.code} ${err.status}` : 'not a ProxyError' }
  return undefined
}

t.test('what cannot be encoded is refused (RELIABILITY §2.12)', async (t) => {
  t.equal(code(() => encodeScgiHead({ PATH_INFO: '/a\0b' }, 0)), 'ERR_BAD_HEADER_VALUE 400', 'NUL in a value')
  t.equal(code(() => encodeScgiHead({ 'A\0B': 'x' }, 0)), 'ERR_BAD_HEADER_VALUE 400', 'NUL in a name')
  t.equal(code(() => encodeScgiHead({ '': 'x' }, 0)), 'ERR_BAD_HEADER_VALUE 400', 'empty name')
  t.equal(code(() => encodeScgiHead({}, -1)), 'ERR_INTERNAL 500', 'negative length is a bug')
  t.equal(code(() => encodeScgiHead({}, 1.5)), 'ERR_INTERNAL 500')
})
