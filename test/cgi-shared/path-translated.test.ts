/**
 * No PATH_TRANSLATED by default (src/core/cgi/env.ts). php-cgi and php-fpm with
 * `cgi.fix_pathinfo=0` (the usual "harden PHP" advice) execute PATH_TRANSLATED instead of
 * SCRIPT_FILENAME, so with PATH_TRANSLATED = DOCUMENT_ROOT + PATH_INFO:
 *   /index.php/uploads/evil.jpg  ran the uploaded jpg as PHP, past the route's `.php` rule;
 *   /index.php/.env              printed the file;
 *   /index.php/x                 ran nothing the URL names (php-fpm: 403 "Access denied.").
 * Real php-cgi as FastCGI (socket spawn) and as plain CGI (pipe spawn), and real php-fpm.
 */
import t from 'tap'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildCgiEnv } from '../../src/core/cgi/env.js'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { PHP_CGI, PHP_FPM, havePeer, startPhpFpm, tempDir } from '../fastcgi/helpers/peers.js'

const INDEX = `<?php echo 'INDEX-RAN script=', $_SERVER['SCRIPT_NAME'], ' pi=', $_SERVER['PATH_INFO'] ?? '-', ' pt=', $_SERVER['PATH_TRANSLATED'] ?? getenv('PATH_TRANSLATED') ?: '-', "\\n";`

function site (t: Parameters<typeof tempDir>[0]): string {
  const dir = tempDir(t, 'pc-pt-')
  const www = join(dir, 'www')
  mkdirSync(join(www, 'uploads'), { recursive: true })
  writeFileSync(join(www, 'index.php'), INDEX)
  writeFileSync(join(www, 'other.php'), '<?php echo "OTHER-RAN\\n";')
  writeFileSync(join(www, '.env'), 'DB_PASSWORD=s3cret-from-dotenv\n')
  writeFileSync(join(www, 'uploads', 'evil.jpg'), 'GIF89a <?php echo "EVIL-JPG-RAN\\n";')
  chmodSync(dir, 0o755)
  return dir
}

async function check (t: Parameters<typeof tempDir>[0], base: string, prefix: string, sapi: string): Promise<void> {
  const url = base + prefix
  const jpg = await get(`${url}/index.php/uploads/evil.jpg`)
  t.notMatch(jpg.body.toString(), /EVIL-JPG-RAN/, `${sapi}: the uploaded jpg does not run`)
  t.equal(jpg.status, 200)
  t.equal(jpg.body.toString(), `INDEX-RAN script=${prefix}/index.php pi=/uploads/evil.jpg pt=-\n`, `${sapi}: index.php runs, with the path info`)

  const env = await get(`${url}/index.php/.env`)
  t.notMatch(env.body.toString(), /s3cret/, `${sapi}: .env is not printed`)
  t.equal(env.body.toString(), `INDEX-RAN script=${prefix}/index.php pi=/.env pt=-\n`)

  const x = await get(`${url}/index.php/x`)
  t.equal(x.status, 200, `${sapi}: /index.php/x answers`)
  t.equal(x.body.toString(), `INDEX-RAN script=${prefix}/index.php pi=/x pt=-\n`, `${sapi}: /index.php/x runs index.php with PATH_INFO=/x`)

  const other = await get(`${url}/index.php/other.php`)
  t.equal(other.body.toString(), `INDEX-RAN script=${prefix}/index.php pi=/other.php pt=-\n`, `${sapi}: the script is the one the URL names, not the path info`)
}

t.test('buildCgiEnv sends PATH_INFO and DOCUMENT_ROOT, never PATH_TRANSLATED', async (t) => {
  const env = buildCgiEnv({
    method: 'GET', url: '/index.php/a/b', path: '/index.php/a/b', query: '', httpVersion: '1.1', headers: {}, rawHeaders: ['Host', 'h'],
    client: { address: '127.0.0.1', port: 1, localAddress: '127.0.0.1', localPort: 2, secure: false },
    script: { filename: '/srv/www/index.php', name: '/index.php', pathInfo: '/a/b', docroot: '/srv/www' },
    serverSoftware: 'proxycore/test', contentLength: null,
  })
  t.equal(env.PATH_INFO, '/a/b')
  t.equal(env.DOCUMENT_ROOT, '/srv/www')
  t.notOk('PATH_TRANSLATED' in env)
  const op = buildCgiEnv({
    method: 'GET', url: '/x', path: '/x', query: '', httpVersion: '1.1', headers: {}, rawHeaders: ['Host', 'h'],
    client: { address: '127.0.0.1', port: 1, localAddress: '127.0.0.1', localPort: 2, secure: false },
    script: { filename: '/srv/app.cgi', name: '', pathInfo: '/x', docroot: '' },
    serverSoftware: 'proxycore/test', contentLength: null, params: { PATH_TRANSLATED: '/srv/data' },
  })
  t.equal(op.PATH_TRANSLATED, '/srv/data', 'an operator who needs it sets it in the route params')
})

t.test('php-cgi with cgi.fix_pathinfo=0, as FastCGI and as CGI', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = site(t)
  const www = join(dir, 'www')
  const { url } = await proxyServer(t, {
    spawns: {
      fcgi: { binPath: `${PHP_CGI} -n -d cgi.fix_pathinfo=0`, socketName: join(dir, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' },
      cgi: { socketType: 'pipe', binPath: `${PHP_CGI} -n -d cgi.fix_pathinfo=0`, stopTimeout: 500 },
    },
    routes: [
      { match: { prefix: '/f/', extension: '.php' }, protocol: 'fastcgi', spawn: 'fcgi', docroot: www, stripPrefix: true },
      { match: { prefix: '/c/', extension: '.php' }, protocol: 'cgi', spawn: 'cgi', docroot: www, stripPrefix: true, params: { REDIRECT_STATUS: '200' } },
    ],
  })
  await t.test('FastCGI', async (t) => check(t, url, '/f', 'php-cgi -b'))
  await t.test('CGI', async (t) => check(t, url, '/c', 'php-cgi (CGI)'))
})

t.test('php-fpm with cgi.fix_pathinfo=0', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = site(t)
  const fpm = await startPhpFpm(t, dir, 1, 'php_admin_value[cgi.fix_pathinfo] = 0')
  const { url } = await proxyServer(t, {
    routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${fpm.socketPath}`], docroot: join(dir, 'www') }],
  })
  await check(t, url, '', 'php-fpm')
})
