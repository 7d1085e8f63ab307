/**
 * X-Sendfile safety (audit 2026-12): what a backend, or anyone who can write inside an allowed root,
 * must not be able to make the proxy do.
 *
 * - Check-then-open race: the real path is checked against the roots, then opened; a name swapped
 *   between the two for a symlink (last element or a directory on the way) must not be followed out
 *   of the roots. Driven deterministically through the `afterCheck` seam of openSendfile, and on
 *   openInsideRoots directly with a path that is a symlink at open time.
 * - The body is exactly the Content-Length announced: a file growing while sent sends no extra byte
 *   (they would be the next response on a kept-alive connection); a file shrinking cuts the
 *   connection instead of ending a short body and keeping it alive.
 * - A FIFO named by X-Sendfile is refused without blocking a threadpool thread in open().
 * - Names starting with `..` (`..notes.txt`, `..hidden.sh`) are inside the root.
 *
 * The wire-level cases run real shell CGI scripts that emit X-Sendfile.
 */
import t, { type Test } from 'tap'
import { appendFileSync, closeSync, constants, mkdirSync, openSync, readFileSync, realpathSync, renameSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { connect } from 'node:net'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { isInside } from '../../src/core/cgi/script.js'
import { ProxyError, type ErrorCode } from '../../src/core/errors.js'
import { openInsideRoots, openSendfile, type SendfileHooks } from '../../src/core/sendfile.js'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { cgiProxy, tempDir, writeScripts } from '../cgi/harness.js'

guardLeaks(t, { timeoutMs: 10_000 })

const SECRET = 'SECRET-OUTSIDE-THE-ROOT\n'

interface Layout { base: string, files: string, outside: string, roots: string[] }

/** <base>/files (the allowed root) and <base>/outside (holding the secret). Real paths. */
function layout (t: Test): Layout {
  const base = realpathSync(tempDir(t, 'pc-sendfile-safety-'))
  const files = join(base, 'files')
  const outside = join(base, 'outside')
  mkdirSync(files)
  mkdirSync(join(outside, 'd'), { recursive: true })
  writeFileSync(join(outside, 'secret.txt'), SECRET)
  writeFileSync(join(outside, 'd', 'f.txt'), SECRET)
  return { base, files, outside, roots: [files] }
}

interface Drained { body: Buffer, error: Error | null }

/** Read a body stream to its end or its error. */
function drain (stream: Readable): Promise<Drained> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.once('end', () => resolve({ body: Buffer.concat(chunks), error: null }))
    stream.once('error', (error) => resolve({ body: Buffer.concat(chunks), error }))
  })
}

/** openSendfile and read the whole body; a refusal as its error code. */
async function outcome (path: string, roots: string[], hooks?: SendfileHooks): Promise<string | ErrorCode> {
  try {
    const f = await openSendfile(path, roots, [], hooks)
    const { body, error } = await drain(f.stream)
    if (error !== null) throw error
    return body.toString()
  } catch (err) {
    if (err instanceof ProxyError) return err.code
    throw err
  }
}

/** Descriptors of this process that point at `path`. */
function fdsOn (path: string): number[] {
  return [...openFds()].filter(([, target]) => target === path || target === `${path} (deleted)`).map(([fd]) => fd)
}

function mkfifo (path: string): void {
  execFileSync('mkfifo', [path])
}

/**
 * Wake whatever is stuck opening a FIFO for reading (the unfixed code): a non-blocking writer
 * open succeeds only while a reader waits, so open-and-close until ENXIO says none is left.
 */
function releaseFifo (path: string): void {
  for (let i = 0; i < 64; i++) {
    let fd: number
    try { fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK) } catch { return }
    closeSync(fd)
  }
}

/** `p`, or 'TIMEOUT' when it has not settled within `ms` (a deadline, not a wait). */
async function within<T> (p: Promise<T>, ms: number): Promise<T | 'TIMEOUT'> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<'TIMEOUT'>((resolve) => { timer = setTimeout(() => resolve('TIMEOUT'), ms) })
  try {
    return await Promise.race([p, deadline])
  } finally {
    clearTimeout(timer)
  }
}

// --- 1. check-then-open race ------------------------------------------------------------------

