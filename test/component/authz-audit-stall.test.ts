/**
 * An authorizer's `timeout` bounds its whole answer, not only the head. A real php-cgi authorizer
 * that sends its head (and some body) and then sleeps: before the fix the proxy waited for as long
 * as the script slept — the allowed request was held and the client got the handler's answer 30 s
 * later; the denial was streamed, then hung 30 s with the client's connection open.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { havePeer, PHP_CGI } from '../fastcgi/helpers/peers.js'
import { proxyServer, rawRequest } from '../helpers/servers.js'

if (havePeer(t, PHP_CGI)) {
  guardLeaks(t, { timeoutMs: 10_000 })

  t.test('an authorizer silent after its head is cut at `timeout`', async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'pc-authz-stall-'))
    t.teardown(() => rmSync(root, { recursive: true, force: true }))
    // 100 kB: past php-cgi's own output buffer, so the head and a part of the body are out.
    writeFileSync(join(root, 'auth.php'), `<?php
if (($_SERVER['HTTP_X_MODE'] ?? '') === 'deny') { http_response_code(403); header('Content-Type: text/plain'); }
header('Variable-X-User: u');
echo str_repeat('p', 100000); flush(); sleep(30);`)
    writeFileSync(join(root, 'app.php'), `<?php echo 'app ran';`)
    const { port } = await proxyServer(t, {
      spawns: { php: { binPath: PHP_CGI, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '2' }, stopTimeout: '2s' } },
      routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: root, authorizer: { spawn: 'php', scriptFilename: join(root, 'auth.php'), timeout: '1s' } }],
    })

    let t0 = Date.now()
    const allowed = await rawRequest(port, 'GET /app.php HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
    let took = Date.now() - t0
    t.match(allowed, /^HTTP\/1\.1 504 /, 'a 200 whose end does not come within timeout: 504')
    t.match(allowed, /ERR_BODY_TIMEOUT/)
    t.notMatch(allowed, /app ran/, 'the handler never runs on an unfinished verdict')
    t.ok(took < 8000, `answered after the 1 s timeout, not the script's 30 s sleep (${took} ms)`)

    t0 = Date.now()
    const denied = await rawRequest(port, 'GET /app.php HTTP/1.1\r\nHost: a\r\nX-Mode: deny\r\nConnection: close\r\n\r\n')
    took = Date.now() - t0
    t.match(denied, /^HTTP\/1\.1 403 /, 'the denial head went out')
    t.match(denied, /p{1000}/, 'with the body the authorizer sent')
    t.notMatch(denied, /\r\n0\r\n\r\n$/, 'never completed: the connection is cut, no final chunk')
    t.ok(took < 8000, `cut after the 1 s timeout, not the script's 30 s sleep (${took} ms)`)
  })
}
