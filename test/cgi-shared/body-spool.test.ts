import t from 'tap'
import { createHash } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { spoolBody } from '../../src/core/body-spool.js'
import { ProxyError } from '../../src/core/errors.js'
import { openFds } from '../helpers/leaks.js'
import { assertNoLeaks, leakBaseline } from './leak-check.js'

const baseline = leakBaseline()

const dir = await mkdtemp(join(tmpdir(), 'proxycore-spool-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))

function chunked (total: number, size: number): { stream: Readable, sha: string } {
  const hash = createHash('sha256')
  const chunks: Buffer[] = []
  for (let off = 0; off < total; off += size) {
    const c = Buffer.alloc(Math.min(size, total - off), off % 251)
    hash.update(c)
    chunks.push(c)
  }
  return { stream: Readable.from(chunks, { objectMode: false }), sha: hash.digest('hex') }
}

async function sha (stream: Readable): Promise<{ sha: string, n: number }> {
  const hash = createHash('sha256')
  let n = 0
  for await (const c of stream) { hash.update(c as Buffer); n += (c as Buffer).length }
  return { sha: hash.digest('hex'), n }
}

function spoolFds (): string[] {
  return [...openFds().values()].filter((p) => p.includes('proxycore-spool-'))
}

async function errCode (p: Promise<unknown>): Promise<string> {
  try { await p } catch (err) { return err instanceof ProxyError ? err.code : String(err) }
  return 'resolved'
}

t.test('small body stays in memory', async (t) => {
  const src = chunked(1000, 100)
  const s = await spoolBody(src.stream, { maxBytes: 1 << 20, tmpDir: dir })
  t.equal(s.length, 1000)
  t.same(spoolFds(), [], 'no temp file for a small body')
  t.same(await sha(s.body), { sha: src.sha, n: 1000 })
  await s.cleanup()
})

t.test('empty body has length 0', async (t) => {
  const s = await spoolBody(Readable.from([]), { maxBytes: 10 })
  t.equal(s.length, 0)
  t.same(await sha(s.body), { sha: createHash('sha256').digest('hex'), n: 0 })
  await s.cleanup()
})

t.test('large body goes to an unlinked temp file, closed after reading (AC-86)', async (t) => {
  const src = chunked(1 << 20, 7000)
  const s = await spoolBody(src.stream, { maxBytes: 2 << 20, tmpDir: dir })
  t.equal(s.length, 1 << 20)
  t.same(await readdir(dir), [], 'nothing on disk while spooled')
  const open = spoolFds()
  t.equal(open.length, 1, 'one fd holds the body')
  t.match(open[0], /\(deleted\)$/)
  t.same(await sha(s.body), { sha: src.sha, n: 1 << 20 })
  await new Promise((resolve) => setImmediate(resolve))
  await s.cleanup()
  t.same(spoolFds(), [], 'fd closed')
})

t.test('cleanup without reading releases the fd', async (t) => {
  const s = await spoolBody(chunked(200_000, 65536).stream, { maxBytes: 1 << 20, tmpDir: dir, memoryBytes: 1000 })
  t.equal(spoolFds().length, 1)
  await s.cleanup()
  await s.cleanup()
  t.same(spoolFds(), [], 'fd closed, cleanup idempotent')
})

t.test('exactly maxBytes passes, one more is 413', async (t) => {
  const ok = await spoolBody(chunked(5000, 1000).stream, { maxBytes: 5000, tmpDir: dir, memoryBytes: 100 })
  t.equal(ok.length, 5000)
  await ok.cleanup()
  const src = new PassThrough()
  const p = spoolBody(src, { maxBytes: 5000, tmpDir: dir, memoryBytes: 100 })
  src.write(Buffer.alloc(3000))
  src.write(Buffer.alloc(2001))
  t.equal(await errCode(p), 'ERR_BODY_TOO_LARGE')
  t.ok(src.isPaused(), 'the source is left paused for the caller')
  t.notOk(src.destroyed, 'and not destroyed (the 413 still needs the socket)')
  src.destroy()
  t.same(spoolFds(), [], 'temp file fd closed')
  t.same(await readdir(dir), [], 'nothing on disk')
})

t.test('abort signal stops spooling', async (t) => {
  const src = new PassThrough()
  const ac = new AbortController()
  const p = spoolBody(src, { maxBytes: 1 << 20, tmpDir: dir, memoryBytes: 10, signal: ac.signal })
  src.write(Buffer.alloc(100))
  await new Promise((resolve) => setImmediate(resolve))
  ac.abort()
  t.equal(await errCode(p), 'ERR_CLIENT_ABORTED')
  src.destroy()
  t.same(spoolFds(), [])
  const pre = new AbortController()
  pre.abort()
  t.equal(await errCode(spoolBody(new PassThrough(), { maxBytes: 1, signal: pre.signal })), 'ERR_CLIENT_ABORTED', 'already aborted')
})

t.test('source error or early close is a client abort', async (t) => {
  const a = new PassThrough()
  const pa = spoolBody(a, { maxBytes: 100 })
  a.destroy(new Error('ECONNRESET'))
  t.equal(await errCode(pa), 'ERR_CLIENT_ABORTED')
  const b = new PassThrough()
  const pb = spoolBody(b, { maxBytes: 100 })
  b.write('abc')
  b.destroy()
  t.equal(await errCode(pb), 'ERR_CLIENT_ABORTED')
})

t.test('a temp dir that cannot be used is an internal error, not a leak', async (t) => {
  const code = await errCode(spoolBody(chunked(1000, 100).stream, { maxBytes: 5000, memoryBytes: 10, tmpDir: join(dir, 'missing') }))
  t.equal(code, 'ERR_INTERNAL')
  t.same(spoolFds(), [])
})

t.test('no leaked fd or child', (t) => assertNoLeaks(t, baseline))
