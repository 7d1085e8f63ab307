/**
 * The FastCGI Authorizer role through the whole pipeline (AC-81), with real php-cgi playing both
 * the authorizer (FCGI_ROLE=AUTHORIZER) and the responder.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { havePeer } from './helpers/peers.js'
import { get, proxyServer } from '../helpers/servers.js'

const PHP = '/usr/bin/php-cgi'
if (havePeer(t, PHP)) {
  guardLeaks(t, { timeoutMs: 10_000 })

  t.test('200 lets the request through with Variable-*; anything else is the client answer', async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'pc-authz-'))
    t.teardown(() => rmSync(root, { recursive: true, force: true }))
    writeFileSync(join(root, 'auth.php'), `<?php
if (getenv('FCGI_ROLE') !== 'AUTHORIZER') { http_response_code(500); echo 'not called as authorizer'; exit; }
if (isset($_SERVER['CONTENT_LENGTH'])) { http_response_code(500); echo 'authorizer must not see a body'; exit; }
if (($_SERVER['HTTP_X_TOKEN'] ?? '') === 'secret') {
  header('Variable-X-User-Role: admin');
  header('Variable-USER_ROLE: outside-the-allow-list');
  header('Variable-REMOTE_ADDR: 6.6.6.6');
  echo 'ignored body';
} else {
  http_response_code(401);
  header('WWW-Authenticate: Token');
  header('Variable-LEAK: no');
  echo 'denied by authorizer';
}`)
    writeFileSync(join(root, 'app.php'), `<?php echo 'role=', getenv('X_USER_ROLE') ?: '-', ' other=', getenv('USER_ROLE') ?: '-', ' remote=', $_SERVER['REMOTE_ADDR'], ' body=', file_get_contents('php://input');`)
    const { url } = await proxyServer(t, {
      spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '2' }, stopTimeout: '2s' } },
      routes: [{
        match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: root,
        authorizer: { spawn: 'php', scriptFilename: join(root, 'auth.php') },
      }],
    })
    const ok = await get(`${url}/app.php`, { method: 'POST', headers: { 'x-token': 'secret' }, body: 'payload' })
    t.equal(ok.status, 200, ok.body.toString())
    t.equal(ok.body.toString(), 'role=admin other=- remote=127.0.0.1 body=payload', 'allowed Variable-* passed on (X_*), others dropped; proxy variables cannot be overridden; the body reaches only the handler')
    const no = await get(`${url}/app.php`, { headers: { 'x-token': 'wrong' } })
    t.equal(no.status, 401, 'the authorizer status goes to the client')
    t.equal(no.body.toString(), 'denied by authorizer')
    t.equal(no.headers['www-authenticate'], 'Token')
    t.notOk(no.headers['variable-leak'], 'Variable-* never reaches the client')
  })

  t.test('an unreachable authorizer fails closed', async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'pc-authz-'))
    t.teardown(() => rmSync(root, { recursive: true, force: true }))
    writeFileSync(join(root, 'app.php'), '<?php echo "must not run";')
    const { url } = await proxyServer(t, {
      spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } },
      routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: root, authorizer: { backends: ['127.0.0.1:1'] }, retries: 0 }],
    })
    const r = await get(`${url}/app.php`)
    t.equal(r.status, 502)
    t.match(r.body.toString(), /ERR_CONNECT_REFUSED/)
    t.notMatch(r.body.toString(), /must not run/)
  })
}
