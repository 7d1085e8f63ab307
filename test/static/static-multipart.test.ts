/**
 * Several ranges in one request: 206 `multipart/byteranges` (RFC 9110 §14.6), as nginx answers
 * them. Real clients parse the parts (node's http, curl when installed, a raw socket for the exact
 * framing on a kept-alive connection) and compare each with the file's bytes; a stalled client of
 * a 64 MiB file shows the parts are read as the client drains them; more than MAX_RANGES parts get
 * the whole file.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { RequestEndEvent } from '../../src/index.js'
import { MAX_RANGES } from '../../src/protocols/static/multipart.js'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { stalledClient } from '../helpers/raw-client.js'

guardLeaks(t)

function docroot (t: { teardown (fn: () => void): void }): string {
  const root = mkdtempSync(join(tmpdir(), 'pc-static-multi-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  writeFileSync(join(root, 'ten.txt'), '0123456789')
  writeFileSync(join(root, 'rand.bin'), randomBytes(3 * 1024 * 1024 + 17))
  writeFileSync(join(root, 'k.txt'), Buffer.alloc(1000, 'k'))
  return root
}

interface Part { type: string | undefined, range: string, start: number, end: number, size: number, body: Buffer }

/**
 * The parts of a multipart/byteranges body, read strictly: each delimiter where RFC 2046 puts it,
 * each part exactly as long as its Content-Range says, nothing after the close delimiter.
 */
function parseParts (contentType: string | undefined, body: Buffer): Part[] {
  const m = /^multipart\/byteranges; boundary=([0-9A-Za-z'()+_,./:=?-]{1,70})$/.exec(contentType ?? '')
  if (m === null) throw new Error(`not multipart/byteranges: ${String(contentType)}`)
  const dash = Buffer.from(`\r\n--${m[1]}`)
  const parts: Part[] = []
  let at = 0
  for (;;) {
    if (!body.subarray(at, at + dash.length).equals(dash)) throw new Error(`no delimiter at ${at}`)
    at += dash.length
    if (body.subarray(at).toString('latin1') === '--\r\n') return parts
    if (body.subarray(at, at + 2).toString('latin1') !== '\r\n') throw new Error(`bad delimiter line at ${at}`)
    at += 2
    const headEnd = body.indexOf('\r\n\r\n', at)
    if (headEnd < 0) throw new Error('part head without end')
    const fields = new Map(body.subarray(at, headEnd).toString('latin1').split('\r\n').map((l) => {
      const c = l.indexOf(':')
      return [l.slice(0, c).toLowerCase(), l.slice(c + 1).trim()] as [string, string]
    }))
    const range = fields.get('content-range') ?? ''
    const r = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(range)
    if (r === null) throw new Error(`part without a Content-Range: ${range}`)
    const [start, end, size] = [Number(r[1]), Number(r[2]), Number(r[3])]
    at = headEnd + 4
    parts.push({ type: fields.get('content-type'), range, start, end, size, body: body.subarray(at, at + end - start + 1) })
    at += end - start + 1
  }
}

t.test('two ranges with node\'s http: 206 multipart/byteranges, each part typed and ranged, the length exact', async (t) => {
  const root = docroot(t)
  const { url } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root, options: { cacheControl: 'max-age=60' } }] })
  const r = await get(`${url}/ten.txt`, { headers: { range: 'bytes=0-1,5-6' } })
  t.equal(r.status, 206)
  t.match(r.headers['content-type'], /^multipart\/byteranges; boundary=[0-9a-f]{32}$/)
  t.equal(r.headers['content-length'], String(r.body.length), 'Content-Length is the body\'s length')
  t.equal(r.headers['content-range'], undefined, 'no Content-Range on the whole (RFC 9110 §14.6)')
  t.equal(r.headers['accept-ranges'], 'bytes')
  t.equal(r.headers['cache-control'], 'max-age=60')
  t.ok(r.headers.etag !== undefined && r.headers['last-modified'] !== undefined, 'the validators of a 200')
  const parts = parseParts(r.headers['content-type'], r.body)
  t.same(parts.map((p) => [p.type, p.range, p.body.toString()]), [
    ['text/plain; charset=utf-8', 'bytes 0-1/10', '01'],
    ['text/plain; charset=utf-8', 'bytes 5-6/10', '56'],
  ])
  const again = await get(`${url}/ten.txt`, { headers: { range: 'bytes=0-1,5-6' } })
  t.not(again.headers['content-type'], r.headers['content-type'], 'a new boundary per response')
})

