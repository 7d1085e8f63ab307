/**
 * docs/protocols/static.md, walked as a new user: the opening config run as written by the real
 * CLI (`proxycore serve`, only the paths and `listen` changed) with real php-cgi, then the claims
 * test/static/*.test.ts does not already make: the exact ETag, Content-Type rules, a missing file
 * before 405, Cache-Control on a 206, If-Unmodified-Since under If-Match, the order of `index`,
 * a directory without its slash, the odd targets of "Checked and found safe", `maxBodySize` on a
 * static route, and the error codes the page names.
 */
import t, { type Test } from 'tap'
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { alive, childrenOf, guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, rawRequest } from '../helpers/servers.js'
import { Raw } from '../helpers/raw-client.js'
import { havePeer, PHP_CGI, tempDir } from '../fastcgi/helpers/peers.js'
import { root, serve } from '../cli/run.js'
import { ERRORS } from '../../src/core/errors.js'
import { MAX_RANGES } from '../../src/protocols/static/multipart.js'
import { guideBlocks, must } from './snippets.js'

type Tap = Test

const DOC_FILE = join(root, 'docs/protocols/static.md')
const DOC = readFileSync(DOC_FILE, 'utf8')
const block = guideBlocks(DOC_FILE)

const codeOf = (body: Buffer | string): string => String(body).split('\n')[1] ?? ''

/** A docroot with a few assets, a PHP page and a dot file. */
function site (t: Tap): string {
  const dir = tempDir(t, 'pc-static-claims-')
  const www = join(dir, 'www')
  mkdirSync(join(www, 'docs'), { recursive: true })
  mkdirSync(join(www, 'x.css'))
  writeFileSync(join(www, 'app.css'), 'a { color: blue }')
  writeFileSync(join(www, 'app.js'), 'console.log(1)\n')
  writeFileSync(join(www, 'logo.svg'), '<svg/>')
  writeFileSync(join(www, 'data.qqq'), 'unknown')
  writeFileSync(join(www, 'f.txt'), 'F-TXT')
  writeFileSync(join(www, 'ten.txt'), '0123456789')
  writeFileSync(join(www, 'index.html'), '<h1>home</h1>')
  writeFileSync(join(www, 'docs', 'index.html'), '<h1>docs</h1>')
  writeFileSync(join(www, 'index.php'), '<?php echo "php:" . (40 + 2);')
  writeFileSync(join(www, '.env'), 'SECRET=1')
  return www
}

t.test('the opening config, as written: PHP first, then the files (real php-cgi, real CLI)', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  const www = site(t)
  let yaml = block('# Static files', 'yaml')
  yaml = must(yaml, /\/srv\/www/g, www)
  t.ok(yaml.includes(`binPath: ${PHP_CGI},`), 'the php-cgi of the snippet is the one installed here')
  // The snippet has no `listen`: the default is 127.0.0.1:8080, which a demo may hold here.
  yaml = `listen: 127.0.0.1:0\n${yaml}`
  const config = join(www, '..', 'proxycore.yaml')
  writeFileSync(config, yaml)
  const s = await serve(config)
  // The proxy's descendants (the spawn helper, php-cgi): each in a session of its own.
  const descendants = (pid: number): number[] => childrenOf(pid).flatMap((c) => [c.pid, ...descendants(c.pid)])
  let tree: number[] = []
  t.teardown(async () => {
    try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {}
    for (const p of tree) { try { process.kill(p, 'SIGKILL') } catch {} }
    await waitFor(() => tree.every((p) => !alive(p)), 10_000)
  })
  const php = await get(`${s.url}/index.php`)
  t.equal(php.body.toString(), 'php:42', '.php goes to PHP (run, not its source)')
  const css = await get(`${s.url}/app.css`)
  t.equal(css.status, 200)
  t.equal(css.body.toString(), 'a { color: blue }')
  t.equal(css.headers['content-type'], 'text/css; charset=utf-8')
  t.equal((await get(`${s.url}/logo.svg`)).headers['content-type'], 'image/svg+xml')
  t.equal((await get(`${s.url}/app.js`)).headers['content-type'], 'text/javascript; charset=utf-8', '.js: text/javascript (as the page says of app.js.gz)')
  // `index: [index.html]` on this route: a directory path has no extension, so it never reaches
  // the route (the page says so next to the snippet).
  const home = await get(`${s.url}/docs/`)
  t.not(home.body.toString(), '<h1>docs</h1>', 'an extension-matched route never sees /docs/')
  t.equal(home.status, 404)
  t.equal(codeOf(home.body), 'ERR_NO_ROUTE')
  t.ok(DOC.includes('never reaches a route matched by extension'), 'the page warns about it')
  t.equal((await get(`${s.url}/f.txt`)).status, 404, 'an extension not listed: no route')
  tree = descendants(s.child.pid as number)
  t.ok(tree.length > 0, `php-cgi runs under the proxy (${tree.length} processes)`)
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0, 'SIGTERM: a clean exit')
  t.ok(await waitFor(() => tree.every((p) => !alive(p)), 10_000), 'and php-cgi stopped with it')
})

