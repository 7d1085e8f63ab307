/**
 * The authorizer is asked before the route prepares the request: a refused client learns nothing
 * the script walk would say (an existing script and a missing one both get the authorizer's 401,
 * never 404 or 403), and its chunked body is never spooled. Before, the walk and the spool ran
 * first (audit: `/p/missing.sh` → 404, and a chunked POST got its 401 only after its last chunk).
 * Real php-cgi as authorizer and responder.
 */
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { havePeer } from './helpers/peers.js'
import { get, proxyServer } from '../helpers/servers.js'

const PHP = '/usr/bin/php-cgi'

/** Send `head` and one chunk of a chunked body, never the rest; resolve with the status line. */
function statusBeforeBodyEnds (port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1')
    let got = ''
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`no answer before the body ended: ${JSON.stringify(got)}`)) }, 5000)
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1')
      const eol = got.indexOf('\r\n')
      if (eol >= 0) { clearTimeout(timer); s.destroy(); resolve(got.slice(0, eol)) }
    })
    s.on('error', (err) => { clearTimeout(timer); reject(err) })
    s.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n`)
  })
}

if (havePeer(t, PHP)) {
  guardLeaks(t, { timeoutMs: 10_000 })

  t.test('a refused request gets the authorizer answer before any script walk or spooling', async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'pc-authz-order-'))
    t.teardown(() => rmSync(root, { recursive: true, force: true }))
    mkdirSync(join(root, 'www'))
    writeFileSync(join(root, 'auth.php'), `<?php
if (($_SERVER['HTTP_X_TOKEN'] ?? '') === 'secret') { header('Variable-X-User: alice'); exit; }
http_response_code(401);
echo 'denied';`)
    writeFileSync(join(root, 'www', 'app.php'), '<?php echo "user=", getenv("X_USER") ?: "-", " len=", strlen(file_get_contents("php://input"));')
    const { url, port } = await proxyServer(t, {
      spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '2' }, stopTimeout: '2s' } },
      routes: [{
        match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: join(root, 'www'),
        authorizer: { spawn: 'php', scriptFilename: join(root, 'auth.php') },
      }],
    })
    for (const path of ['/app.php', '/missing.php', '/app.php/../../auth.php']) {
      const r = await get(`${url}${path}`)
      t.same([r.status, r.body.toString()], [401, 'denied'], `${path}: the authorizer's answer, whatever the walk would say`)
    }
    t.equal(await statusBeforeBodyEnds(port, '/app.php'), 'HTTP/1.1 401 Unauthorized', 'a chunked upload is refused before its body ends (nothing spooled)')
    const ok = await get(`${url}/app.php`, { method: 'POST', headers: { 'x-token': 'secret', 'transfer-encoding': 'chunked' }, body: 'payload' })
    t.same([ok.status, ok.body.toString()], [200, 'user=alice len=7'], 'an allowed request is prepared after: spooled body and the authorizer variable')
    const gone = await get(`${url}/missing.php`, { headers: { 'x-token': 'secret' } })
    t.equal(gone.status, 404, 'the walk still answers an allowed request')
  })
}
