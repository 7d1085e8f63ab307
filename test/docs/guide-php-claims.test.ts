/**
 * docs/guides/php.md, the `index: [index.php]` bullet, against real php-cgi spawned as FastCGI:
 * with a docroot route matching `^/(blog/?)?$`, `/blog` (a directory with index.php) is a 301 to
 * `/blog/` with the query kept, `/blog/` runs the index, and a directory without an index file is a
 * 404; with `^/(blog/)?$` instead, `/blog` matches no route (404 ERR_NO_ROUTE). Then: an upload as
 * PHP sees it in $_FILES (read whole first, spooled past 64 KiB, a chunked one too) and the 413 past
 * `spoolLimit` that PHP never hears of; what does not defend you (a `prefix: /` route without an
 * extension rule runs the uploaded photo.jpg); traversal and bad bytes refused with 400 before PHP,
 * a symlink out of the docroot with 403; recycling by the spawn's maxRequests losing no POST; and
 * php-cgi spawned without PHP_FCGI_CHILDREN no longer exiting after its own default of 500
 * requests (the spawn passes PHP_FCGI_MAX_REQUESTS=0 to php-cgi whatever its environment).
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { request } from 'node:http'
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { collectStatus } from '../../src/status/model.js'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer, rawRequest } from '../helpers/servers.js'
import { havePeer, PHP_CGI, tempDir } from '../fastcgi/helpers/peers.js'

const INDEX = '<?php header("Content-Type: text/plain"); echo "index of ", $_SERVER["SCRIPT_NAME"], " q=", $_SERVER["QUERY_STRING"] ?? "", " via ", PHP_SAPI, "\\n";\n'

function site (t: Parameters<typeof tempDir>[0]): string {
  const www = tempDir(t, 'pc-doc-php-')
  writeFileSync(join(www, 'index.php'), INDEX)
  mkdirSync(join(www, 'blog'))
  writeFileSync(join(www, 'blog', 'index.php'), INDEX)
  mkdirSync(join(www, 'empty'))
  writeFileSync(join(www, 'empty', 'readme.txt'), 'no index here\n')
  return www
}

const spawns = { php: { binPath: PHP_CGI, socketName: '127.0.0.1:0', environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } }

t.test('php.md: index: [index.php] with regex ^/(blog/?)?$', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const www = site(t)
  const { url } = await proxyServer(t, {
    spawns,
    routes: [
      { name: 'home', match: { regex: '^/(blog/?)?$' }, protocol: 'fastcgi', spawn: 'php', docroot: www, index: ['index.php'] },
      { name: 'empty', match: { regex: '^/(empty/?)$' }, protocol: 'fastcgi', spawn: 'php', docroot: www, index: ['index.php'] },
    ],
  } as Parameters<typeof proxyServer>[1])

  const home = await get(`${url}/`)
  t.equal(home.status, 200, '/ runs the site index')
  t.match(home.body.toString(), /^index of \/index\.php q= via cgi-fcgi/)

  const bare = await get(`${url}/blog`)
  t.equal(bare.status, 301, '/blog is answered 301')
  t.equal(bare.headers.location, '/blog/', 'location: /blog/')

  const withQuery = await get(`${url}/blog?a=1`)
  t.equal(withQuery.status, 301, '/blog?a=1 is answered 301')
  t.equal(withQuery.headers.location, '/blog/?a=1', 'the query is kept')

  const slash = await get(`${url}/blog/?a=1`)
  t.equal(slash.status, 200, '/blog/ runs the index')
  t.equal(slash.body.toString(), 'index of /blog/index.php q=a=1 via cgi-fcgi\n', 'php-cgi (FastCGI) ran blog/index.php')

  t.equal((await get(`${url}/empty/`)).status, 404, 'a directory without an index file is a 404')
  t.equal((await get(`${url}/empty`)).status, 404, 'also without its trailing slash (no redirect to a directory that has no index)')
})

t.test('php.md: with ^/(blog/)?$ the route does not match /blog: 404 ERR_NO_ROUTE', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const www = site(t)
  const { url } = await proxyServer(t, {
    spawns,
    routes: [{ name: 'home', match: { regex: '^/(blog/)?$' }, protocol: 'fastcgi', spawn: 'php', docroot: www, index: ['index.php'] }],
  } as Parameters<typeof proxyServer>[1])
  const r = await get(`${url}/blog`)
  t.equal(r.status, 404)
  t.match(r.body.toString(), /ERR_NO_ROUTE/)
  t.equal((await get(`${url}/blog/`)).status, 200, '/blog/ still runs the index')
})

const UPLOAD = `<?php
header('Content-Type: application/json');
$f = $_FILES['photo'] ?? null;
echo json_encode(['len' => $_SERVER['CONTENT_LENGTH'] ?? null, 'te' => $_SERVER['HTTP_TRANSFER_ENCODING'] ?? null, 'error' => $f['error'] ?? null, 'size' => $f['size'] ?? null, 'name' => $f['name'] ?? null, 'md5' => $f === null ? null : md5_file($f['tmp_name']), 'title' => $_POST['title'] ?? null]);
`

/** A multipart/form-data body with one text field and one file, sent chunked (no Content-Length) or not. */
async function upload (url: string, file: Buffer, chunked: boolean): Promise<{ status: number, body: string }> {
  const boundary = 'pcdocphp' + randomBytes(8).toString('hex')
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nholiday\r\n`),
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="photo"; filename="beach.jpg"\r\nContent-Type: image/jpeg\r\n\r\n`),
    file,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ])
  return await new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': `multipart/form-data; boundary=${boundary}` }
    if (!chunked) headers['content-length'] = String(body.length)
    let answered = false
    const req = request(url, { method: 'POST', headers }, (res) => {
      answered = true
      const parts: Buffer[] = []
      const done = (): void => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() })
      // A 413 may come before the whole body was sent, and the proxy then closes: the answer counts.
      res.on('data', (c: Buffer) => parts.push(c)).on('end', done).on('close', done).on('error', () => {})
    })
    req.on('error', (err) => { if (!answered) reject(err) })
    // In pieces: a chunked body arrives as several chunks.
    for (let at = 0; at < body.length; at += 50_000) req.write(body.subarray(at, at + 50_000))
    req.end()
  })
}

