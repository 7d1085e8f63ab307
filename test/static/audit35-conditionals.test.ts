/**
 * Audit 35 (static, conditionals): what nginx users expect of If-None-Match, If-Modified-Since,
 * If-Range and HEAD, through the real proxy with a raw client (the exact fields on the wire).
 */
import t from 'tap'
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

const MTIME = new Date('2020-01-01T00:00:00Z')
const LAST_MODIFIED = 'Wed, 01 Jan 2020 00:00:00 GMT'

async function site (t: Parameters<typeof proxyServer>[0]): Promise<{ port: number, tag: string }> {
  return await siteWithRoot(t)
}

async function siteWithRoot (t: Parameters<typeof proxyServer>[0]): Promise<{ port: number, tag: string, root: string }> {
  const root = mkdtempSync(join(tmpdir(), 'pc-a35c-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  writeFileSync(join(root, 'ten.txt'), '0123456789')
  utimesSync(join(root, 'ten.txt'), MTIME, MTIME)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root, options: { cacheControl: 'public, max-age=60' } }] })
  const first = await raw(port, '/ten.txt')
  return { port, root, tag: /\r\netag: ([^\r\n]*)/i.exec(first.head)?.[1] ?? 'no ETag' }
}

/** One raw request (Connection: close): status, head and body as latin1. */
async function raw (port: number, target: string, extra = '', method = 'GET'): Promise<{ status: number, head: string, body: string }> {
  const out = await rawRequest(port, `${method} ${target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n${extra}\r\n`)
  const end = out.indexOf('\r\n\r\n')
  const head = end < 0 ? out : out.slice(0, end)
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(out)?.[1] ?? 0), head, body: end < 0 ? '' : out.slice(end + 4) }
}

t.test('a request Cache-Control: no-cache does not turn a matching validator into a 200 (nginx, Apache: 304)', async (t) => {
  const { port, tag } = await site(t)
  for (const cc of ['no-cache', 'max-age=0', 'no-cache, no-store']) {
    const inm = await raw(port, '/ten.txt', `If-None-Match: ${tag}\r\nCache-Control: ${cc}\r\n`)
    t.equal(inm.status, 304, `If-None-Match + Cache-Control: ${cc}`)
    t.equal(inm.body, '')
    const ims = await raw(port, '/ten.txt', `If-Modified-Since: ${LAST_MODIFIED}\r\nCache-Control: ${cc}\r\n`)
    t.equal(ims.status, 304, `If-Modified-Since + Cache-Control: ${cc}`)
  }
  const pragma = await raw(port, '/ten.txt', `If-None-Match: ${tag}\r\nPragma: no-cache\r\n`)
  t.equal(pragma.status, 304, 'Pragma: no-cache')
  // The validator still decides: a tag that does not match is a 200.
  const other = await raw(port, '/ten.txt', 'If-None-Match: "other"\r\nCache-Control: no-cache\r\n')
  t.equal(other.status, 200)
  t.equal(other.body, '0123456789')
})

t.test('If-None-Match: weak comparison, lists, `*`; If-Modified-Since ignored beside it (RFC 9110 §13.1.2, §13.1.3)', async (t) => {
  const { port, tag } = await site(t)
  t.match(tag, /^W\/"[^"]+"$/, 'a weak tag')
  const opaque = tag.slice(2)
  const cases: Array<[string, number]> = [
    [`If-None-Match: ${tag}`, 304],
    [`If-None-Match: ${opaque}`, 304], // weak comparison: the strong form of the same tag matches
    [`If-None-Match: "a", ${tag}, "b"`, 304],
    [`If-None-Match: "a",${opaque}`, 304],
    [`If-None-Match: "a",\t${tag}`, 304], // OWS is SP or HTAB
    ['If-None-Match: *', 304],
    ['If-None-Match: "a", "b"', 200],
    [`If-None-Match: W/${opaque.slice(0, -2)}"`, 200],
    // If-None-Match present: If-Modified-Since is not looked at, either way.
    [`If-None-Match: ${tag}\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT`, 304],
    [`If-None-Match: "a"\r\nIf-Modified-Since: ${LAST_MODIFIED}`, 200],
    [`If-Modified-Since: ${LAST_MODIFIED}`, 304],
    ['If-Modified-Since: Tue, 31 Dec 2019 23:59:59 GMT', 200],
    ['If-Modified-Since: Wed, 01 Jan 2020 00:00:00 UTC', 200], // no HTTP-date: ignored
  ]
  for (const [fields, status] of cases) {
    const r = await raw(port, '/ten.txt', `${fields}\r\n`)
    t.equal(r.status, status, JSON.stringify(fields))
    t.equal(r.body, status === 304 ? '' : '0123456789', `${JSON.stringify(fields)}: body`)
  }
})

