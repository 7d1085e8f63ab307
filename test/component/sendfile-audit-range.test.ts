/**
 * A backend that does ranges itself and hands the bytes to X-Sendfile: a PHP download script that
 * answers a resumed download (`Range: bytes=4-`) with 206 and `Content-Range: bytes 4-9/10`. Before,
 * the proxy sent the whole file under that Content-Range, with the whole file's Content-Length:
 * the client put bytes 0-9 where 4-9 belong, a silently corrupt download. Now exactly the named
 * bytes are sent, and a Content-Range the file cannot fill is a 502, never a wrong body.
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

  t.test("X-Sendfile under a backend's Content-Range sends exactly that range", async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'pc-sf-range-'))
    t.teardown(() => rmSync(root, { recursive: true, force: true }))
    writeFileSync(join(root, 'f.bin'), '0123456789')
    // The usual resumable-download script: it parses Range itself, then lets the proxy send.
    writeFileSync(join(root, 'dl.php'), `<?php
$file = ${JSON.stringify(join(root, 'f.bin'))};
$size = filesize($file);
if (isset($_GET['lie'])) { http_response_code(206); header("Content-Range: bytes 4-20/$size"); }
elseif (preg_match('/^bytes=(\\d+)-(\\d*)$/', $_SERVER['HTTP_RANGE'] ?? '', $m)) {
  $last = $m[2] === '' ? $size - 1 : (int)$m[2];
  http_response_code(206);
  header("Content-Range: bytes $m[1]-$last/$size");
}
header('Content-Type: application/octet-stream');
header('X-Sendfile: ' . $file);`)
    const { port } = await proxyServer(t, {
      spawns: { php: { binPath: PHP_CGI, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } },
      routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: root, xSendfile: { allow: [root] } }],
    })
    // Three answers on one connection: a wrong Content-Length would shift the next response.
    const r = await rawRequest(port, 'GET /dl.php HTTP/1.1\r\nHost: a\r\nRange: bytes=4-\r\n\r\n' +
      'GET /dl.php HTTP/1.1\r\nHost: a\r\nRange: bytes=2-3\r\n\r\n' +
      'GET /dl.php HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
    const parts = r.split(/(?=HTTP\/1\.1 )/)
    t.equal(parts.length, 3, 'three responses')
    t.match(parts[0], /^HTTP\/1\.1 206 [^]*content-range: bytes 4-9\/10\r\n/i)
    t.match(parts[0], /content-length: 6\r\n/i)
    t.match(parts[0], /\r\n\r\n456789$/, 'the bytes the Content-Range names, not the file from 0')
    t.match(parts[1], /^HTTP\/1\.1 206 [^]*content-length: 2\r\n[^]*\r\n\r\n23$/i, 'an inner range')
    t.match(parts[2], /^HTTP\/1\.1 200 [^]*content-length: 10\r\n[^]*\r\n\r\n0123456789$/i, 'no Content-Range: the whole file')

    const head = await rawRequest(port, 'HEAD /dl.php HTTP/1.1\r\nHost: a\r\nRange: bytes=4-\r\nConnection: close\r\n\r\n')
    t.match(head, /^HTTP\/1\.1 206 [^]*content-length: 6\r\n[^]*\r\n\r\n$/i, 'HEAD: the range\'s length, no body')

    const lie = await rawRequest(port, 'GET /dl.php?lie=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
    t.match(lie, /^HTTP\/1\.1 502 [^]*ERR_BAD_RESPONSE_HEADER/, 'a range the file cannot fill: 502')
    t.notMatch(lie, /456789/, 'no byte of the file')
  })
}