t.test('php.md: uploads are read whole, then PHP sees them in $_FILES; past spoolLimit 413, PHP never hears', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const www = tempDir(t, 'pc-doc-php-')
  writeFileSync(join(www, 'upload.php'), UPLOAD)
  const { url, proxy } = await proxyServer(t, {
    spawns,
    routes: [
      { name: 'php', match: { extension: '.php', prefix: '/small/' }, stripPrefix: true, protocol: 'fastcgi', spawn: 'php', docroot: www, spoolLimit: '100KiB' },
      { name: 'big', match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: www },
    ],
  } as Parameters<typeof proxyServer>[1])
  const file = randomBytes(300 * 1024)
  const md5 = createHash('md5').update(file).digest('hex')
  for (const chunked of [false, true]) {
    const r = await upload(`${url}/upload.php`, file, chunked)
    t.equal(r.status, 200, `${chunked ? 'chunked' : 'Content-Length'} upload of 300 KiB`)
    const seen = JSON.parse(r.body) as Record<string, unknown>
    t.same({ error: seen.error, size: seen.size, name: seen.name, md5: seen.md5, title: seen.title }, { error: 0, size: file.length, name: 'beach.jpg', md5, title: 'holiday' }, 'PHP has the whole file and the field')
    t.match(String(seen.len), /^\d+$/, `PHP sees a CONTENT_LENGTH (${String(seen.len)})`)
    t.equal(seen.te, null, 'and no Transfer-Encoding')
  }
  const phpRequests = (): number => collectStatus(proxy as never).routes.find((r) => r.name === 'php')?.backends.reduce((n, b) => n + b.requests, 0) ?? -1
  const before = phpRequests()
  for (const chunked of [false, true]) {
    const r = await upload(`${url}/small/upload.php`, file, chunked)
    t.equal(r.status, 413, `${chunked ? 'chunked' : 'Content-Length'} upload past spoolLimit (100 KiB): 413`)
    t.match(r.body, /ERR_BODY_TOO_LARGE/)
  }
  t.equal(phpRequests(), before, 'PHP never heard of them')
})