t.test('race: the checked name swapped for a symlink to a file outside is refused (O_NOFOLLOW)', async (t) => {
  const L = layout(t)
  const race = join(L.files, 'race')
  writeFileSync(race, 'HARMLESS\n')
  t.equal(await outcome(race, L.roots), 'HARMLESS\n', 'served while nobody swaps it')
  const swap: SendfileHooks = {
    afterCheck: (real) => {
      // What a writer inside the root does between the check and the open: an atomic rename of a
      // symlink over the checked name.
      symlinkSync(join(L.outside, 'secret.txt'), join(L.files, 'l.tmp'))
      renameSync(join(L.files, 'l.tmp'), real)
    }
  }
  t.equal(await outcome(race, L.roots, swap), 'ERR_SENDFILE_FORBIDDEN', 'refused, the secret is not served')
})

t.test('race: a directory on the way swapped for a symlink leading out is refused (descriptor path)', async (t) => {
  const L = layout(t)
  mkdirSync(join(L.files, 'd'))
  writeFileSync(join(L.files, 'd', 'f.txt'), 'HARMLESS\n')
  const swap: SendfileHooks = {
    afterCheck: () => {
      // The last element stays a regular file, so O_NOFOLLOW alone would not see this one; and the
      // name keeps pointing where the descriptor does, so neither would a dev/ino comparison.
      renameSync(join(L.files, 'd'), join(L.files, 'd.old'))
      symlinkSync(join(L.outside, 'd'), join(L.files, 'd'))
    }
  }
  t.equal(await outcome(join(L.files, 'd', 'f.txt'), L.roots, swap), 'ERR_SENDFILE_FORBIDDEN')
})

t.test('openInsideRoots: a path that is a symlink at open time is not followed, even inside the root', async (t) => {
  const L = layout(t)
  writeFileSync(join(L.files, 'target.txt'), 'INSIDE\n')
  symlinkSync(join(L.outside, 'secret.txt'), join(L.files, 'out'))
  symlinkSync('target.txt', join(L.files, 'in'))
  for (const name of ['out', 'in']) {
    const err = await openInsideRoots(join(L.files, name), L.roots).then(async ({ fh }) => { await fh.close(); return null }, (e: unknown) => e)
    t.type(err, ProxyError, name)
    t.equal((err as ProxyError).code, 'ERR_SENDFILE_FORBIDDEN', `${name}: refused`)
  }
  const ok = await openInsideRoots(join(L.files, 'target.txt'), L.roots)
  t.equal(ok.size, 7)
  await ok.fh.close()
})

t.test('race, probabilistic extra: a writer flipping a name between a file and a symlink out never gets it served', async (t) => {
  const L = layout(t)
  const race = join(L.files, 'race')
  writeFileSync(race, 'HARMLESS\n')
  // Flip on every turn of the event loop while the requests' fs calls run in the threadpool.
  let flipping = true
  let link = false
  const flip = (): void => {
    if (!flipping) return
    if (link) {
      writeFileSync(join(L.files, 'f.tmp'), 'HARMLESS\n')
      renameSync(join(L.files, 'f.tmp'), race)
    } else {
      symlinkSync(join(L.outside, 'secret.txt'), join(L.files, 'l.tmp'))
      renameSync(join(L.files, 'l.tmp'), race)
    }
    link = !link
    setImmediate(flip)
  }
  flip()
  const seen = new Map<string, number>()
  try {
    for (let round = 0; round < 32; round++) {
      const got = await Promise.all(Array.from({ length: 8 }, async () => await outcome(race, L.roots)))
      for (const g of got) seen.set(g, (seen.get(g) ?? 0) + 1)
    }
  } finally {
    flipping = false
  }
  t.notOk(seen.has(SECRET), 'the secret was never served', { seen: Object.fromEntries(seen) })
  t.ok([...seen.keys()].every((k) => k === 'HARMLESS\n' || k === 'ERR_SENDFILE_FORBIDDEN' || k === 'ERR_SCRIPT_NOT_FOUND'), 'only the file or a refusal', { seen: Object.fromEntries(seen) })
})

// --- 2. body bounded by the announced Content-Length ---------------------------------------------

