/**
 * docs/guides/php.md, section 2 (an external php-fpm pool), the claims about php-fpm itself and
 * about `request_terminate_timeout`, against a private php-fpm (its own config in a temp dir, never
 * the system service): Debian's `www` pool file says what the guide says it does; a worker killed
 * before any byte is a 502 and a POST is never sent again; one killed after the head reaches the
 * client as a cut connection, never a clean short 200.
 */
import t from 'tap'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { havePeer, PHP_FPM, startPhpFpm, tempDir } from '../fastcgi/helpers/peers.js'
import { captureLogger } from '../cgi/harness.js'

const WWW_POOL = '/etc/php/8.2/fpm/pool.d/www.conf'

t.test('Debian\'s www pool: the socket, its owner and mode, pm.max_children 5, limit_extensions', async (t) => {
  if (!existsSync(WWW_POOL)) {
    if (process.env.CI === 'true') t.fail(`${WWW_POOL} is not installed`)
    else t.plan(0, `${WWW_POOL} is not installed`)
    return
  }
  const conf = readFileSync(WWW_POOL, 'utf8')
  t.match(conf, /^listen = \/run\/php\/php8\.2-fpm\.sock$/m, 'listens on /run/php/php8.2-fpm.sock')
  t.match(conf, /^listen\.owner = www-data$/m)
  t.match(conf, /^listen\.group = www-data$/m)
  t.match(conf, /^;listen\.mode = 0660$/m, 'mode 0660 (php-fpm\'s default, shown commented)')
  t.match(conf, /^pm\.max_children = 5$/m, 'pm.max_children = 5: the guide\'s maxConnections: 5')
  t.match(conf, /^;security\.limit_extensions = \.php \.php3 \.php4 \.php5 \.php7$/m, 'limit_extensions: .php by default, more in the comment')
})

/** POST/GET that resolves with what the client saw, a cut connection included. */
async function ask (url: string, method: string): Promise<{ status: number, body: string, complete: boolean, error: string | null }> {
  return await new Promise((resolve) => {
    const req = request(url, { method, headers: method === 'POST' ? { 'content-type': 'text/plain', 'content-length': '5' } : {} }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, complete: res.complete, error: null }))
      res.on('error', (err) => resolve({ status: res.statusCode ?? 0, body, complete: false, error: (err as NodeJS.ErrnoException).code ?? err.message }))
      res.on('close', () => resolve({ status: res.statusCode ?? 0, body, complete: res.complete, error: res.complete ? null : 'closed' }))
    })
    req.on('error', (err) => resolve({ status: 0, body: '', complete: false, error: (err as NodeJS.ErrnoException).code ?? err.message }))
    req.end(method === 'POST' ? 'hello' : undefined)
  })
}

t.test('request_terminate_timeout killing a worker', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_FPM)) return
  const dir = tempDir(t, 'pc-doc-phpfpm-')
  const runs = join(dir, 'runs')
  writeFileSync(runs, '')
  // Every run appends a line, so the test counts how often php-fpm was sent each request.
  writeFileSync(join(dir, 'quiet.php'), `<?php file_put_contents(${JSON.stringify(runs)}, $_SERVER['REQUEST_METHOD'] . " quiet\\n", FILE_APPEND); sleep(10); echo 'never';`)
  writeFileSync(join(dir, 'head.php'), `<?php file_put_contents(${JSON.stringify(runs)}, $_SERVER['REQUEST_METHOD'] . " head\\n", FILE_APPEND); header('Content-Type: text/plain'); echo str_repeat('x', 100); flush(); sleep(10); echo 'never';`)
  writeFileSync(join(dir, 'ok.php'), '<?php echo "ok";')
  const fpm = await startPhpFpm(t, dir, 2, 'request_terminate_timeout = 1s')
  const { url } = await proxyServer(t, {
    routes: [{ name: 'php', match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${fpm.socketPath}`], docroot: dir, options: { maxConnections: 2 } }],
  } as Parameters<typeof proxyServer>[1])
  const count = (what: string): number => readFileSync(runs, 'utf8').split('\n').filter((l) => l === what).length

  t.equal((await get(`${url}/ok.php`)).status, 200, 'warm: a kept-alive connection to the pool')
  const post = await ask(`${url}/quiet.php`, 'POST')
  t.equal(post.status, 502, 'POST, worker killed before any byte: 502')
  t.equal(count('POST quiet'), 1, 'the POST was sent once, never again')

  t.equal((await get(`${url}/ok.php`)).status, 200)
  const getQuiet = await ask(`${url}/quiet.php`, 'GET')
  t.equal(getQuiet.status, 502, 'GET, worker killed before any byte: 502')
  t.equal(count('GET quiet'), 2, 'the GET, on a reused connection, was sent once more')

  const cut = await ask(`${url}/head.php`, 'GET')
  t.equal(cut.status, 200, 'killed after the head: the head had reached the client')
  t.notOk(cut.complete, 'a cut connection, never a clean short 200')
  t.comment(`the client saw: ${String(cut.error)}`)
  t.equal(cut.body, 'x'.repeat(100), 'what PHP flushed before it was killed')
  t.equal((await get(`${url}/ok.php`)).status, 200, 'the pool serves again')
})

t.test('without maxConnections: every request answered, and one warning the first time an idle connection is closed', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_FPM)) return
  const dir = tempDir(t, 'pc-doc-phpfpm-')
  writeFileSync(join(dir, 'slow.php'), '<?php usleep(100000); echo getmypid();')
  const fpm = await startPhpFpm(t, dir, 2)
  const { logger, lines } = captureLogger()
  const { url } = await proxyServer(t, {
    logger,
    routes: [{ name: 'php', match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${fpm.socketPath}`], docroot: dir }],
  } as Parameters<typeof proxyServer>[1])
  for (let round = 0; round < 3; round++) {
    const all = await Promise.all(Array.from({ length: 8 }, async () => await get(`${url}/slow.php`)))
    t.same(all.map((r) => r.status), Array(8).fill(200), `round ${round + 1}: 8 concurrent requests on a pool of 2, all 200`)
  }
  const warnings = lines.filter((l) => l.level === 'warn' && /does not say how many connections it accepts/.test(l.msg))
  t.equal(warnings.length, 1, 'the warning, once')
  t.match(warnings[0]?.msg, /set options\.maxConnections to its worker count \(php-fpm: pm\.max_children\)/, 'naming the fix')
})