t.test('order, merging, suffixes, parts across read chunks of a 3 MiB file', async (t) => {
  const root = docroot(t)
  const file = readFileSync(join(root, 'rand.bin'))
  const { url } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const cases: Array<[string, Array<[number, number]>]> = [
    ['bytes=5-6,0-1', [[5, 6], [0, 1]]], // in the order named
    ['bytes=0-2,1-3,7-8', [[0, 3], [7, 8]]], // overlapping: merged
    ['bytes=7-8,4-5,0-3', [[7, 8], [0, 5]]], // adjacent: merged, where its first part was named
    ['bytes=0-0,-2', [[0, 0], [file.length - 2, file.length - 1]]],
    ['bytes=0-99999,1000000-2100000,-70000', [[0, 99999], [1000000, 2100000], [file.length - 70000, file.length - 1]]],
    ['bytes=65535-65536,131071-', [[65535, 65536], [131071, file.length - 1]]],
    ['bytes=1-1,3-3,99999999-', [[1, 1], [3, 3]]], // the unsatisfiable one dropped
  ]
  for (const [range, want] of cases) {
    const r = await get(`${url}/rand.bin`, { headers: { range } })
    t.equal(r.status, 206, range)
    t.equal(r.headers['content-length'], String(r.body.length), `${range}: Content-Length`)
    const parts = parseParts(r.headers['content-type'], r.body)
    t.same(parts.map((p) => [p.start, p.end]), want, `${range}: the parts`)
    for (const p of parts) {
      t.equal(p.type, 'application/octet-stream')
      t.equal(p.size, file.length)
      t.ok(p.body.equals(file.subarray(p.start, p.end + 1)), `${range}: bytes ${p.start}-${p.end} are the file's`)
    }
  }
})

t.test('curl -r 0-1,5-6', async (t) => {
  const curl = ['/usr/bin/curl', '/bin/curl'].find((p) => existsSync(p))
  if (curl === undefined) { t.plan(0, 'curl is not installed'); return }
  const root = docroot(t)
  const file = readFileSync(join(root, 'rand.bin'))
  const { url } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const out = await new Promise<Buffer>((resolve, reject) => {
    execFile(curl, ['-s', '-i', '--max-time', '30', '-r', '0-1,5-6,2000000-2000100', `${url}/rand.bin`], { encoding: 'buffer', maxBuffer: 1 << 20 }, (err, stdout) => {
      if (err !== null) reject(err)
      else resolve(stdout)
    })
  })
  const end = out.indexOf('\r\n\r\n')
  const head = out.subarray(0, end).toString('latin1')
  const body = out.subarray(end + 4)
  t.match(head, /^HTTP\/1\.1 206 /)
  t.equal(Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1]), body.length)
  const parts = parseParts(/\r\ncontent-type: ([^\r\n]+)/i.exec(head)?.[1], body)
  t.same(parts.map((p) => p.range), ['bytes 0-1/3145745', 'bytes 5-6/3145745', 'bytes 2000000-2000100/3145745'])
  for (const p of parts) t.ok(p.body.equals(file.subarray(p.start, p.end + 1)), `${p.range}: the file's bytes`)
})

t.test('exact framing: a multipart answer, then the next request on the same connection', async (t) => {
  const root = docroot(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const out = await new Promise<Buffer>((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port })
    const chunks: Buffer[] = []
    s.on('data', (d: Buffer) => chunks.push(d))
    s.on('close', () => resolve(Buffer.concat(chunks)))
    s.on('error', reject)
    s.write('GET /ten.txt HTTP/1.1\r\nHost: h\r\nRange: bytes=1-2,4-4,8-\r\n\r\nGET /ten.txt HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
  })
  const headEnd = out.indexOf('\r\n\r\n')
  const head = out.subarray(0, headEnd).toString('latin1')
  t.match(head, /^HTTP\/1\.1 206 /)
  const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1])
  const body = out.subarray(headEnd + 4, headEnd + 4 + length)
  t.same(parseParts(/\r\ncontent-type: ([^\r\n]+)/i.exec(head)?.[1], body).map((p) => p.body.toString()), ['12', '4', '89'])
  const next = out.subarray(headEnd + 4 + length).toString('latin1')
  t.match(next, /^HTTP\/1\.1 200 [^]*\r\n\r\n0123456789$/, 'the second response starts right after Content-Length bytes')
})