t.test('a regular file: the ETag is W/"<size>-<mtime ms>" in hex; unknown extensions are application/octet-stream', async (t) => {
  guardLeaks(t)
  const www = site(t)
  const { url } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: www }] })
  const st = statSync(join(www, 'app.css'))
  const r = await get(`${url}/app.css`)
  t.equal(r.headers.etag, `W/"${st.size.toString(16)}-${st.mtime.getTime().toString(16)}"`)
  t.equal((await get(`${url}/data.qqq`)).headers['content-type'], 'application/octet-stream', 'nginx default_type')
})

t.test('another method: the path is looked up first, so a missing file is a 404 whatever the method', async (t) => {
  guardLeaks(t)
  const www = site(t)
  const { url } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: www }] })
  for (const method of ['POST', 'PUT', 'DELETE']) {
    const missing = await get(`${url}/missing.css`, { method })
    t.equal(missing.status, 404, `${method} /missing.css`)
    t.equal(codeOf(missing.body), 'ERR_SCRIPT_NOT_FOUND')
    const hidden = await get(`${url}/.env`, { method })
    t.equal(hidden.status, 404, `${method} /.env`)
    t.equal(codeOf(hidden.body), 'ERR_STATIC_HIDDEN')
    t.equal((await get(`${url}/app.css`, { method })).status, 405, `${method} /app.css`)
  }
})

t.test('cacheControl on 206 and 304; a 304 has Last-Modified; If-Unmodified-Since only without If-Match', async (t) => {
  guardLeaks(t)
  const www = site(t)
  const { url, port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: www, options: { cacheControl: 'public, max-age=3600' } }] })
  const part = await get(`${url}/ten.txt`, { headers: { range: 'bytes=0-1' } })
  t.equal(part.status, 206)
  t.equal(part.headers['cache-control'], 'public, max-age=3600', 'Cache-Control on a 206')
  const lm = String(part.headers['last-modified'])
  const nm = await rawRequest(port, `GET /ten.txt HTTP/1.1\r\nHost: a\r\nIf-Modified-Since: ${lm}\r\nConnection: close\r\n\r\n`)
  t.match(nm, /^HTTP\/1\.1 304 /)
  t.match(nm, new RegExp(`\\r\\nlast-modified: ${lm}\\r\\n`, 'i'), '304 with Last-Modified')
  const old = 'Thu, 01 Jan 1998 00:00:00 GMT'
  t.equal((await get(`${url}/ten.txt`, { headers: { 'if-unmodified-since': old } })).status, 412, 'alone: 412')
  t.equal((await get(`${url}/ten.txt`, { headers: { 'if-match': '*', 'if-unmodified-since': old } })).status, 200, 'with If-Match: not looked at')
})