t.test('304: the validators and Cache-Control, no body length; HEAD: the head of GET, no body', async (t) => {
  const { port, tag } = await site(t)
  const fields = (head: string): string[] => head.split('\r\n').slice(1).filter((l) => !/^date:/i.test(l))
  const nm = await raw(port, '/ten.txt', `If-None-Match: ${tag}\r\n`)
  t.equal(nm.status, 304)
  t.match(nm.head, new RegExp(`\\r\\netag: ${tag.replace(/[/"]/g, '\\$&')}\\r\\n`, 'i'))
  t.match(nm.head, new RegExp(`\\r\\nlast-modified: ${LAST_MODIFIED}\\r\\n`, 'i'))
  t.match(nm.head, /\r\ncache-control: public, max-age=60\r\n/i)
  t.notMatch(nm.head, /\r\n(content-length|transfer-encoding|content-range):/i)
  const headNm = await raw(port, '/ten.txt', `If-None-Match: ${tag}\r\n`, 'HEAD')
  t.same(fields(headNm.head), fields(nm.head), 'HEAD 304 = GET 304')
  const get = await raw(port, '/ten.txt')
  const head = await raw(port, '/ten.txt', '', 'HEAD')
  t.same(fields(head.head), fields(get.head), 'HEAD 200 = GET 200')
  t.equal(head.body, '')
  t.match(get.head, /\r\ncontent-length: 10\r\n/i)
})

t.test('If-Range: a weak tag or another date means the whole file; the exact date the range', async (t) => {
  const { port, tag } = await site(t)
  const cases: Array<[string, number, string]> = [
    [tag, 200, '0123456789'], // a weak tag never validates a range (strong comparison)
    [tag.slice(2), 200, '0123456789'], // nor its strong form: the representation has no strong tag
    [LAST_MODIFIED, 206, '23'],
    ['Wed, 01 Jan 2020 00:00:01 GMT', 200, '0123456789'],
    ['Tue, 31 Dec 2019 23:59:59 GMT', 200, '0123456789'],
  ]
  for (const [ifRange, status, body] of cases) {
    const r = await raw(port, '/ten.txt', `Range: bytes=2-3\r\nIf-Range: ${ifRange}\r\n`)
    t.equal(r.status, status, `If-Range: ${ifRange}`)
    t.equal(r.body, body)
  }
})

t.test('a file whose mtime is in the future: Last-Modified is no later than Date (RFC 9110 §8.8.2.1, Apache)', async (t) => {
  const { port, root } = await siteWithRoot(t)
  const future = new Date(Date.now() + 86_400_000)
  utimesSync(join(root, 'ten.txt'), future, future)
  const r = await raw(port, '/ten.txt')
  t.equal(r.status, 200)
  const lm = Date.parse(/\r\nlast-modified: ([^\r\n]*)/i.exec(r.head)?.[1] ?? '')
  const date = Date.parse(/\r\ndate: ([^\r\n]*)/i.exec(r.head)?.[1] ?? '')
  t.ok(Number.isFinite(lm) && Number.isFinite(date))
  t.ok(lm <= date, `Last-Modified ${new Date(lm).toUTCString()} is not after Date ${new Date(date).toUTCString()}`)
  // That date stands for no real mtime: it never validates a range.
  const ranged = await raw(port, '/ten.txt', `Range: bytes=2-3\r\nIf-Range: ${new Date(lm).toUTCString()}\r\n`)
  t.equal(ranged.status, 200)
  t.equal(ranged.body, '0123456789')
})
