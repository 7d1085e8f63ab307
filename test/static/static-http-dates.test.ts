/**
 * The dates of conditional requests on a static route (If-Modified-Since, If-Unmodified-Since,
 * If-Range) are HTTP-dates (RFC 9110 §5.6.7): the three formats a recipient must accept are taken,
 * and anything else is no date and is ignored (§13.1.3, §13.1.4), or makes an If-Range fail
 * (§13.1.5). JavaScript's Date.parse reads far more ("1" is 2001-01-01, "9999" the year 9999,
 * ISO 8601): such a header gave a 412 for a request that has no precondition, or a 304 for one
 * that has none that holds. Real server and client; a file with a fixed mtime.
 */
import t from 'tap'
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

/** Mon, 15 Jun 2020 12:34:56 GMT: the file's mtime. */
const MTIME = Date.UTC(2020, 5, 15, 12, 34, 56) / 1000
const LM = 'Mon, 15 Jun 2020 12:34:56 GMT'

async function site (t: Parameters<typeof proxyServer>[0]): Promise<string> {
  const root = mkdtempSync(join(tmpdir(), 'pc-static-dates-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  writeFileSync(join(root, 'ten.txt'), '0123456789')
  utimesSync(join(root, 'ten.txt'), MTIME, MTIME)
  const { url } = await proxyServer(t, { routes: [{ name: 'files', protocol: 'static', docroot: root }] })
  return url
}

t.test('the Last-Modified of the fixture', async (t) => {
  const url = await site(t)
  const r = await get(`${url}/ten.txt`)
  t.equal(r.status, 200)
  t.equal(r.headers['last-modified'], LM)
})

t.test('an If-Unmodified-Since that is no HTTP-date is ignored: 200, not 412', async (t) => {
  const url = await site(t)
  for (const v of ['1', '0', '2000', 'foo 1', '2019-01-01T00:00:00Z', '2019-01-01', 'Mon, 32 Jan 2019 00:00:00 GMT',
    'Tue, 01 Jan 2019 00:00:00', 'Tue, 01 Jan 2019 00:00:00 +0000', 'Tue, 1 Jan 2019 00:00:00 GMT', 'Tue, 01 Jan 2019 24:00:00 GMT',
    'Fri, 29 Feb 2019 00:00:00 GMT', 'tue, 01 jan 2019 00:00:00 gmt']) {
    const r = await get(`${url}/ten.txt`, { headers: { 'if-unmodified-since': v } })
    t.equal(r.status, 200, `If-Unmodified-Since: ${v}`)
    t.equal(r.body.toString(), '0123456789')
  }
})

t.test('an If-Modified-Since that is no HTTP-date is ignored: 200, not 304', async (t) => {
  const url = await site(t)
  for (const v of ['9999', '3000', 'foo 3000', '2030-01-01', '2030-01-01T00:00:00Z', 'Jan 1 3000', 'Tue, 01 Jan 2030 00:00:00 UTC',
    'Tue, 01 Jan 2030 00:00:00 GMT x', 'Tue, 01 Jan 2030 00:00 GMT']) {
    const r = await get(`${url}/ten.txt`, { headers: { 'if-modified-since': v } })
    t.equal(r.status, 200, `If-Modified-Since: ${v}`)
    t.equal(r.body.toString(), '0123456789')
  }
})

t.test('an If-Range that is neither an entity tag nor an HTTP-date: the whole file', async (t) => {
  const url = await site(t)
  for (const v of ['2020-06-15T12:34:56Z', 'Mon Jun 15 2020 12:34:56 GMT+0000', '15 Jun 2020 12:34:56 GMT']) {
    const r = await get(`${url}/ten.txt`, { headers: { range: 'bytes=2-3', 'if-range': v } })
    t.equal(r.status, 200, `If-Range: ${v}`)
    t.equal(r.body.toString(), '0123456789')
  }
})

t.test('the three formats of RFC 9110 §5.6.7 are read, each as GMT', async (t) => {
  const url = await site(t)
  // The file's mtime in each format: not modified since, unmodified since, the range holds.
  for (const v of [LM, 'Monday, 15-Jun-20 12:34:56 GMT', 'Mon Jun 15 12:34:56 2020']) {
    t.equal((await get(`${url}/ten.txt`, { headers: { 'if-modified-since': v } })).status, 304, `If-Modified-Since: ${v}`)
    t.equal((await get(`${url}/ten.txt`, { headers: { 'if-unmodified-since': v } })).status, 200, `If-Unmodified-Since: ${v}`)
    const ranged = await get(`${url}/ten.txt`, { headers: { range: 'bytes=2-3', 'if-range': v } })
    t.equal(ranged.status, 206, `If-Range: ${v}`)
    t.equal(ranged.body.toString(), '23')
  }
  // Earlier dates, one per format (an rfc850 year more than 50 years ahead is the past century's).
  for (const v of ['Sun, 06 Nov 1994 08:49:37 GMT', 'Sunday, 06-Nov-94 08:49:37 GMT', 'Sun Nov  6 08:49:37 1994', 'Mon Jun 15 12:34:55 2020']) {
    t.equal((await get(`${url}/ten.txt`, { headers: { 'if-unmodified-since': v } })).status, 412, `If-Unmodified-Since: ${v}`)
    t.equal((await get(`${url}/ten.txt`, { headers: { 'if-modified-since': v } })).status, 200, `If-Modified-Since: ${v}`)
  }
  // A later one: a second after the mtime, and a leap second.
  for (const v of ['Mon, 15 Jun 2020 12:34:57 GMT', 'Mon, 15 Jun 2020 23:59:60 GMT']) {
    t.equal((await get(`${url}/ten.txt`, { headers: { 'if-modified-since': v } })).status, 304, `If-Modified-Since: ${v}`)
    t.equal((await get(`${url}/ten.txt`, { headers: { 'if-unmodified-since': v } })).status, 200, `If-Unmodified-Since: ${v}`)
  }
})

t.test('a file written again within the second of its Last-Modified: If-Modified-Since alone gets a 304, If-None-Match the new file', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pc-static-dates-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const file = join(root, 'same.txt')
  writeFileSync(file, 'AAAA')
  utimesSync(file, MTIME + 0.1, MTIME + 0.1)
  const { url } = await proxyServer(t, { routes: [{ name: 'files', protocol: 'static', docroot: root }] })
  const first = await get(`${url}/same.txt`)
  t.equal(first.headers['last-modified'], LM)
  writeFileSync(file, 'BBBB')
  utimesSync(file, MTIME + 0.7, MTIME + 0.7)
  const since = await get(`${url}/same.txt`, { headers: { 'if-modified-since': LM } })
  t.equal(since.status, 304, 'the same Last-Modified: HTTP dates have whole seconds (nginx alike)')
  const tag = await get(`${url}/same.txt`, { headers: { 'if-none-match': String(first.headers.etag), 'if-modified-since': LM } })
  t.equal(tag.status, 200, 'the ETag has the mtime in milliseconds')
  t.equal(tag.body.toString(), 'BBBB')
})

t.test('an If-Modified-Since later than now is ignored (Apache; RFC 2616 §14.25): 200, not 304', async (t) => {
  const url = await site(t)
  // A client whose clock runs ahead would keep a copy older than the file for good.
  const ahead = new Date(Date.now() + 3_600_000).toUTCString()
  for (const v of ['Thu, 01 Jan 2099 00:00:00 GMT', ahead]) {
    const r = await get(`${url}/ten.txt`, { headers: { 'if-modified-since': v } })
    t.equal(r.status, 200, `If-Modified-Since: ${v}`)
    t.equal(r.body.toString(), '0123456789')
  }
  // Not later than now: the rule above stands.
  t.equal((await get(`${url}/ten.txt`, { headers: { 'if-modified-since': new Date(Date.now() - 60_000).toUTCString() } })).status, 304, 'a minute ago: 304')
})
