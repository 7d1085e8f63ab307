/**
 * `protocol: static` against the real server (createProxy + node:http) and real clients: node's
 * http for ordinary requests, a raw socket where node's client would normalise the path or hide
 * the bytes (HEAD bodies, traversal). Real files in a temp dir.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createProxy, ConfigError, type RequestEndEvent } from '../../src/index.js'
import { silentLogger } from '../../src/logger.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

const CSS = 'body { color: red }\n'

function site (t: { teardown (fn: () => void): void }): { top: string, root: string } {
  const top = mkdtempSync(join(tmpdir(), 'pc-static-'))
  t.teardown(() => rmSync(top, { recursive: true, force: true }))
  const root = join(top, 'www')
  mkdirSync(join(root, 'css'), { recursive: true })
  mkdirSync(join(root, 'docs'))
  mkdirSync(join(root, 'bare'))
  mkdirSync(join(root, '.git'))
  mkdirSync(join(root, '.well-known', 'acme-challenge'), { recursive: true })
  writeFileSync(join(root, 'css', 'site.css'), CSS)
  writeFileSync(join(root, 'index.html'), '<h1>home</h1>')
  writeFileSync(join(root, 'docs', 'index.html'), '<h1>docs</h1>')
  writeFileSync(join(root, 'bare', 'x.txt'), 'x')
  writeFileSync(join(root, 'data.bin'), '0123456789')
  writeFileSync(join(root, 'README'), 'no extension')
  writeFileSync(join(root, 'empty.txt'), '')
  writeFileSync(join(root, '.env'), 'DB_PASSWORD=secret')
  writeFileSync(join(root, '.htaccess'), 'Deny from all')
  writeFileSync(join(root, '.user.ini'), 'x=1')
  writeFileSync(join(root, '.git', 'config'), '[core]')
  writeFileSync(join(root, 'docs', '.hidden.html'), 'hidden')
  writeFileSync(join(root, '.well-known', 'acme-challenge', 'tok'), 'acme-token')
  writeFileSync(join(top, 'secret.txt'), 'OUTSIDE-THE-DOCROOT')
  return { top, root }
}

async function staticProxy (t: Parameters<typeof proxyServer>[0], root: string, extra: Record<string, unknown> = {}) {
  return await proxyServer(t, { routes: [{ name: 'files', protocol: 'static', docroot: root, index: ['index.html'], ...extra }] })
}

const codeOf = (body: Buffer | string): string => String(body).split('\n')[1] ?? ''

t.test('a file: 200 with its type, length, validators and Accept-Ranges', async (t) => {
  const { root } = site(t)
  const { url } = await staticProxy(t, root)
  const r = await get(`${url}/css/site.css`)
  t.equal(r.status, 200)
  t.equal(r.body.toString(), CSS)
  t.equal(r.headers['content-type'], 'text/css; charset=utf-8')
  t.equal(r.headers['content-length'], String(CSS.length))
  t.equal(r.headers['accept-ranges'], 'bytes')
  const st = statSync(join(root, 'css', 'site.css'))
  t.equal(r.headers['last-modified'], new Date(Math.floor(st.mtimeMs / 1000) * 1000).toUTCString())
  t.match(r.headers.etag, /^W\/"[0-9a-f]+-[0-9a-f]+"$/, 'a weak ETag of size and mtime')
  t.equal(r.headers['cache-control'], undefined, 'no Cache-Control unless configured')
  const bin = await get(`${url}/README`)
  t.equal(bin.headers['content-type'], 'application/octet-stream', 'no extension: nginx default_type')
  const empty = await get(`${url}/empty.txt`)
  t.equal(empty.status, 200)
  t.equal(empty.headers['content-length'], '0')
  t.equal(empty.body.length, 0)
})

t.test('HEAD: the same head as GET, no body bytes on the wire', async (t) => {
  const { root } = site(t)
  const { port } = await staticProxy(t, root)
  const raw = await rawRequest(port, 'HEAD /css/site.css HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(raw, /^HTTP\/1\.1 200 /)
  t.match(raw, new RegExp(`\\r\\ncontent-length: ${CSS.length}\\r\\n`, 'i'))
  t.match(raw, /\r\ncontent-type: text\/css; charset=utf-8\r\n/i)
  t.ok(raw.endsWith('\r\n\r\n'), 'nothing after the head')
})

t.test('directories: index, 301 to the slash form with the query, no listing', async (t) => {
  const { root } = site(t)
  const { url, port } = await staticProxy(t, root)
  const home = await get(`${url}/`)
  t.equal(home.status, 200)
  t.equal(home.body.toString(), '<h1>home</h1>')
  t.equal(home.headers['content-type'], 'text/html; charset=utf-8')
  const docs = await get(`${url}/docs/`)
  t.equal(docs.body.toString(), '<h1>docs</h1>')
  const redirect = await get(`${url}/docs?page=2&x=%2F`)
  t.equal(redirect.status, 301)
  t.equal(redirect.headers.location, '/docs/?page=2&x=%2F', 'query kept')
  // An open redirect would need the Location to start with `//`.
  const raw = await rawRequest(port, 'GET //docs HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(raw, /\r\nlocation: \/docs\/\r\n/i, 'never `//docs/`')
  const bare = await get(`${url}/bare/`)
  t.equal(bare.status, 404, 'a directory without index: no listing')
  t.equal(codeOf(bare.body), 'ERR_SCRIPT_NOT_FOUND')
  const missing = await get(`${url}/nope.css`)
  t.equal(missing.status, 404)
  t.equal(codeOf(missing.body), 'ERR_SCRIPT_NOT_FOUND')
  const under = await get(`${url}/css/site.css/more`)
  t.equal(under.status, 404, 'a file used as a directory')
  t.equal(codeOf(under.body), 'ERR_SCRIPT_NOT_FOUND')
})

t.test('GET and HEAD only: 405 with Allow, the connection stays usable', async (t) => {
  const { root } = site(t)
  const { url, port } = await staticProxy(t, root)
  for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) {
    const r = await get(`${url}/css/site.css`, { method, ...(method === 'POST' ? { body: 'a=1' } : {}) })
    t.equal(r.status, 405, method)
    t.equal(r.headers.allow, 'GET, HEAD', `${method}: Allow`)
    t.equal(codeOf(r.body), 'ERR_METHOD_NOT_ALLOWED')
  }
  // A POST with a body, then a GET on the same connection: the body was not taken for a request.
  const raw = await rawRequest(port, 'POST /css/site.css HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /data.bin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(raw, /^HTTP\/1\.1 405 [^]*HTTP\/1\.1 200 [^]*\r\n\r\n0123456789$/, '405, then the next request answered')
})

t.test('dot files and dot directories: 404 ERR_STATIC_HIDDEN; /.well-known/ is served', async (t) => {
  const { root } = site(t)
  const { url, port } = await staticProxy(t, root)
  for (const path of ['/.env', '/.htaccess', '/.user.ini', '/.git/config', '/docs/.hidden.html', '/%2eenv', '/%2Egit/config']) {
    const r = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    t.match(r, /^HTTP\/1\.1 404 /, path)
    t.match(r, /\r\n\r\n404 Not Found\nERR_STATIC_HIDDEN\n$/, `${path}: the code`)
    t.notMatch(r, /secret|Deny from|\[core\]|x=1|hidden$/, `${path}: no content`)
  }
  // A dot directory with an index file: the core's walk finds the index, the adapter refuses it.
  writeFileSync(join(root, '.git', 'index.html'), 'git index')
  const dir = await get(`${url}/.git/`)
  t.equal(dir.status, 404)
  t.equal(codeOf(dir.body), 'ERR_STATIC_HIDDEN')
  const acme = await get(`${url}/.well-known/acme-challenge/tok`)
  t.equal(acme.status, 200)
  t.equal(acme.body.toString(), 'acme-token')
  writeFileSync(join(root, '.well-known', '.secret'), 'secret')
  const inner = await get(`${url}/.well-known/.secret`)
  t.equal(inner.status, 404, 'a dot file inside /.well-known/')
  t.equal(codeOf(inner.body), 'ERR_STATIC_HIDDEN')
})

t.test('traversal and odd paths never leave the docroot (raw client)', async (t) => {
  const { root } = site(t)
  const { port } = await staticProxy(t, root)
  const attempts = [
    '/../secret.txt', '/%2e%2e/secret.txt', '/%2E%2E/secret.txt', '/css/../../secret.txt', '/css/%2e%2e/%2e%2e/secret.txt',
    '/css%2f..%2f..%2fsecret.txt', '/..%2fsecret.txt', '/..%5csecret.txt', '/css\\..\\..\\secret.txt', '/%00/../secret.txt',
    '/css/site.css%00.png', '/.%2e/secret.txt', '/css/site.css%0a', '/css/../css/site.css',
  ]
  for (const path of attempts) {
    const r = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    t.notMatch(r, /OUTSIDE-THE-DOCROOT/, `${path}: nothing from outside`)
    t.match(r, /^HTTP\/1\.1 400 [^]*\nERR_BAD_REQUEST\n$/, `${path}: refused before the file system`)
  }
  // Decoded once only: `%252e%252e` is a directory literally named `%2e%2e`.
  const twice = await rawRequest(port, 'GET /%252e%252e/secret.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(twice, /^HTTP\/1\.1 404 /)
})

t.test('only regular files: a FIFO, a socket and a link to a device are refused at once', async (t) => {
  const { root } = site(t)
  execFileSync('mkfifo', [join(root, 'pipe.txt')])
  const sock = createNetServer()
  await new Promise<void>((resolve) => sock.listen(join(root, 'sock.txt'), resolve))
  t.teardown(() => new Promise<void>((resolve) => sock.close(() => resolve())))
  execFileSync('ln', ['-s', '/dev/zero', join(root, 'zero.txt')])
  const { url } = await staticProxy(t, root, { symlinks: 'follow' })
  for (const path of ['/pipe.txt', '/sock.txt', '/zero.txt']) {
    const r = await get(`${url}${path}`)
    t.equal(r.status, 403, path)
    t.equal(codeOf(r.body), 'ERR_SCRIPT_FORBIDDEN', path)
  }
})

t.test('conditional requests: 304 without a body, 412 for If-Match and If-Unmodified-Since', async (t) => {
  const { root } = site(t)
  const { url, port } = await staticProxy(t, root, { options: { cacheControl: 'public, max-age=60' } })
  const first = await get(`${url}/css/site.css`)
  const tag = String(first.headers.etag)
  const lm = String(first.headers['last-modified'])
  t.equal(first.headers['cache-control'], 'public, max-age=60', 'the configured Cache-Control')
  const inm = await rawRequest(port, `GET /css/site.css HTTP/1.1\r\nHost: a\r\nIf-None-Match: "zz", ${tag}\r\nConnection: close\r\n\r\n`)
  t.match(inm, /^HTTP\/1\.1 304 /)
  t.match(inm, new RegExp(`\\r\\netag: ${tag.replace(/[/"]/g, (c) => `\\${c}`)}\\r\\n`, 'i'))
  t.match(inm, /\r\ncache-control: public, max-age=60\r\n/i)
  t.ok(inm.endsWith('\r\n\r\n'), '304: no body')
  t.equal((await get(`${url}/css/site.css`, { headers: { 'if-modified-since': lm } })).status, 304, 'If-Modified-Since = Last-Modified')
  t.equal((await get(`${url}/css/site.css`, { headers: { 'if-modified-since': 'Thu, 01 Jan 1998 00:00:00 GMT' } })).status, 200, 'older date: 200')
  t.equal((await get(`${url}/css/site.css`, { headers: { 'if-none-match': '"other"', 'if-modified-since': lm } })).status, 200, 'If-None-Match wins over If-Modified-Since')
  const im = await get(`${url}/css/site.css`, { headers: { 'if-match': '"other"' } })
  t.equal(im.status, 412)
  t.equal(codeOf(im.body), 'ERR_PRECONDITION_FAILED')
  t.equal((await get(`${url}/css/site.css`, { headers: { 'if-match': tag } })).status, 412, 'a weak ETag never matches If-Match (strong comparison)')
  t.equal((await get(`${url}/css/site.css`, { headers: { 'if-match': '*' } })).status, 200)
  t.equal((await get(`${url}/css/site.css`, { headers: { 'if-unmodified-since': 'Thu, 01 Jan 1998 00:00:00 GMT' } })).status, 412)
  t.equal((await get(`${url}/css/site.css`, { headers: { 'if-unmodified-since': lm } })).status, 200)
})

t.test('ranges: one range 206, unsatisfiable 416 with bytes */size, several multipart, malformed: the whole file', async (t) => {
  const { root } = site(t)
  const { url, port } = await staticProxy(t, root)
  const one = await get(`${url}/data.bin`, { headers: { range: 'bytes=2-5' } })
  t.equal(one.status, 206)
  t.equal(one.body.toString(), '2345')
  t.equal(one.headers['content-range'], 'bytes 2-5/10')
  t.equal(one.headers['content-length'], '4')
  const suffix = await get(`${url}/data.bin`, { headers: { range: 'bytes=-3' } })
  t.equal(suffix.body.toString(), '789')
  const open = await get(`${url}/data.bin`, { headers: { range: 'bytes=7-' } })
  t.equal(open.body.toString(), '789')
  t.equal(open.headers['content-range'], 'bytes 7-9/10')
  const past = await get(`${url}/data.bin`, { headers: { range: 'bytes=5-100' } })
  t.equal(past.headers['content-range'], 'bytes 5-9/10', 'an end past the file is cut to it')
  const bad = await get(`${url}/data.bin`, { headers: { range: 'bytes=10-20' } })
  t.equal(bad.status, 416)
  t.equal(bad.headers['content-range'], 'bytes */10')
  t.equal(codeOf(bad.body), 'ERR_RANGE_NOT_SATISFIABLE')
  const many = await get(`${url}/data.bin`, { headers: { range: 'bytes=0-1,5-6' } })
  t.equal(many.status, 206, 'several ranges: multipart/byteranges (test/static/static-multipart.test.ts)')
  t.match(many.headers['content-type'], /^multipart\/byteranges; boundary=/)
  const merged = await get(`${url}/data.bin`, { headers: { range: 'bytes=0-1,2-3' } })
  t.equal(merged.status, 206, 'adjacent ranges are one')
  t.equal(merged.body.toString(), '0123')
  t.equal((await get(`${url}/data.bin`, { headers: { range: 'bytes=x-y' } })).status, 200, 'malformed: ignored')
  t.equal((await get(`${url}/data.bin`, { headers: { range: 'items=0-1' } })).status, 200, 'another unit: ignored')
  const lm = String(one.headers['last-modified'])
  t.equal((await get(`${url}/data.bin`, { headers: { range: 'bytes=0-0', 'if-range': lm } })).status, 206, 'If-Range = Last-Modified')
  t.equal((await get(`${url}/data.bin`, { headers: { range: 'bytes=0-0', 'if-range': 'Thu, 01 Jan 1998 00:00:00 GMT' } })).status, 200, 'If-Range, another date')
  t.equal((await get(`${url}/data.bin`, { headers: { range: 'bytes=0-0', 'if-range': String(one.headers.etag) } })).status, 200, 'If-Range with a weak ETag: the whole file')
  const empty = await get(`${url}/empty.txt`, { headers: { range: 'bytes=0-' } })
  t.equal(empty.status, 416, 'any range of an empty file')
  t.equal(empty.headers['content-range'], 'bytes */0')
  const head = await rawRequest(port, 'HEAD /data.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\nConnection: close\r\n\r\n')
  t.match(head, /^HTTP\/1\.1 200 [^]*content-length: 10\r\n/i, 'HEAD: Range ignored (defined for GET)')
})

