/**
 * `precompressed` on a static route (nginx gzip_static / brotli_static, Caddy precompressed): a
 * `.br` or `.gz` sibling sent instead of the file when Accept-Encoding allows it, with the file's
 * Content-Type, its own validators, length and bytes, and `Vary: Accept-Encoding` on every answer
 * of such a route. The real server (createProxy + node:http), real files in a temp dir, real users
 * where ownership matters (CI runs as root).
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib'
import { createProxy, ConfigError } from '../../src/index.js'
import { silentLogger } from '../../src/logger.js'
import { acceptedEncodings } from '../../src/protocols/static/precompressed.js'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, rawRequest, type Got } from '../helpers/servers.js'
import { withTestUsers } from '../helpers/users.js'

guardLeaks(t)

const JS = 'export function hello () { return "hello, world" }\n'.repeat(200)
/** Different bytes from JS's compressed forms, so a wrong file shows. */
const CSS = 'body { color: red }\n'.repeat(100)

interface Site { top: string, root: string, gz: Buffer, br: Buffer, cssGz: Buffer }

function site (t: { teardown (fn: () => void): void }): Site {
  const top = mkdtempSync(join(tmpdir(), 'pc-static-pre-'))
  t.teardown(() => rmSync(top, { recursive: true, force: true }))
  const root = join(top, 'www')
  mkdirSync(root)
  const gz = gzipSync(JS)
  const br = brotliCompressSync(JS)
  const cssGz = gzipSync(CSS)
  writeFileSync(join(root, 'app.js'), JS)
  writeFileSync(join(root, 'app.js.gz'), gz)
  writeFileSync(join(root, 'app.js.br'), br)
  writeFileSync(join(root, 'site.css'), CSS) // a .gz only
  writeFileSync(join(root, 'site.css.gz'), cssGz)
  writeFileSync(join(root, 'plain.txt'), 'no siblings')
  writeFileSync(join(root, 'gone.js.gz'), gz) // a sibling without its file
  writeFileSync(join(top, 'outside.js.gz'), gzipSync('OUTSIDE-THE-DOCROOT'))
  return { top, root, gz, br, cssGz }
}

async function serve (t: Parameters<typeof proxyServer>[0], root: string, options: Record<string, unknown> | undefined, extra: Record<string, unknown> = {}) {
  return await proxyServer(t, { routes: [{ name: 'files', protocol: 'static', docroot: root, ...(options !== undefined ? { options } : {}), ...extra }] })
}

const ae = (v: string): { headers: Record<string, string> } => ({ headers: { 'accept-encoding': v } })

/** The identity answer: the file's own bytes, no Content-Encoding. */
function isIdentity (t: Test, r: Got, body: string, what: string): void {
  t.equal(r.status, 200, `${what}: 200`)
  t.equal(r.headers['content-encoding'], undefined, `${what}: no Content-Encoding`)
  t.equal(r.body.toString(), body, `${what}: the file itself`)
}

t.test('Accept-Encoding: weights, q=0, *, x-gzip, odd values', async (t) => {
  const both = ['br', 'gzip'] as const
  const cases: Array<[string | undefined, readonly ('br' | 'gzip')[], string[]]> = [
    [undefined, both, []],
    ['', both, []],
    ['gzip, br', both, ['br', 'gzip']],
    ['gzip, br', ['gzip', 'br'], ['gzip', 'br']],
    ['br;q=0.5, gzip', both, ['gzip', 'br']],
    ['gzip', both, ['gzip']],
    ['gzip;q=0, br;q=0', both, []],
    ['identity', both, []],
    ['*', both, ['br', 'gzip']],
    ['*;q=0', both, []],
    ['br;q=0, *', both, ['gzip']],
    ['identity;q=1, gzip;q=0.5', both, []],
    ['identity;q=0.5, gzip;q=0.5', both, ['gzip']],
    ['gzip;q=abc', both, []],
    ['deflate, compress', both, []],
    ['GZIP', ['gzip'], ['gzip']],
    ['br', ['gzip'], []],
    ['x-gzip', both, ['gzip']],
    [' X-GZIP ;q=0.5, identity;q=0.4', both, ['gzip']],
    ['x-gzip-not', both, []],
    ['gzip;q=0.5, BR ;q=1.0', both, ['br', 'gzip']],
    // negotiator reads a q above 1 as given, an empty q as 1: lenient, and only for codings named.
    ['br;q=1.5, gzip;q=0.5', both, ['br', 'gzip']],
    ['gzip;q=, br', both, ['br', 'gzip']],
    ['gzip;;;, br;q=0.1', both, ['gzip', 'br']],
    ['"gzip"', both, []],
  ]
  for (const [header, offered, want] of cases) t.same(acceptedEncodings(header, offered), want, `${JSON.stringify(header)} offered ${offered.join(',')}`)
})