t.test(`more than ${MAX_RANGES} ranges (after merging): the whole file, 200`, async (t) => {
  const root = docroot(t)
  const { url } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const ranges = (n: number): string => 'bytes=' + Array.from({ length: n }, (_, i) => `${i * 3}-${i * 3}`).join(',')
  const atCap = await get(`${url}/k.txt`, { headers: { range: ranges(MAX_RANGES) } })
  t.equal(atCap.status, 206, `${MAX_RANGES} parts: 206`)
  t.equal(parseParts(atCap.headers['content-type'], atCap.body).length, MAX_RANGES)
  const over = await get(`${url}/k.txt`, { headers: { range: ranges(MAX_RANGES + 1) } })
  t.equal(over.status, 200, `${MAX_RANGES + 1} parts: the whole file`)
  t.equal(over.body.length, 1000)
  // Apache Killer (CVE-2011-3192): many overlapping ranges merge into one.
  const killer = await get(`${url}/k.txt`, { headers: { range: 'bytes=0-,' + Array.from({ length: 1300 }, (_, i) => `5-${i}`).join(',') } })
  t.equal(killer.status, 206)
  t.equal(killer.headers['content-range'], 'bytes 0-999/1000', 'merged into one range')
})

t.test('what keeps the whole file: HEAD, If-Range that does not hold, a precompressed sibling', async (t) => {
  const root = docroot(t)
  writeFileSync(join(root, 'app.js'), 'console.log("app")\n')
  writeFileSync(join(root, 'app.js.gz'), Buffer.from('0123456789abcdef'))
  const { url } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root, options: { precompressed: true } }] })
  const head = await get(`${url}/ten.txt`, { method: 'HEAD', headers: { range: 'bytes=0-1,5-6' } })
  t.equal(head.status, 200)
  t.equal(head.headers['content-length'], '10')
  const ifRange = await get(`${url}/ten.txt`, { headers: { range: 'bytes=0-1,5-6', 'if-range': 'Thu, 01 Jan 1998 00:00:00 GMT' } })
  t.equal(ifRange.status, 200)
  t.equal(ifRange.body.toString(), '0123456789')
  const sib = await get(`${url}/app.js`, { headers: { range: 'bytes=0-1,5-6', 'accept-encoding': 'gzip' } })
  t.equal(sib.status, 200, 'a coded sibling: several ranges get all of it')
  t.equal(sib.headers['content-encoding'], 'gzip')
  t.equal(sib.body.toString(), '0123456789abcdef')
  const plain = await get(`${url}/app.js`, { headers: { range: 'bytes=0-1,5-6' } })
  t.equal(plain.status, 206, 'the file itself: multipart')
  t.same(parseParts(plain.headers['content-type'], plain.body).map((p) => [p.type, p.body.toString()]), [['text/javascript; charset=utf-8', 'co'], ['text/javascript; charset=utf-8', 'le']])
  t.equal(plain.headers.vary, 'Accept-Encoding', 'Vary on such a route, as on its other answers')
})

const SIZE = 64 * 1024 * 1024

t.test('a stalled client of a 64 MiB multipart answer: read only as it drains, the file closed after', async (t) => {
  const root = docroot(t)
  const file = join(root, 'big.bin')
  writeFileSync(file, '')
  truncateSync(file, SIZE)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root, timeouts: { clientIdle: '500ms' } }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const sock = stalledClient(port, `GET /big.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=0-${SIZE / 2 - 1},${SIZE / 2 + 1}-\r\n\r\n`)
  t.teardown(() => { sock.destroy() })
  t.ok(await waitFor(() => ends.length === 1, 20_000), 'the exchange ends without the client reading')
  t.equal(ends[0].status, 206)
  t.equal(ends[0].error, 'ERR_CLIENT_TIMEOUT')
  t.ok(ends[0].bytesOut < SIZE / 4, `only what the socket took was read (${ends[0].bytesOut} of ${SIZE} bytes)`)
  t.ok(await waitFor(() => ![...openFds().values()].includes(file)), 'the file is closed')
})

t.test('a file that shrinks under a multipart answer: the connection is cut, never a short body', async (t) => {
  const root = docroot(t)
  const file = join(root, 'big.bin')
  writeFileSync(file, '')
  truncateSync(file, SIZE)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const sock = connect({ host: '127.0.0.1', port })
  t.teardown(() => { sock.destroy() })
  sock.on('error', () => {})
  let got = 0
  let closed = false
  sock.on('close', () => { closed = true })
  sock.once('data', (d: Buffer) => {
    got += d.length
    sock.pause()
    truncateSync(file, 1024 * 1024)
    setImmediate(() => { sock.on('data', (c: Buffer) => { got += c.length }); sock.resume() })
  })
  sock.write(`GET /big.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1,${SIZE / 2}-\r\n\r\n`)
  t.ok(await waitFor(() => closed, 20_000), 'the proxy closed the connection')
  t.ok(got < SIZE / 2, `fewer bytes than announced (${got})`)
  t.ok(await waitFor(() => ends.length === 1, 10_000))
  t.equal(ends[0].error, 'ERR_STATIC_READ')
  t.ok(await waitFor(() => ![...openFds().values()].includes(file)), 'the file is closed')
})
