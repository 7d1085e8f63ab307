/**
 * A prefix route serving PHP keeps the script rule through `scriptExtensions`: an uploaded
 * `.jpg` carrying PHP code never runs, directly or as `x.jpg/y.php` (RELIABILITY §2.2).
 */
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { havePeer } from './helpers/peers.js'
import { get, proxyServer } from '../helpers/servers.js'

const PHP = '/usr/bin/php-cgi'
if (havePeer(t, PHP)) {
  guardLeaks(t, { timeoutMs: 10_000 })
  t.test('prefix route + index + scriptExtensions', async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'pc-rule-'))
    t.teardown(() => rmSync(root, { recursive: true, force: true }))
    mkdirSync(join(root, 'uploads'))
    writeFileSync(join(root, 'index.php'), '<?php echo "index ran";')
    writeFileSync(join(root, 'uploads', 'photo.jpg'), '<?php echo "PWNED";')
    const { url } = await proxyServer(t, {
      spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } },
      routes: [{ match: { prefix: '/' }, protocol: 'fastcgi', spawn: 'php', docroot: root, index: ['index.php'], scriptExtensions: ['.php'] }],
    })
    t.equal((await get(`${url}/`)).body.toString(), 'index ran')
    for (const p of ['/uploads/photo.jpg', '/uploads/photo.jpg/x.php']) {
      const r = await get(url + p)
      t.ok(r.status === 403 || r.status === 404, `${p} refused (${r.status})`)
      t.notMatch(r.body.toString(), /PWNED/, `${p} never ran`)
    }
  })
}