t.test('php.md: a route without an extension rule runs the uploaded photo.jpg', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const www = tempDir(t, 'pc-doc-php-')
  writeFileSync(join(www, 'index.php'), INDEX)
  mkdirSync(join(www, 'uploads'))
  writeFileSync(join(www, 'uploads', 'photo.jpg'), "<?php echo 'EXECUTED-' . (6 * 7); ?>")
  const { url } = await proxyServer(t, {
    spawns,
    routes: [{ name: 'all', match: { prefix: '/' }, protocol: 'fastcgi', spawn: 'php', docroot: www, index: ['index.php'] }],
  } as Parameters<typeof proxyServer>[1])
  for (const path of ['/uploads/photo.jpg/x.php', '/uploads/photo.jpg']) {
    const r = await get(url + path)
    t.equal(r.body.toString(), 'EXECUTED-42', `${path}: the upload ran as PHP, as the guide warns`)
  }
})

// php-cgi's unset PHP_FCGI_MAX_REQUESTS means 500: it exited after request 500 and came back on a
// new port after a crash backoff. Measured through the CLI before the fix, 3000 POSTs at 8
// concurrent: 34 × 502 (ERR_CONNECT_REFUSED, ERR_BACKEND_RESET) and 19.4 s, against 3000 × 200 in
// 9.3 s with PHP_FCGI_CHILDREN "0".
t.test('php.md: php-cgi spawned without PHP_FCGI_CHILDREN serves past 500 requests without exiting', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const www = tempDir(t, 'pc-doc-php-')
  writeFileSync(join(www, 'pid.php'), '<?php echo getmypid();')
  const { url, proxy } = await proxyServer(t, {
    spawns: { php: { binPath: PHP_CGI, socketName: '127.0.0.1:0', stopTimeout: '2s' } },
    routes: [{ name: 'php', match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: www }],
  } as Parameters<typeof proxyServer>[1])
  const first = await get(`${url}/pid.php`)
  t.equal(first.status, 200)
  const pid = Number(first.body.toString())
  t.ok(readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes('PHP_FCGI_MAX_REQUESTS=0'), 'php-cgi got PHP_FCGI_MAX_REQUESTS=0')
  const pids = new Set<string>()
  const statuses = new Set<number>()
  for (let i = 0; i < 520; i++) {
    const r = await get(`${url}/pid.php`)
    statuses.add(r.status)
    pids.add(r.body.toString())
  }
  t.same([...statuses], [200], '520 more requests, all 200')
  t.same([...pids], [String(pid)], 'all served by the one php-cgi: it never exited after its compiled-in 500')
  t.equal(proxy.spawns?.status()[0].restarts, 0, 'no crash restart')
})

t.test('php.md: traversal, NUL/CR/LF, backslashes and bad encoding are a 400, a symlink out of the docroot a 403; PHP never hears', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const dir = tempDir(t, 'pc-doc-php-')
  const www = join(dir, 'www')
  mkdirSync(join(www, 'uploads'), { recursive: true })
  writeFileSync(join(www, 'page.php'), '<?php echo "PAGE";')
  writeFileSync(join(dir, 'outside.php'), '<?php echo "OUTSIDE";')
  symlinkSync(join(dir, 'outside.php'), join(www, 'link.php'))
  const { url, port, proxy } = await proxyServer(t, {
    spawns,
    routes: [{ name: 'php', match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: www }],
  } as Parameters<typeof proxyServer>[1])
  t.equal((await get(`${url}/page.php`)).body.toString(), 'PAGE')
  const phpRequests = (): number => collectStatus(proxy as never).routes[0].backends.reduce((n, b) => n + b.requests, 0)
  const before = phpRequests()
  for (const path of ['/../page.php', '/uploads/../page.php', '/%2e%2e/page.php', '/uploads/%2E%2E/page.php', '/page.php/../x.php',
    '/page%00.php', '/page.php%00.jpg', '/page.php/%0a', '/page.php/%0d', '/uploads/..%5cpage.php', '/page.php/a%5cb', '/page%zz.php']) {
    // Raw bytes: a URL parser (curl without --path-as-is, fetch) would resolve the `..` first.
    const r = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    t.match(r, /^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*\r\n\r\n400 Bad Request\nERR_BAD_REQUEST\n$/, `${path}: 400 ERR_BAD_REQUEST`)
  }
  const link = await get(`${url}/link.php`)
  t.same([link.status, link.body.toString()], [403, '403 Forbidden\nERR_SCRIPT_FORBIDDEN\n'], 'a symlink leading out of the docroot: 403 ERR_SCRIPT_FORBIDDEN')
  t.equal(phpRequests(), before, 'none of them reached php-cgi')
})