t.test('a prefix with stripPrefix mounts the docroot under it (nginx alias)', async (t) => {
  const { root } = site(t)
  const { url } = await proxyServer(t, { routes: [{ protocol: 'static', match: { prefix: '/static/' }, stripPrefix: true, docroot: root, index: ['index.html'] }] })
  const css = await get(`${url}/static/css/site.css`)
  t.equal(css.status, 200)
  t.equal(css.body.toString(), CSS)
  const dir = await get(`${url}/static/docs?x=1`)
  t.equal(dir.status, 301)
  t.equal(dir.headers.location, '/static/docs/?x=1', 'the redirect keeps the prefix')
  t.equal((await get(`${url}/static/.env`)).status, 404)
})

t.test('the exchange is a normal one: request:end with status and route, route stats', async (t) => {
  const { root } = site(t)
  const { url, proxy } = await staticProxy(t, root)
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  await get(`${url}/css/site.css`)
  await get(`${url}/nope`)
  t.ok(await waitFor(() => ends.length === 2))
  t.match(ends[0], { route: 'files', status: 200, bytesOut: CSS.length })
  t.match(ends[1], { route: 'files', status: 404, error: 'ERR_SCRIPT_NOT_FOUND' })
  t.equal(proxy.routes[0].name, 'files')
  t.equal(proxy.routes[0].stats.errors, 1)
})