t.test('br before gzip when both are accepted alike; the configured order decides ties', async (t) => {
  const s = site(t)
  const { url } = await serve(t, s.root, { precompressed: true })
  const plain = await get(`${url}/app.js`)
  const r = await get(`${url}/app.js`, ae('gzip, deflate, br'))
  t.equal(r.status, 200)
  t.equal(r.headers['content-encoding'], 'br')
  t.equal(r.headers['content-type'], 'text/javascript; charset=utf-8', 'the file\'s type, not the sibling\'s')
  t.equal(r.headers['content-type'], plain.headers['content-type'])
  t.equal(r.headers.vary, 'Accept-Encoding')
  t.equal(r.headers['content-length'], String(s.br.length), 'the sibling\'s length')
  t.ok(r.body.equals(s.br), 'exactly the sibling\'s bytes')
  t.equal(brotliDecompressSync(r.body).toString(), JS, 'which decode to the file')
  t.match(r.headers.etag, /^W\/"[0-9a-f]+-[0-9a-f]+-br"$/)
  t.not(r.headers.etag, plain.headers.etag, 'not the file\'s ETag')
  const st = statSync(join(s.root, 'app.js.br'))
  t.equal(r.headers['last-modified'], new Date(Math.floor(st.mtimeMs / 1000) * 1000).toUTCString(), 'the sibling\'s own mtime')

  const q = await get(`${url}/app.js`, ae('br;q=0.5, gzip'))
  t.equal(q.headers['content-encoding'], 'gzip', 'a higher weight wins over the configured order')
  t.ok(q.body.equals(s.gz))

  const gzFirst = (await serve(t, s.root, { precompressed: ['gzip', 'br'] })).url
  const g = await get(`${gzFirst}/app.js`, ae('br, gzip'))
  t.equal(g.headers['content-encoding'], 'gzip', '[gzip, br]: gzip on a tie')
  t.equal(gunzipSync(g.body).toString(), JS)
  t.match(g.headers.etag, /-gz"$/)
  const brOnly = (await serve(t, s.root, { precompressed: ['br'] })).url
  isIdentity(t, await get(`${brOnly}/app.js`, ae('gzip')), JS, '[br] and a gzip-only client')
})

t.test('gzip only; a missing .br falls through to the .gz', async (t) => {
  const s = site(t)
  const { url } = await serve(t, s.root, { precompressed: true })
  const r = await get(`${url}/app.js`, ae('gzip'))
  t.equal(r.headers['content-encoding'], 'gzip')
  t.equal(r.headers['content-length'], String(s.gz.length))
  t.ok(r.body.equals(s.gz), 'exactly the .gz bytes')
  t.equal(gunzipSync(r.body).toString(), JS)
  t.match(r.headers.etag, /-gz"$/)
  const css = await get(`${url}/site.css`, ae('br, gzip'))
  t.equal(css.headers['content-encoding'], 'gzip', 'no site.css.br: the .gz')
  t.equal(css.headers['content-type'], 'text/css; charset=utf-8')
  t.ok(css.body.equals(s.cssGz))
  const xg = await get(`${url}/app.js`, ae('x-gzip'))
  t.equal(xg.headers['content-encoding'], 'gzip', 'x-gzip is gzip')
})

t.test('identity when no coding is accepted; Vary on those answers too', async (t) => {
  const s = site(t)
  const { url } = await serve(t, s.root, { precompressed: true })
  for (const header of [undefined, '', 'identity', 'gzip;q=0, br;q=0', '*;q=0', 'deflate', 'gzip;q=abc', 'identity;q=1, gzip;q=0.5']) {
    const r = await get(`${url}/app.js`, header === undefined ? {} : ae(header))
    isIdentity(t, r, JS, `Accept-Encoding ${JSON.stringify(header)}`)
    t.equal(r.headers.vary, 'Accept-Encoding', `${JSON.stringify(header)}: Vary all the same`)
    t.equal(r.headers['content-length'], String(JS.length))
  }
  const star = await get(`${url}/app.js`, ae('br;q=0, *'))
  t.equal(star.headers['content-encoding'], 'gzip', '`*` accepts gzip, br refused by name')
  const none = await get(`${url}/plain.txt`, ae('gzip, br'))
  isIdentity(t, none, 'no siblings', 'a file without siblings')
  t.equal(none.headers.vary, 'Accept-Encoding')
  const gone = await get(`${url}/gone.js`, ae('gzip'))
  t.equal(gone.status, 404, 'a sibling without its file: 404, as for the file')
})

t.test('HEAD: the sibling\'s head, no body', async (t) => {
  const s = site(t)
  const { port } = await serve(t, s.root, { precompressed: true })
  const raw = await rawRequest(port, 'HEAD /app.js HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n')
  t.match(raw, /^HTTP\/1\.1 200 /)
  t.match(raw, /\r\ncontent-encoding: gzip\r\n/i)
  t.match(raw, new RegExp(`\\r\\ncontent-length: ${s.gz.length}\\r\\n`, 'i'))
  t.match(raw, /\r\nvary: Accept-Encoding\r\n/i)
  t.match(raw, /\r\ncontent-type: text\/javascript; charset=utf-8\r\n/i)
  t.ok(raw.endsWith('\r\n\r\n'), 'nothing after the head')
})

t.test('conditionals: 304 on the coded ETag, not across representations', async (t) => {
  const s = site(t)
  const { url } = await serve(t, s.root, { precompressed: true, cacheControl: 'public, max-age=60' })
  const first = await get(`${url}/app.js`, ae('br'))
  const tag = String(first.headers.etag)
  const again = await get(`${url}/app.js`, { headers: { 'accept-encoding': 'br', 'if-none-match': tag } })
  t.equal(again.status, 304)
  t.equal(again.headers.etag, tag)
  t.equal(again.headers.vary, 'Accept-Encoding', 'a 304 carries the Vary of its 200')
  t.equal(again.headers['cache-control'], 'public, max-age=60')
  t.equal(again.body.length, 0)
  const other = await get(`${url}/app.js`, { headers: { 'accept-encoding': 'gzip', 'if-none-match': tag } })
  t.equal(other.status, 200, 'the br tag does not validate the gzip representation')
  t.equal(other.headers['content-encoding'], 'gzip')
  const plain = await get(`${url}/app.js`, { headers: { 'if-none-match': tag } })
  t.equal(plain.status, 200, 'nor the file itself')
  t.equal(plain.body.toString(), JS)
  const failed = await get(`${url}/app.js`, { headers: { 'accept-encoding': 'br', 'if-match': '"x"' } })
  t.equal(failed.status, 412)
  t.equal(failed.headers.vary, 'Accept-Encoding', 'a 412 too')
})

t.test('Range applies to the compressed representation', async (t) => {
  const s = site(t)
  const { url } = await serve(t, s.root, { precompressed: true })
  const r = await get(`${url}/app.js`, { headers: { 'accept-encoding': 'gzip', range: 'bytes=0-9' } })
  t.equal(r.status, 206)
  t.equal(r.headers['content-encoding'], 'gzip')
  t.equal(r.headers['content-range'], `bytes 0-9/${s.gz.length}`)
  t.equal(r.headers['content-length'], '10')
  t.ok(r.body.equals(s.gz.subarray(0, 10)), 'the first ten bytes of the .gz')
  const tail = await get(`${url}/app.js`, { headers: { 'accept-encoding': 'br', range: 'bytes=-5' } })
  t.equal(tail.status, 206)
  t.ok(tail.body.equals(s.br.subarray(s.br.length - 5)), 'the last five bytes of the .br')
  const past = await get(`${url}/app.js`, { headers: { 'accept-encoding': 'gzip', range: `bytes=${s.gz.length}-` } })
  t.equal(past.status, 416, 'past the end of the .gz (though inside the file)')
  t.equal(past.headers['content-range'], `bytes */${s.gz.length}`)
  t.equal(past.headers.vary, 'Accept-Encoding')
})

t.test('off (the default): siblings are never sent, no Vary', async (t) => {
  const s = site(t)
  for (const options of [undefined, {}, { precompressed: false }]) {
    const { url } = await serve(t, s.root, options)
    for (const header of ['gzip', 'br', 'gzip, br', '*']) {
      const r = await get(`${url}/app.js`, ae(header))
      isIdentity(t, r, JS, `options ${JSON.stringify(options)}, ${header}`)
      t.equal(r.headers.vary, undefined)
    }
  }
})

t.test('a sibling that is a symlink, a directory or a FIFO is not sent: the file is', async (t) => {
  const s = site(t)
  const root = s.root
  // Out of the docroot (refused in every mode), and inside it: a symlinked sibling follows the
  // route's policy as the file does (test/static/static-precompressed-link.test.ts); here only
  // `deny`, which refuses it whether or not the core tells the adapter the policy.
  symlinkSync(join(s.top, 'outside.js.gz'), join(root, 'out.js.gz'))
  writeFileSync(join(root, 'out.js'), 'out-identity')
  writeFileSync(join(root, 'in.js'), 'in-identity')
  writeFileSync(join(root, 'real.gz'), gzipSync('linked'))
  symlinkSync('real.gz', join(root, 'in.js.gz'))
  // A link to a dot file named as a sibling.
  writeFileSync(join(root, '.secret.gz'), gzipSync('DOT'))
  writeFileSync(join(root, 'dot.js'), 'dot-identity')
  symlinkSync('.secret.gz', join(root, 'dot.js.gz'))
  writeFileSync(join(root, 'dir.js'), 'dir-identity')
  mkdirSync(join(root, 'dir.js.gz'))
  writeFileSync(join(root, 'fifo.js'), 'fifo-identity')
  execFileSync('mkfifo', [join(root, 'fifo.js.gz')])
  for (const symlinks of [undefined, 'follow', 'deny'] as const) {
    const { url } = await serve(t, root, { precompressed: true }, symlinks !== undefined ? { symlinks } : {})
    for (const [name, body] of [['out.js', 'out-identity'], ...(symlinks === 'deny' ? [['in.js', 'in-identity']] : []), ['dot.js', 'dot-identity'], ['dir.js', 'dir-identity'], ['fifo.js', 'fifo-identity']]) {
      const r = await get(`${url}/${name}`, ae('gzip'))
      isIdentity(t, r, body, `symlinks ${symlinks ?? 'owner (default)'}: ${name}`)
      t.equal(r.headers.vary, 'Accept-Encoding')
    }
  }
})

t.test('a sibling whose real path is a dot file is not sent', async (t) => {
  const s = site(t)
  const root = s.root
  // `pub` leads into a dot directory; its app.js is a link back to a public file, so the file
  // passes (its real path has no dot segment) while pub/app.js.gz really is .private/app.js.gz.
  mkdirSync(join(root, '.private'))
  mkdirSync(join(root, 'visible'))
  writeFileSync(join(root, 'visible', 'app.js'), 'visible-identity')
  symlinkSync('../visible/app.js', join(root, '.private', 'app.js'))
  writeFileSync(join(root, '.private', 'app.js.gz'), gzipSync('PRIVATE'))
  symlinkSync('.private', join(root, 'pub'))
  const { url } = await serve(t, root, { precompressed: true })
  const r = await get(`${url}/pub/app.js`, ae('gzip'))
  isIdentity(t, r, 'visible-identity', 'pub/app.js.gz is .private/app.js.gz')
})

t.test('descriptors: the file is closed once its sibling is chosen; clients that leave leave none', async (t) => {
  const { root } = site(t)
  // Large enough that a client reading nothing stalls the response with the file open.
  const big = Buffer.alloc(8 * 1024 * 1024, 'a')
  writeFileSync(join(root, 'big.bin'), big)
  writeFileSync(join(root, 'big.bin.gz'), big) // not real gzip: the bytes are the sibling's either way
  const file = join(root, 'big.bin')
  const { port, proxy } = await serve(t, root, { precompressed: true })
  let ended = 0
  proxy.events.on('request:end', () => { ended++ })
  const fds = (p: string): number => [...openFds().values()].filter((v) => v === p).length
  const { connect } = await import('node:net')
  const N = 20
  const socks = Array.from({ length: N }, () => {
    const c = connect({ host: '127.0.0.1', port })
    c.on('error', () => {})
    c.pause() // reads nothing
    c.write('GET /big.bin HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n')
    return c
  })
  t.ok(await waitFor(() => fds(`${file}.gz`) === N, 20_000), `each stalled response holds its sibling open (${fds(`${file}.gz`)} of ${N})`)
  // The sibling's fd shows in /proc as its open returns, a moment before the file's is closed.
  t.ok(await waitFor(() => fds(file) === 0 && fds(`${file}.gz`) === N, 10_000), `and not the file it stands for (${fds(file)} left)`)
  for (const c of socks) c.destroy()
  const early = Array.from({ length: N }, () => {
    const c = connect({ host: '127.0.0.1', port })
    c.on('error', () => {})
    c.write('GET /big.bin HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n', () => c.destroy())
    return c
  })
  t.ok(await waitFor(() => ended >= 2 * N, 20_000), `every exchange ended (${ended})`)
  t.ok(await waitFor(() => fds(file) === 0 && fds(`${file}.gz`) === 0, 10_000), `no fd of either is left (${fds(file)}, ${fds(`${file}.gz`)})`)
  t.equal(early.length, N)
})

const SITE = { name: 'pcpresite', id: 2171 }
const OTHER = { name: 'pcpreother', id: 2172 }

t.test('a sibling the docroot owner could not read is not sent', async (t) => {
  if (!withTestUsers(t, 'the owner rule on siblings', [SITE, OTHER])) return
  const s = site(t)
  const own = (path: string, who: { id: number }): void => chownSync(path, who.id, who.id)
  own(s.root, SITE)
  own(join(s.root, 'app.js'), SITE)
  own(join(s.root, 'app.js.br'), SITE)
  // Another user's private file as app.js.gz (how a hard link to it would look).
  own(join(s.root, 'app.js.gz'), OTHER)
  chmodSync(join(s.root, 'app.js.gz'), 0o600)
  const { url } = await serve(t, s.root, { precompressed: true })
  isIdentity(t, await get(`${url}/app.js`, ae('gzip')), JS, 'another user\'s 0600 .gz')
  const br = await get(`${url}/app.js`, ae('br'))
  t.equal(br.headers['content-encoding'], 'br', 'the site\'s own .br is served')
  t.ok(br.body.equals(s.br))
  const both = await get(`${url}/app.js`, ae('gzip;q=1, br;q=0.5'))
  t.equal(both.headers['content-encoding'], 'br', 'the refused .gz gives way to the next accepted coding')
})

t.test('config: precompressed is true, false or a list of br and gzip', async (t) => {
  const s = site(t)
  const load = async (options: unknown): Promise<ConfigError> => {
    try {
      const p = await createProxy({ logger: silentLogger, routes: [{ protocol: 'static', docroot: s.root, options }] })
      await p.close(0)
    } catch (err) {
      if (err instanceof ConfigError) return err
      throw err
    }
    throw new Error('no ConfigError')
  }
  for (const bad of ['yes', 1, [], ['deflate'], ['gzip', 'gzip'], ['br', 'zstd'], [true], null]) {
    t.match((await load({ precompressed: bad })).issues, [{ path: '/routes/0/options/precompressed', message: /true, false, or a non-empty list of br and gzip/ }], JSON.stringify(bad))
  }
  for (const good of [true, false, ['gzip'], ['br'], ['gzip', 'br']]) {
    const p = await createProxy({ logger: silentLogger, routes: [{ protocol: 'static', docroot: s.root, options: { precompressed: good } }] })
    await p.close(0)
    t.pass(`${JSON.stringify(good)} accepted`)
  }
})