t.test('php.md: PHP_FCGI_CHILDREN 4 and the spawn\'s maxRequests: 20: 40 concurrent POSTs, twice, all 200 across recycles', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  const www = tempDir(t, 'pc-doc-php-')
  // The worker's parent is the php-cgi process proxycore started: which one served the request.
  writeFileSync(join(www, 'post.php'), '<?php echo posix_getppid(), " ", strlen(file_get_contents("php://input"));')
  const { url } = await proxyServer(t, {
    spawns: { php: { binPath: PHP_CGI, socketName: '127.0.0.1:0', environment: { PHP_FCGI_CHILDREN: '4' }, maxRequests: 20, stopTimeout: '5s' } },
    routes: [{ name: 'php', match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: www }],
  } as Parameters<typeof proxyServer>[1])
  const masters = new Set<string>()
  for (let round = 1; round <= 2; round++) {
    const all = await Promise.all(Array.from({ length: 40 }, async () => await get(`${url}/post.php`, { method: 'POST', body: 'x'.repeat(1000) })))
    t.same(all.map((r) => r.status), Array(40).fill(200), `round ${round}: 40 × 200`)
    t.ok(all.every((r) => / 1000$/.test(r.body.toString())), 'every body reached PHP whole')
    for (const r of all) masters.add(r.body.toString().split(' ')[0])
  }
  t.ok(masters.size >= 4, `80 requests, maxRequests 20: served by ${masters.size} php-cgi processes in turn`)
})

t.test('php.md: X-Sendfile, the guide\'s PHP snippet and X-LIGHTTPD-send-file: the file is sent, the PHP body dropped', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const dir = tempDir(t, 'pc-doc-php-')
  const www = join(dir, 'www')
  const downloads = join(dir, 'downloads')
  mkdirSync(www)
  mkdirSync(downloads)
  const pdf = randomBytes(200_000)
  writeFileSync(join(downloads, 'report.pdf'), pdf)
  const guide = readFileSync(new URL('../../docs/guides/php.md', import.meta.url), 'utf8')
  const snippet = /```php\n([\s\S]*?)```/.exec(guide.slice(guide.indexOf('## Downloads through X-Sendfile')))?.[1] ?? ''
  t.match(snippet, "header('X-Sendfile: /srv/downloads/' . $name);")
  writeFileSync(join(www, 'dl.php'), snippet.replace('<?php\n', `<?php\n$name = $_GET['f'];\n`).replace('/srv/downloads/', downloads + '/') + "echo 'php body';\n")
  writeFileSync(join(www, 'dl2.php'), `<?php header('Content-Type: application/pdf'); header('X-LIGHTTPD-send-file: ' . ${JSON.stringify(downloads + '/')} . $_GET['f']); echo 'php body';`)
  const { url } = await proxyServer(t, {
    spawns,
    routes: [{ name: 'php', match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: www, xSendfile: { allow: [downloads] } }],
  } as Parameters<typeof proxyServer>[1])
  for (const script of ['dl.php', 'dl2.php']) {
    const r = await get(`${url}/${script}?f=report.pdf`)
    t.equal(r.status, 200, `${script}: 200`)
    t.equal(r.headers['content-type'], 'application/pdf', 'the backend\'s other headers are kept')
    t.equal(r.headers['content-length'], String(pdf.length), 'Content-Length is the file\'s')
    t.notOk('x-sendfile' in r.headers || 'x-lighttpd-send-file' in r.headers, 'the X-Sendfile header itself is not')
    t.ok(r.body.equals(pdf), 'the file, not the PHP body')
  }
  const missing = await get(`${url}/dl.php?f=nope.pdf`)
  t.same([missing.status, /ERR_SCRIPT_NOT_FOUND/.test(missing.body.toString())], [404, true], 'a file that does not exist: 404 ERR_SCRIPT_NOT_FOUND')
  const out = await get(`${url}/dl.php?f=../www/dl.php`)
  t.same([out.status, /ERR_SENDFILE_FORBIDDEN/.test(out.body.toString())], [502, true], 'outside allow: 502 ERR_SENDFILE_FORBIDDEN')
})
