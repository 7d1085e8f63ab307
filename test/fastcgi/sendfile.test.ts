/**
 * X-Sendfile through the core with real php-cgi: files under the allow-listed root are served by the
 * proxy (large, intact, HEAD without body); anything outside, or through a symlink leading out, is
 * refused.
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { havePeer } from './helpers/peers.js'
import { get, proxyServer } from '../helpers/servers.js'

const PHP = '/usr/bin/php-cgi'
if (havePeer(t, PHP)) {
  guardLeaks(t, { timeoutMs: 10_000 })

  t.test('X-Sendfile inside the allowed root is served by the proxy; outside is refused', async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'pc-sendfile-'))
    t.teardown(() => rmSync(root, { recursive: true, force: true }))
    const files = join(root, 'files')
    const www = join(root, 'www')
    mkdirSync(files)
    mkdirSync(www)
    const big = randomBytes(5 * 1024 * 1024)
    writeFileSync(join(files, 'big.bin'), big)
    writeFileSync(join(root, 'secret.txt'), 'secret')
    symlinkSync(join(root, 'secret.txt'), join(files, 'escape.txt'))
    writeFileSync(join(www, 'dl.php'), `<?php
header('Content-Type: application/octet-stream');
header('X-Sendfile: ' . $_GET['f']);
echo 'php body is dropped';`)
    const { url } = await proxyServer(t, {
      spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } },
      routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: www, xSendfile: { allow: [files] } }],
    })
    const q = (p: string): string => `${url}/dl.php?f=${encodeURIComponent(p)}`
    const ok = await get(q(join(files, 'big.bin')))
    t.equal(ok.status, 200)
    t.equal(ok.headers['content-length'], String(big.length))
    t.equal(ok.headers['content-type'], 'application/octet-stream', 'backend headers kept')
    t.notOk(ok.headers['x-sendfile'], 'X-Sendfile not forwarded')
    t.equal(createHash('sha256').update(ok.body).digest('hex'), createHash('sha256').update(big).digest('hex'), '5 MiB intact')
    const head = await get(q(join(files, 'big.bin')), { method: 'HEAD' })
    t.equal(head.headers['content-length'], String(big.length))
    t.equal(head.body.length, 0, 'HEAD: no body')
    const out = await get(q(join(root, 'secret.txt')))
    t.equal(out.status, 502, 'outside the allowed root')
    t.match(out.body.toString(), /ERR_SENDFILE_FORBIDDEN/)
    const link = await get(q(join(files, 'escape.txt')))
    t.equal(link.status, 502, 'a symlink leading out is judged by its real path')
    const rel = await get(q('../secret.txt'))
    t.equal(rel.status, 502, 'relative paths refused')
    const missing = await get(q(join(files, 'nope.bin')))
    t.equal(missing.status, 404)
    t.notMatch(out.body.toString() + link.body.toString(), /secret/)
  })

  t.test('without xSendfile the header is just a header', async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'pc-sendfile-'))
    t.teardown(() => rmSync(root, { recursive: true, force: true }))
    writeFileSync(join(root, 'dl.php'), `<?php header('X-Sendfile: /etc/passwd'); echo 'body';`)
    const { url } = await proxyServer(t, {
      spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } },
      routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: root }],
    })
    const r = await get(`${url}/dl.php`)
    t.equal(r.body.toString(), 'body')
  })
}