t.test('a file growing after the open: exactly the announced bytes, not one more', async (t) => {
  const L = layout(t)
  const path = join(L.files, 'grow.bin')
  const original = Buffer.alloc(200 * 1024 + 5, 'a')
  writeFileSync(path, original)
  const f = await openSendfile(path, L.roots, [])
  t.equal(f.size, original.length)
  appendFileSync(path, 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSMUGL')
  const { body, error } = await drain(f.stream)
  t.equal(error, null)
  t.equal(body.length, f.size, 'body length = Content-Length')
  t.ok(body.equals(original), 'the bytes that were there at open time')
  t.ok(await waitFor(() => fdsOn(path).length === 0), 'the descriptor is closed at the end')
})

t.test('a file shrinking after the open: the stream errors instead of ending short', async (t) => {
  const L = layout(t)
  const path = join(L.files, 'shrink.bin')
  writeFileSync(path, Buffer.alloc(200 * 1024, 'a'))
  const f = await openSendfile(path, L.roots, [])
  truncateSync(path, 1024)
  const { body, error } = await drain(f.stream)
  t.ok(error !== null, 'an error, never a clean end')
  t.match(error?.message, /shrank while sent: 1024 of 204800 bytes/)
  t.equal(body.length, 1024)
  t.ok(await waitFor(() => fdsOn(path).length === 0), 'the descriptor is closed')
})

t.test('an empty file: Content-Length 0, an empty body, no descriptor kept', async (t) => {
  const L = layout(t)
  const path = join(L.files, 'empty')
  writeFileSync(path, '')
  const f = await openSendfile(path, L.roots, [['Content-Length', '99'], ['X-Sendfile', path]].flat())
  t.same(f.headers, ['Content-Length', '0'], 'the backend framing and X-Sendfile replaced')
  t.same(fdsOn(path), [], 'closed before the body is read')
  const { body, error } = await drain(f.stream)
  t.equal(error, null)
  t.equal(body.length, 0)
})

t.test('a body destroyed unread (HEAD, client gone) closes its descriptor', async (t) => {
  const L = layout(t)
  const path = join(L.files, 'f.bin')
  writeFileSync(path, Buffer.alloc(300 * 1024, 'b'))
  const f = await openSendfile(path, L.roots, [])
  t.equal(fdsOn(path).length, 1)
  f.stream.destroy()
  t.ok(await waitFor(() => fdsOn(path).length === 0), 'closed')
})

// --- 3. special files ---------------------------------------------------------------------------

t.test('a FIFO is refused at once, without blocking in open()', async (t) => {
  const L = layout(t)
  const fifo = join(L.files, 'fifo')
  mkfifo(fifo)
  // Registered after layout's cleanup, so it runs first: nothing stays blocked on the FIFO.
  t.teardown(() => releaseFifo(fifo))
  const got = await within(outcome(fifo, L.roots), 2000)
  t.equal(got, 'ERR_SENDFILE_FORBIDDEN', 'refused, not stuck (TIMEOUT = blocked in open)')
  t.same(fdsOn(fifo), [], 'no descriptor kept')
})

t.test('a directory or a character device inside the root is refused', async (t) => {
  const L = layout(t)
  mkdirSync(join(L.files, 'dir'))
  t.equal(await outcome(join(L.files, 'dir'), L.roots), 'ERR_SENDFILE_FORBIDDEN', 'directory')
  t.equal(await outcome('/dev/zero', ['/dev']), 'ERR_SENDFILE_FORBIDDEN', '/dev/zero (would never end)')
})

// --- 4. names starting with `..` ------------------------------------------------------------------

t.test('isInside: only a whole `..` element leads out', async (t) => {
  t.ok(isInside('/srv/files', '/srv/files/..notes.txt'))
  t.ok(isInside('/srv/files', '/srv/files/..hidden.sh'))
  t.ok(isInside('/srv/files', '/srv/files/a/..b'))
  t.ok(isInside('/srv/files', '/srv/files/...'))
  t.notOk(isInside('/srv/files', '/srv'), 'parent')
  t.notOk(isInside('/srv/files', '/srv/x'), 'sibling of the root')
  t.notOk(isInside('/srv/files', '/srv/files'), 'the root itself is not strictly inside (unchanged)')
  t.notOk(isInside('/srv/files', '/srv/files2/a'), 'boundary-aware (unchanged)')
  t.notOk(isInside('/srv/files', '/srv/..files/a'))
})

t.test('openSendfile serves a file named ..notes.txt inside the root', async (t) => {
  const L = layout(t)
  writeFileSync(join(L.files, '..notes.txt'), 'NOTES\n')
  t.equal(await outcome(join(L.files, '..notes.txt'), L.roots), 'NOTES\n')
})

// --- the same through real CGI scripts ------------------------------------------------------------

const SCRIPTS = {
  // The file comes from the X-File request header: a stand-in for an app that names any file.
  'send.sh': '#!/bin/sh\nprintf "Content-Type: application/octet-stream\\nX-Sendfile: %s\\n\\n" "$HTTP_X_FILE"\n',
  'small.sh': '#!/bin/sh\nprintf "Content-Type: text/plain\\nContent-Length: 6\\n\\nSECOND"\n',
  '..hidden.sh': '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nDOTDOT-SCRIPT"\n'
}

interface Site { L: Layout, port: number, url: string, lines: Array<{ level: string, msg: string }> }

async function site (t: Test): Promise<Site> {
  const L = layout(t)
  const www = join(L.base, 'www')
  writeScripts(www, SCRIPTS)
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: www, match: { prefix: '/' }, xSendfile: { allow: [L.files] } }])
  return { L, port: p.port, url: p.url, lines: p.lines }
}