t.test('index files are tried in order; a directory without its slash', async (t) => {
  guardLeaks(t)
  const www = site(t)
  writeFileSync(join(www, 'docs', 'index.htm'), 'HTM')
  mkdirSync(join(www, 'bare'))
  const { url } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: www, index: ['index.htm', 'index.html'] }] })
  t.equal((await get(`${url}/docs/`)).body.toString(), 'HTM', 'the first that exists')
  t.equal((await get(`${url}/`)).body.toString(), '<h1>home</h1>', 'the next when the first is missing')
  const noIndex = await get(`${url}/bare`)
  t.equal(noIndex.status, 404, 'a directory without an index file and without its slash: 404, no 301')
  t.equal(codeOf(noIndex.body), 'ERR_SCRIPT_NOT_FOUND')
  const plain = await proxyServer(t, { routes: [{ protocol: 'static', docroot: www }] })
  t.equal((await get(`${plain.url}/docs`)).status, 404, 'no `index` key: no 301 either')
  t.equal((await get(`${plain.url}/docs/`)).status, 404)
})

t.test('"Checked and found safe": the targets not covered by test/static', async (t) => {
  guardLeaks(t)
  const www = site(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: www }] })
  const raw = async (target: string): Promise<{ status: number, body: string }> => {
    const out = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`)
    const end = out.indexOf('\r\n\r\n')
    return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(out)?.[1] ?? 0), body: end < 0 ? '' : out.slice(end + 4) }
  }
  for (const target of ['/%c0%ae%c0%ae/f.txt', 'http://h/../f.txt', '/f.txt#frag', '*']) {
    const r = await raw(target)
    t.equal(r.status, 400, `${target}: 400`)
    t.equal(codeOf(r.body), 'ERR_BAD_REQUEST', `${target}: ERR_BAD_REQUEST`)
  }
  for (const target of ['//f.txt', '/./f.txt', '/f.txt?x=/../../etc/passwd']) {
    const r = await raw(target)
    t.equal(r.status, 200, `${target}: the file`)
    t.equal(r.body, 'F-TXT')
  }
  for (const target of ['/f.txt.', '/f.txt%20', `/${'a'.repeat(6000)}`, '/x.css']) {
    t.equal((await raw(target)).status, 404, `${target.slice(0, 20)}: 404`)
  }
})

t.test('maxBodySize on a static route: a Content-Length over it is a 413, the connection closed before the body', async (t) => {
  guardLeaks(t)
  const www = site(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'static', docroot: www, maxBodySize: '1m' }] })
  const c = new Raw(port, 'POST /f.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000\r\n\r\n')
  t.teardown(() => { c.socket.destroy() })
  t.ok(await waitFor(() => c.closed, 10_000), 'closed without a byte of the body sent')
  t.equal(c.status(), 413)
})

t.test('the error codes the page names exist, with the statuses it gives, and are in reference/errors.md', async (t) => {
  const reference = readFileSync(join(root, 'docs/reference/errors.md'), 'utf8')
  const named = new Set(DOC.match(/ERR_[A-Z_]+/g) ?? [])
  t.ok(named.size >= 8, `the page names ${named.size} codes`)
  for (const code of named) {
    t.ok(code in ERRORS, `${code} is a code of src/core/errors.ts`)
    t.ok(reference.includes(code), `${code} is in docs/reference/errors.md`)
  }
  const statuses: Record<string, number> = {
    ERR_BAD_REQUEST: 400, ERR_SCRIPT_FORBIDDEN: 403, ERR_SCRIPT_NOT_FOUND: 404, ERR_STATIC_HIDDEN: 404, ERR_METHOD_NOT_ALLOWED: 405,
    ERR_PRECONDITION_FAILED: 412, ERR_RANGE_NOT_SATISFIABLE: 416,
  }
  for (const [code, status] of Object.entries(statuses)) t.equal((ERRORS as Record<string, { status: number }>)[code]?.status, status, `${code}: ${status}`)
})

t.test('the range cap the page gives is the code\'s', async (t) => {
  t.ok(DOC.includes(`**more than ${MAX_RANGES} ranges after merging → the whole file, 200.**`), `the page says ${MAX_RANGES}`)
  t.ok(DOC.includes(`${MAX_RANGES + 1} disjoint ranges: the whole file, 200`))
})
