/**
 * Audit 35 (static, files and ranges): a file renamed over, truncated or emptied while it is sent
 * (after the head is out), and the range-abuse patterns of CVE-2011-3192, through the real proxy.
 * The client must get exactly what the head announced, or a cut connection: never a clean end
 * short of Content-Length, never a byte more, never bytes of another file.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs'
import { request, type IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

const SIZE = 64 * 1024 * 1024

function bigFile (t: { teardown (fn: () => void): void }): { root: string, file: string } {
  const root = mkdtempSync(join(tmpdir(), 'pc-a35f-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const file = join(root, 'big.bin')
  writeFileSync(file, '')
  truncateSync(file, SIZE) // sparse: zeros
  return { root, file }
}

const fileOpen = (file: string): boolean => [...openFds().values()].some((p) => p.startsWith(file))

interface Got { status: number, length: number, got: number, foreign: number, complete: boolean, range: string | undefined }

/**
 * GET `path` (with `headers`); after the first body bytes the response is paused, `midway` runs,
 * and reading goes on. `foreign`: bytes that are not the zeros of the original file.
 */
function slowGet (port: number, path: string, headers: Record<string, string>, midway: () => void): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, headers }, (res: IncomingMessage) => {
      let got = 0
      let foreign = 0
      let paused = false
      res.on('data', (c: Buffer) => {
        got += c.length
        for (let i = 0; i < c.length; i++) if (c[i] !== 0) foreign++
        if (!paused) {
          paused = true
          res.pause()
          midway()
          setImmediate(() => res.resume())
        }
      })
      const done = (): void => resolve({ status: res.statusCode ?? 0, length: Number(res.headers['content-length']), got, foreign, complete: res.complete, range: res.headers['content-range'] })
      res.once('end', done)
      res.once('aborted', () => {})
      res.once('error', () => {})
      res.once('close', done)
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('a file renamed over while sent: every byte from the file opened, as many as announced', async (t) => {
  const { root, file } = bigFile(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const r = await slowGet(port, '/big.bin', {}, () => {
    writeFileSync(join(root, 'new.bin'), Buffer.alloc(1024 * 1024, 'N'))
    renameSync(join(root, 'new.bin'), file)
  })
  t.equal(r.status, 200)
  t.equal(r.length, SIZE)
  t.equal(r.got, SIZE, 'the whole old file')
  t.equal(r.foreign, 0, 'not one byte of the new file')
  t.equal(r.complete, true)
  t.ok(await waitFor(() => !fileOpen(file), 10_000), 'the old file is closed')
  // The next request gets the new file.
  const next = await rawRequest(port, 'GET /big.bin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
  t.match(next, /\r\ncontent-length: 1048576\r\n/i)
})

t.test('a range whose file is truncated below it after the head: cut, never a clean short end', async (t) => {
  const { root, file } = bigFile(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const start = 8 * 1024 * 1024
  const r = await slowGet(port, '/big.bin', { range: `bytes=${start}-` }, () => truncateSync(file, start + 1024 * 1024))
  t.equal(r.status, 206)
  t.equal(r.range, `bytes ${start}-${SIZE - 1}/${SIZE}`)
  t.equal(r.length, SIZE - start)
  t.ok(r.got < r.length, `fewer bytes than announced (${r.got})`)
  t.equal(r.complete, false, 'the connection is cut: the client knows the body is short')
  t.ok(await waitFor(() => !fileOpen(file), 10_000), 'the file is closed')
})

t.test('a file emptied after the head: cut, not a clean end', async (t) => {
  const { root, file } = bigFile(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const r = await slowGet(port, '/big.bin', {}, () => truncateSync(file, 0))
  t.equal(r.length, SIZE)
  t.ok(r.got < SIZE)
  t.equal(r.complete, false)
})

t.test('CVE-2011-3192 patterns: bounded answers, each in one pass', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pc-a35r-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const tiny = Buffer.from(Array.from({ length: 402 }, (_, i) => 65 + (i % 26)))
  writeFileSync(join(root, 'tiny.txt'), tiny)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  const get = async (range: string): Promise<{ status: number, head: string, body: string, ms: number }> => {
    const started = process.hrtime.bigint()
    const out = await rawRequest(port, `GET /tiny.txt HTTP/1.1\r\nHost: h\r\nConnection: close\r\nRange: ${range}\r\n\r\n`)
    const ms = Number(process.hrtime.bigint() - started) / 1e6
    const end = out.indexOf('\r\n\r\n')
    return { status: Number(out.slice(9, 12)), head: out.slice(0, end), body: out.slice(end + 4), ms }
  }
  // The original attack: `0-` repeated (here 1000 times, ~3 KiB): one range, the file once.
  const same = await get('bytes=' + Array(1000).fill('0-').join(','))
  t.equal(same.status, 206)
  t.match(same.head, /\r\ncontent-range: bytes 0-401\/402\r\n/i)
  t.equal(same.body, tiny.toString())
  // Its other form: `5-0,5-1,...,5-1299` (each a part in Apache 2.2.19).
  const grow = await get('bytes=' + Array.from({ length: 1300 }, (_, i) => `5-${i}`).join(','))
  t.equal(grow.status, 206)
  t.match(grow.head, /\r\ncontent-range: bytes 5-401\/402\r\n/i)
  t.equal(grow.body.length, 397)
  // Out of order and overlapping: merged, one range.
  const shuffled = await get('bytes=' + Array.from({ length: 402 }, (_, i) => `${401 - i}-${401 - i}`).join(','))
  t.equal(shuffled.status, 206)
  t.equal(shuffled.body, tiny.toString())
  // 200 disjoint one-byte ranges (the most that get parts): the answer stays within the parts' heads.
  const disjoint = await get('bytes=' + Array.from({ length: 200 }, (_, i) => `${i * 2}-${i * 2}`).join(','))
  t.equal(disjoint.status, 206)
  t.equal((disjoint.body.match(/\r\nContent-Range: /g) ?? []).length, 200, '200 parts')
  t.ok(disjoint.body.length < 200 * 160, `bounded: ${disjoint.body.length} bytes`)
  // 201 (all inside the file): the whole file, 200.
  const over = await get('bytes=' + Array.from({ length: 201 }, (_, i) => `${i * 2}-${i * 2}`).join(','))
  t.equal(over.status, 200)
  t.equal(over.body, tiny.toString())
  for (const r of [same, grow, shuffled, disjoint, over]) t.ok(r.ms < 5000, `answered in ${r.ms.toFixed(1)} ms`)
  // Edge forms: a suffix past the size, an empty set, another unit, whitespace.
  const cases: Array<[string, number, string | undefined]> = [
    ['bytes=-500', 206, 'bytes 0-401/402'],
    ['bytes=-0', 416, 'bytes */402'],
    ['bytes=5-4', 416, 'bytes */402'],
    ['bytes=402-', 416, 'bytes */402'],
    ['bytes=', 200, undefined],
    ['items=0-1', 200, undefined],
    ['bytes=0-1\t,\t3-4', 206, undefined],
  ]
  for (const [range, status, cr] of cases) {
    const r = await get(range)
    t.equal(r.status, status, range)
    t.equal(/\r\ncontent-range: ([^\r\n]*)/i.exec(r.head)?.[1], cr, `${range}: Content-Range`)
  }
})

t.test('special files where a file is looked for: answered at once, never read', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pc-a35s-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  mkdirSync(join(root, 'fifodir'))
  execFileSync('mkfifo', [join(root, 'fifodir', 'index.html')])
  execFileSync('mkfifo', [join(root, 'pipe.txt')])
  symlinkSync('pipe.txt', join(root, 'to-pipe.txt'))
  symlinkSync('/dev', join(root, 'dev'))
  const root0 = process.getuid?.() === 0
  if (root0) {
    mkdirSync(join(root, 'devdir'))
    execFileSync('mknod', [join(root, 'devdir', 'index.html'), 'c', '1', '5']) // /dev/zero's numbers
    execFileSync('mknod', [join(root, 'zero.bin'), 'c', '1', '5'])
  }
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root, index: ['index.html'], symlinks: 'follow' }] })
  const cases: Array<[string, number]> = [
    ['/fifodir/', 404], // an index that is no regular file is no index
    ['/fifodir/index.html', 403],
    ['/to-pipe.txt', 403],
    ['/dev/zero', 403], // a link out of the docroot
    ['/dev/null', 403],
    ...(root0 ? [['/devdir/', 404], ['/zero.bin', 403]] as Array<[string, number]> : []),
  ]
  for (const [target, status] of cases) {
    const started = Date.now()
    const out = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`)
    t.equal(Number(out.slice(9, 12)), status, target)
    t.ok(out.length < 1000, `${target}: a short error page, not a stream`)
    t.ok(Date.now() - started < 5000, `${target}: at once`)
  }
})