/** One request on its own connection (Connection: close): status and body. */
function fetchOnce (port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port })
    const chunks: Buffer[] = []
    s.on('data', (d: Buffer) => chunks.push(d))
    s.on('error', reject)
    s.on('close', () => {
      const raw = Buffer.concat(chunks).toString('latin1')
      const i = raw.indexOf('\r\n\r\n')
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0), body: i < 0 ? '' : raw.slice(i + 4) })
    })
    let head = `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n`
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`
    s.write(head + '\r\n')
  })
}

/**
 * A file bigger than everything the loopback connection and the proxy can hold in flight while the
 * client reads nothing: the proxy is still reading it when the test changes it. Sparse, so cheap.
 */
function bigSparse (path: string): number {
  const max = (file: string): number => Number(readFileSync(file, 'utf8').trim().split(/\s+/).pop())
  const inFlight = max('/proc/sys/net/ipv4/tcp_rmem') + max('/proc/sys/net/ipv4/tcp_wmem')
  const size = Math.max(64 * 1024 * 1024, 4 * inFlight)
  writeFileSync(path, '')
  truncateSync(path, size)
  return size
}

interface KeptAlive {
  /** Announced Content-Length of the first response. */
  announced: number
  /** First-response body bytes received (counted, not kept). */
  bodyBytes: number
  /** Everything received past the announced body: the next response, or smuggled bytes. */
  after: string
  /** 'closed': the proxy cut the connection; 'second': a second response completed on it. */
  end: 'closed' | 'second'
}

/**
 * On ONE keep-alive connection: GET send.sh for `file`; when its head arrives, run `change` on the
 * file and ask for small.sh on the same connection. Ends when the
 * proxy closes the connection or the second response (body SECOND) is complete.
 */
function keptAlive (port: number, file: string, change: () => void): Promise<KeptAlive> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port })
    let head = ''
    let announced = -1
    let bodyBytes = 0
    let after = ''
    let tail = ''
    let settled = false
    const done = (end: KeptAlive['end']): void => {
      if (settled) return
      settled = true
      s.destroy()
      resolve({ announced, bodyBytes, after, end })
    }
    s.on('error', () => {}) // a reset from the proxy ends the same way as a close
    s.on('close', () => done('closed'))
    s.on('data', (d: Buffer) => {
      if (announced < 0) {
        head += d.toString('latin1')
        const i = head.indexOf('\r\n\r\n')
        if (i < 0) return
        announced = Number(/\r\ncontent-length: (\d+)/i.exec(head.slice(0, i))?.[1] ?? NaN)
        if (!Number.isFinite(announced)) { s.destroy(); reject(new Error(`no Content-Length: ${head.slice(0, i)}`)); return }
        d = Buffer.from(head.slice(i + 4), 'latin1')
        // Synchronously with the head: the proxy cannot be further into the file than what the
        // connection holds in flight (bigSparse), so it reads the changed file from here on.
        change()
        s.write('GET /small.sh HTTP/1.1\r\nHost: a\r\n\r\n')
      }
      const inBody = Math.min(d.length, announced - bodyBytes)
      bodyBytes += inBody
      after += d.subarray(inBody).toString('latin1')
      // Watched over body and after alike: after a short body the second response lands inside
      // what the client counts as the first one's body.
      tail = (tail + d.toString('latin1')).slice(-64)
      if (/\r\n\r\nSECOND$/.test(tail)) done('second')
    })
    s.write(`GET /send.sh HTTP/1.1\r\nHost: a\r\nX-File: ${file}\r\n\r\n`)
  })
}

t.test('CGI: a file growing while sent does not leak bytes into the next response', async (t) => {
  const S = await site(t)
  const path = join(S.L.files, 'grow.bin')
  const size = bigSparse(path)
  const r = await keptAlive(S.port, path, () => appendFileSync(path, 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSMUGL'))
  t.equal(r.announced, size)
  t.equal(r.end, 'second', 'the connection stays usable')
  t.equal(r.bodyBytes, size)
  t.match(r.after, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nSECOND$/, 'right after the body: the second response, nothing smuggled', { after: r.after.slice(0, 200) })
  t.equal(r.after.split('HTTP/1.1 ').length - 1, 1, 'one response after the body: the one asked for')
  t.notMatch(r.after, /SMUGL/)
})

t.test('CGI: a file shrinking while sent cuts the connection and logs the error', async (t) => {
  const S = await site(t)
  const path = join(S.L.files, 'shrink.bin')
  const size = bigSparse(path)
  const r = await keptAlive(S.port, path, () => truncateSync(path, 1024))
  t.equal(r.announced, size)
  t.equal(r.end, 'closed', 'the proxy closed the connection (no keep-alive after a short body)')
  t.ok(r.bodyBytes < size, 'short body', { bodyBytes: r.bodyBytes })
  t.equal(r.after, '', 'no second response on that connection')
  t.ok(await waitFor(() => S.lines.some((l) => l.level === 'error' && /shrank while sent/.test(l.msg))), 'logged', { lines: S.lines })
})

t.test('CGI: FIFOs named by X-Sendfile are refused and do not stall the proxy', async (t) => {
  const S = await site(t)
  const fifo = join(S.L.files, 'fifo')
  mkfifo(fifo)
  t.teardown(() => releaseFifo(fifo))
  writeFileSync(join(S.L.files, 'ok.txt'), 'OK-FILE\n')
  // More than the 4 libuv threadpool threads: blocked opens would hold every one of them.
  const fifos = Array.from({ length: 6 }, async () => await fetchOnce(S.port, '/send.sh', { 'X-File': fifo }))
  const answers = await within(Promise.all(fifos), 5000)
  t.not(answers, 'TIMEOUT', 'every FIFO request answered')
  if (answers !== 'TIMEOUT') {
    t.same(answers.map((a) => a.status), [502, 502, 502, 502, 502, 502])
    t.match(answers[0].body, /ERR_SENDFILE_FORBIDDEN/)
  }
  const ok = await within(fetchOnce(S.port, '/send.sh', { 'X-File': join(S.L.files, 'ok.txt') }), 5000)
  t.same(ok, { status: 200, body: 'OK-FILE\n' }, 'file I/O still works')
})

t.test('CGI: ..-prefixed names are inside the root (script walk and X-Sendfile)', async (t) => {
  const S = await site(t)
  writeFileSync(join(S.L.files, '..notes.txt'), 'DOTDOT-NAMED FILE\n')
  t.same(await fetchOnce(S.port, '/send.sh', { 'X-File': join(S.L.files, '..notes.txt') }), { status: 200, body: 'DOTDOT-NAMED FILE\n' })
  const script = await fetchOnce(S.port, '/..hidden.sh')
  t.equal(script.status, 200, 'the script walk runs /..hidden.sh')
  t.match(script.body, /^d\r\nDOTDOT-SCRIPT\r\n0\r\n\r\n$/, 'its output (chunked)')
  // Still out: a real `..` and a symlink leading out.
  symlinkSync('/etc/passwd', join(S.L.files, 'pw'))
  t.equal((await fetchOnce(S.port, '/send.sh', { 'X-File': join(S.L.files, '..', 'outside', 'secret.txt') })).status, 502)
  t.equal((await fetchOnce(S.port, '/send.sh', { 'X-File': join(S.L.files, 'pw') })).status, 502)
})
