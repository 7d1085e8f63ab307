/**
 * AC-38: php-cgi run as a plain CGI (one php-cgi process per request, over pipes), through the
 * whole pipeline. The route sets REDIRECT_STATUS=200 (php's `cgi.force_redirect`); the negative
 * control runs the same script without it and gets php's "Security Alert!".
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { get } from '../helpers/servers.js'
import { guardLeaks } from '../helpers/leaks.js'
import { cgiProxy, havePeer, tempDir, writeScripts } from './harness.js'

const PHP_CGI = '/usr/bin/php-cgi'
const execFileP = promisify(execFile)

const INFO = `<?php
header('X-Php: yes');
echo 'php ', PHP_SAPI, ' ', $_SERVER['SCRIPT_FILENAME'], ' ', $_SERVER['REDIRECT_STATUS'] ?? 'none', ' ', getcwd(), "\\n";
echo 'query ', $_SERVER['QUERY_STRING'], ' proxy ', getenv('HTTP_PROXY') === false ? 'unset' : 'SET', "\\n";
if ($_SERVER['REQUEST_METHOD'] === 'POST') echo 'post ', $_SERVER['CONTENT_LENGTH'], ' ', hash('sha256', file_get_contents('php://input')), "\\n";
`

t.test('AC-38: php-cgi as plain CGI', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t)
  const www = join(dir, 'www')
  writeScripts(www, { 'info.php': INFO }, 0o644)
  const route = { protocol: 'cgi', spawn: 'php', docroot: www, stripPrefix: true, match: { extension: '.php' } }
  const p = await cgiProxy(t, { php: { binPath: PHP_CGI } }, [
    { ...route, match: { ...route.match, prefix: '/php/' }, params: { REDIRECT_STATUS: '200' } },
    { ...route, match: { ...route.match, prefix: '/raw/' } }
  ])

  const r = await get(`${p.url}/php/info.php?a=1`, { headers: { proxy: 'http://127.0.0.1:9/' } })
  t.equal(r.status, 200)
  t.equal(r.headers['x-php'], 'yes')
  t.equal(r.body.toString(), `php cgi-fcgi ${join(www, 'info.php')} 200 ${www}\nquery a=1 proxy unset\n`,
    'CGI SAPI, absolute SCRIPT_FILENAME, REDIRECT_STATUS from the route, cwd = script dir, no httpoxy')

  const body = randomBytes(300 * 1024)
  const post = await get(`${p.url}/php/info.php`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } })
  t.match(post.body.toString(), `post ${body.length} ${createHash('sha256').update(body).digest('hex')}\n`, 'POST body over stdin')

  // Negative control. Through the proxy php's refusal is not even a CGI head → 502; run by the
  // harness directly with the same environment minus REDIRECT_STATUS, it prints the alert.
  const control = await get(`${p.url}/raw/info.php`)
  t.equal(control.status, 502, 'without REDIRECT_STATUS php answers with no CGI head')
  // php-cgi exits 255 here: the refusal is read from the error's stdout.
  const direct = await execFileP(PHP_CGI, [], { env: { GATEWAY_INTERFACE: 'CGI/1.1', REQUEST_METHOD: 'GET', SCRIPT_FILENAME: join(www, 'info.php') } })
    .catch((err: { stdout: string }) => ({ stdout: err.stdout }))
  t.match(direct.stdout, 'Security Alert!', 'php-cgi refuses without REDIRECT_STATUS (cgi.force_redirect): the variable matters')
})
