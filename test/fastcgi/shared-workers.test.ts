/**
 * php-cgi workers serve one connection at a time, and an idle keep-alive connection holds its
 * worker. Every pool that sends to one backend (two routes on one spawn, a route and its
 * authorizer) now shares one FastCGI client, so its idle connections serve whichever route needs
 * them. Before, each route had its own client and kept its own idle connection: with
 * `PHP_FCGI_CHILDREN: 2`, after one request on each of two routes both workers were held, and the
 * next two concurrent requests on one route left one waiting until an idle connection timed out
 * (60 s; here the route's 5 s headers timeout answers 504). Real php-cgi.
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

  t.test('two routes and an authorizer on one php-cgi with 2 workers: concurrent requests never wait on the other pools\' idle connections', async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'pc-shared-workers-'))
    t.teardown(() => rmSync(root, { recursive: true, force: true }))
    const www = join(root, 'www')
    mkdirSync(www)
    writeFileSync(join(www, 'index.php'), '<?php echo "home";')
    writeFileSync(join(www, 'slow.php'), '<?php usleep(200000); echo "slow";')
    writeFileSync(join(root, 'auth.php'), "<?php if (($_SERVER['HTTP_X_TOKEN'] ?? '') !== 'secret') { http_response_code(401); echo 'denied'; }")
    const { url } = await proxyServer(t, {
      spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '2' }, stopTimeout: '2s' } },
      routes: [
        { name: 'home', match: { regex: '^/$' }, protocol: 'fastcgi', spawn: 'php', docroot: www, index: ['index.php'], timeouts: { headers: '5s' } },
        { name: 'guarded', match: { prefix: '/private/' }, protocol: 'fastcgi', spawn: 'php', docroot: www, stripPrefix: true, authorizer: { spawn: 'php', scriptFilename: join(root, 'auth.php') }, timeouts: { headers: '5s' } },
        { name: 'php', match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: www, timeouts: { headers: '5s' } },
      ],
    })
    // One request on every pool: each leaves a kept-alive connection behind.
    t.equal((await get(`${url}/`)).body.toString(), 'home')
    t.equal((await get(`${url}/private/slow.php`, { headers: { 'x-token': 'secret' } })).status, 200)
    t.equal((await get(`${url}/private/slow.php`)).status, 401, 'the authorizer refuses without the token')
    t.equal((await get(`${url}/slow.php`)).body.toString(), 'slow')
    // Both workers are needed at once, on one route, then on the guarded one.
    for (const path of ['/slow.php', '/private/slow.php']) {
      const both = await Promise.all([1, 2].map(async () => await get(`${url}${path}`, { headers: { 'x-token': 'secret' } })))
      t.same(both.map((r) => [r.status, r.body.toString()]), [[200, 'slow'], [200, 'slow']], `${path}: two at once, both answered`)
    }
  })
}