t.test('config: a static route takes docroot and neither backends nor spawn', async (t) => {
  const { root } = site(t)
  const load = async (route: Record<string, unknown>): Promise<ConfigError> => {
    try {
      const p = await createProxy({ logger: silentLogger, routes: [{ protocol: 'static', ...route }] })
      await p.close(0)
    } catch (err) {
      if (err instanceof ConfigError) return err
      throw err
    }
    throw new Error('no ConfigError')
  }
  t.match((await load({ docroot: root, backends: ['127.0.0.1:9'] })).issues, [{ path: '/routes/0/backends' }])
  t.match((await load({ docroot: root, spawn: 'php' })).issues, [{ path: '/routes/0/spawn' }])
  t.match((await load({})).issues, [{ path: '/routes/0', message: /docroot/ }])
  t.match((await load({ docroot: root, options: { cacheControl: 'x\ny' } })).issues, [{ path: '/routes/0/options/cacheControl' }])
  t.match((await load({ docroot: root, options: { gzip: true } })).issues, [{ path: '/routes/0/options/gzip' }])
  t.match((await load({ docroot: root, requestBuffering: true })).issues, [{ path: '/routes/0/requestBuffering' }])
  t.match((await load({ docroot: root, scriptFilename: join(root, 'index.html') })).issues, [{ path: '/routes/0/scriptFilename' }])
})
