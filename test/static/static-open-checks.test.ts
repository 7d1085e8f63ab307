/**
 * The checks of the static adapter's fast path, each made to fail on purpose:
 * - openFdInsideRoots (the bare-descriptor open the adapter uses, src/core/sendfile.ts) refuses
 *   what openInsideRoots refuses, with its checks now synchronous: a last element that is a
 *   symlink (O_NOFOLLOW), a directory on the way that leads out (the descriptor's own path), a
 *   FIFO (without blocking), a directory, a device; and it leaves no descriptor behind.
 * - FileBody on a bare descriptor closes it when it ends, errors or is destroyed mid-read.
 * - The docroot's real path is cached (src/protocols/static/adapter.ts docrootFor), its stats are
 *   not: a docroot chowned from root to a site user applies the owner rule on the next request,
 *   and a docroot path re-pointed at another directory serves that directory's file at once.
 */
import t from 'tap'
import { chownSync, closeSync, constants, linkSync, mkdirSync, mkdtempSync, openSync, realpathSync, rmSync, symlinkSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ProxyError } from '../../src/core/errors.js'
import { closeVerified, FileBody, openFdInsideRoots } from '../../src/core/sendfile.js'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { proxyServer, rawRequest } from '../helpers/servers.js'
import { withTestUsers } from '../helpers/users.js'

guardLeaks(t)

function tmp (t: { teardown (fn: () => void): void }): string {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'pc-static-open-')))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Descriptors of this process on `path`. */
const fdsOn = (path: string): number => [...openFds().values()].filter((p) => p === path || p === `${path} (deleted)`).length

async function refusal (path: string, roots: string[]): Promise<string> {
  try {
    const { fd } = await openFdInsideRoots(path, roots)
    closeVerified(fd)
    return 'OPENED'
  } catch (err) {
    return err instanceof ProxyError ? err.code : String((err as NodeJS.ErrnoException).code)
  }
}

t.test('openFdInsideRoots refuses what is not a regular file inside the roots, and keeps no fd', async (t) => {
  const base = tmp(t)
  const root = join(base, 'root')
  const outside = join(base, 'outside')
  mkdirSync(join(outside, 'd'), { recursive: true })
  mkdirSync(join(root, 'dir'), { recursive: true })
  writeFileSync(join(outside, 'secret.txt'), 'SECRET')
  writeFileSync(join(outside, 'd', 'f.txt'), 'SECRET')
  writeFileSync(join(root, 'ok.txt'), 'OK')
  symlinkSync(join(outside, 'secret.txt'), join(root, 'out'))
  symlinkSync('ok.txt', join(root, 'in'))
  // A directory on the way that leads out, the last element a regular file: neither O_NOFOLLOW nor
  // a dev/ino comparison of the name sees it, only the descriptor's own path.
  symlinkSync(join(outside, 'd'), join(root, 'd'))
  execFileSync('mkfifo', [join(root, 'fifo')])
  t.teardown(() => {
    // Wake an open() a broken version left stuck on the FIFO.
    try { closeSync(openSync(join(root, 'fifo'), constants.O_WRONLY | constants.O_NONBLOCK)) } catch {}
  })
  t.equal(await refusal(join(root, 'out'), [root]), 'ERR_SENDFILE_FORBIDDEN', 'a symlink out')
  t.equal(await refusal(join(root, 'in'), [root]), 'ERR_SENDFILE_FORBIDDEN', 'a symlink, even inside')
  t.equal(await refusal(join(root, 'd', 'f.txt'), [root]), 'ERR_SENDFILE_FORBIDDEN', 'a directory on the way leading out')
  t.equal(await refusal(join(root, 'fifo'), [root]), 'ERR_SENDFILE_FORBIDDEN', 'a FIFO, at once')
  t.equal(await refusal(join(root, 'dir'), [root]), 'ERR_SENDFILE_FORBIDDEN', 'a directory')
  t.equal(await refusal('/dev/zero', ['/dev']), 'ERR_SENDFILE_FORBIDDEN', 'a device')
  t.equal(await refusal(join(root, 'gone.txt'), [root]), 'ERR_SCRIPT_NOT_FOUND', 'missing')
  for (const p of [join(outside, 'secret.txt'), join(outside, 'd', 'f.txt'), join(root, 'fifo'), join(root, 'dir'), '/dev/zero']) {
    t.ok(await waitFor(() => fdsOn(p) === 0), `no descriptor left on ${p}`)
  }
  const { fd, stats } = await openFdInsideRoots(join(root, 'ok.txt'), [root])
  t.equal(stats.size, 2)
  t.equal(fdsOn(join(root, 'ok.txt')), 1, 'open')
  t.equal(closeVerified(fd), null)
  t.equal(fdsOn(join(root, 'ok.txt')), 0, 'closed at once, synchronously')
})

function drain (body: FileBody): Promise<{ bytes: number, error: Error | null }> {
  return new Promise((resolve) => {
    let bytes = 0
    body.on('data', (c: Buffer) => { bytes += c.length })
    body.once('end', () => resolve({ bytes, error: null }))
    body.once('error', (error) => resolve({ bytes, error }))
  })
}

