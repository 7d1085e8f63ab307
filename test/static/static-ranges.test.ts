/**
 * Range details of `protocol: static` beyond test/static/static-serve.test.ts: a suffix longer than
 * the file is the whole file (RFC 9110 §14.1.3, nginx), not a 416 as the range-parser package had it.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

function docroot (t: { teardown (fn: () => void): void }): string {
  const root = mkdtempSync(join(tmpdir(), 'pc-static-ranges-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  writeFileSync(join(root, 'ten.txt'), '0123456789')
  writeFileSync(join(root, 'empty.txt'), '')
  return root
}

t.test('a suffix longer than the file: the whole file, 206 (RFC 9110 §14.1.3)', async (t) => {
  const { url } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: docroot(t) }] })
  for (const range of ['bytes=-10', 'bytes=-11', 'bytes=-500', 'bytes=-99999999999999999999']) {
    const r = await get(`${url}/ten.txt`, { headers: { range } })
    t.equal(r.status, 206, `${range}: 206`)
    t.equal(r.headers['content-range'], 'bytes 0-9/10', `${range}: all ten bytes`)
    t.equal(r.body.toString(), '0123456789')
  }
  const tail = await get(`${url}/ten.txt`, { headers: { range: 'bytes=-4' } })
  t.equal(tail.headers['content-range'], 'bytes 6-9/10', 'a shorter suffix as before')
  const empty = await get(`${url}/empty.txt`, { headers: { range: 'bytes=-5' } })
  t.equal(empty.status, 416, 'an empty file still has no range')
  t.equal(empty.headers['content-range'], 'bytes */0')
  const zero = await get(`${url}/ten.txt`, { headers: { range: 'bytes=-0' } })
  t.equal(zero.status, 416, 'a zero suffix still selects nothing')
})

t.test('the rules the range-parser package had, kept', async (t) => {
  const { url } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: docroot(t) }] })
  const cases: Array<[string, number, string | undefined]> = [
    ['bytes= 2 - 3 ', 206, 'bytes 2-3/10'], // whitespace around the numbers
    ['bytes=8-,2-3,0-1', 206, undefined], // several: multipart (static-multipart.test.ts), no Content-Range on the whole
    ['bytes=3-4,0-9', 206, 'bytes 0-9/10'], // one covers the other
    ['bytes=0-1,50-60', 206, 'bytes 0-1/10'], // an unsatisfiable one is dropped
    ['bytes=50-60,70-', 416, 'bytes */10'],
    ['bytes=1-x', 200, undefined], // malformed: ignored
    ['bytes=0-1,', 206, 'bytes 0-1/10'], // an empty list element is ignored (RFC 9110 §5.6.1.2)
    ['bytes=, ,2-3', 206, 'bytes 2-3/10'],
    ['bytes=,', 200, undefined], // no element at all: malformed
    ['bytes=', 200, undefined],
    ['bytes=--1', 200, undefined],
    ['Bytes=0-1', 206, 'bytes 0-1/10'], // unit names are compared without case (RFC 9110 §14.1), as nginx does
    ['BYTES=0-1', 206, 'bytes 0-1/10'],
    ['bytes =0-1', 200, undefined], // no whitespace before '=' in the grammar
    ['bitez=0-1', 200, undefined],
    ['bytes=0x1-2', 200, undefined],
  ]
  for (const [range, status, cr] of cases) {
    const r = await get(`${url}/ten.txt`, { headers: { range } })
    t.equal(r.status, status, `${range}: ${status}`)
    t.equal(r.headers['content-range'], cr, `${range}: ${cr ?? 'no Content-Range'}`)
  }
})