t.test('FileBody on a descriptor: closed at the end, on a shrink error, and when destroyed mid-read', async (t) => {
  const root = tmp(t)
  const file = join(root, 'f.bin')
  writeFileSync(file, Buffer.alloc(300 * 1024, 'a'))
  const whole = await openFdInsideRoots(file, [root])
  const r = await drain(new FileBody(whole.fd, whole.stats.size, file))
  t.same(r, { bytes: 300 * 1024, error: null })
  t.ok(await waitFor(() => fdsOn(file) === 0), 'closed after the end')

  const shrink = await openFdInsideRoots(file, [root])
  truncateSync(file, 1000)
  const s = await drain(new FileBody(shrink.fd, shrink.stats.size, file))
  t.match(s.error?.message, /shrank while sent: 1000 of 307200 bytes/)
  t.ok(await waitFor(() => fdsOn(file) === 0), 'closed after the shrink error')

  writeFileSync(file, Buffer.alloc(300 * 1024, 'b'))
  const cut = await openFdInsideRoots(file, [root])
  const body = new FileBody(cut.fd, cut.stats.size, file)
  const closed = new Promise((resolve) => body.once('close', resolve))
  body.once('data', () => body.destroy()) // a read of the next chunk is in flight now
  body.on('error', () => {})
  await closed
  t.equal(fdsOn(file), 0, 'closed by the time the stream says so')
})

/** One raw request (Connection: close): status and body. */
async function raw (port: number, target: string): Promise<{ status: number, body: string }> {
  const out = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`)
  const end = out.indexOf('\r\n\r\n')
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(out)?.[1] ?? 0), body: end < 0 ? '' : out.slice(end + 4) }
}

t.test('a docroot path re-pointed at another directory: its file is served on the next request', async (t) => {
  const base = tmp(t)
  mkdirSync(join(base, 'a'))
  mkdirSync(join(base, 'b'))
  writeFileSync(join(base, 'a', 'f.txt'), 'SITE-A')
  writeFileSync(join(base, 'b', 'f.txt'), 'SITE-B')
  symlinkSync('a', join(base, 'www'))
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: join(base, 'www') }] })
  t.same(await raw(port, '/f.txt'), { status: 200, body: 'SITE-A' })
  unlinkSync(join(base, 'www'))
  symlinkSync('b', join(base, 'www'))
  t.same(await raw(port, '/f.txt'), { status: 200, body: 'SITE-B' }, 'not the old directory\'s file, not a 403 from a stale real path')
})

const SITE = { name: 'pcopensite', id: 2151 }
const OTHER = { name: 'pcopenother', id: 2152 }

t.test('the owner rule reads the docroot\'s owner on every request, not from a cache', async (t) => {
  if (!withTestUsers(t, 'the docroot owner rule', [SITE, OTHER])) return
  const base = tmp(t)
  const root = join(base, 'www')
  mkdirSync(root)
  writeFileSync(join(base, 'private'), 'OTHER-SECRET', { mode: 0o600 })
  chownSync(join(base, 'private'), OTHER.id, OTHER.id)
  execFileSync('chmod', ['600', join(base, 'private')])
  linkSync(join(base, 'private'), join(root, 'private.txt'))
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  t.same(await raw(port, '/private.txt'), { status: 200, body: 'OTHER-SECRET' }, 'a root-owned docroot: the operator\'s files')
  chownSync(root, SITE.id, SITE.id)
  const r = await raw(port, '/private.txt')
  t.equal(r.status, 403, 'owned by the site user now: refused on the very next request')
  t.notMatch(r.body, /SECRET/)
  chownSync(root, 0, 0)
  t.equal((await raw(port, '/private.txt')).status, 200, 'and back')
})

t.test('a 64 KiB file: served whole, ranged, and closed when clients leave early', async (t) => {
  const root = tmp(t)
  const file = join(root, 'small.txt')
  const text = 'x'.repeat(64 * 1024 - 1) + 'Z'
  writeFileSync(file, text)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: root }] })
  let ended = 0
  proxy.events.on('request:end', () => { ended++ })
  t.same(await raw(port, '/small.txt'), { status: 200, body: text }, 'the whole 64 KiB, the last byte included')
  const ranged = await rawRequest(port, 'GET /small.txt HTTP/1.1\r\nHost: h\r\nConnection: close\r\nRange: bytes=-2\r\n\r\n')
  t.match(ranged, /^HTTP\/1\.1 206 /)
  t.ok(ranged.endsWith('\r\n\r\nxZ'), 'the last two bytes')
  const { connect } = await import('node:net')
  const N = 40
  for (let i = 0; i < N; i++) {
    const s = connect({ host: '127.0.0.1', port })
    s.on('error', () => {})
    s.write('GET /small.txt HTTP/1.1\r\nHost: h\r\n\r\n', () => s.destroy())
  }
  t.ok(await waitFor(() => ended >= N + 2, 20_000), `every exchange ended (${ended})`)
  t.ok(await waitFor(() => fdsOn(file) === 0, 10_000), `no fd of the file is left (${fdsOn(file)})`)
})
