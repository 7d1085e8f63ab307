/** End to end through createProxy: node:http front → core pipeline → FastCGI adapter → php-cgi. */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { PHP_CGI, PHP_FIXTURE, havePeer, startPhpCgi, tempDir } from './helpers/peers.js'

t.test('php-cgi behind createProxy', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t)
  writeFileSync(join(dir, 't.php'), PHP_FIXTURE)
  const php = await startPhpCgi(t, dir, 2)
  const { url } = await proxyServer(t, {
    routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${php.socketPath}`], docroot: dir }],
  })
  const r = await get(`${url}/t.php?status=1`)
  t.equal(r.status, 404, r.body.toString())
  t.equal(r.headers['x-test'], 'yes')
  t.equal(r.body.toString(), 'nope')
  const body = 'x'.repeat(100_000)
  const p = await get(`${url}/t.php?echo=1`, { method: 'POST', body })
  t.match(p.body.toString(), /^POST 100000 100000 [0-9a-f]{32}$/)
  const all = await Promise.all(Array.from({ length: 10 }, () => get(`${url}/t.php?sleep=10`)))
  t.same(all.map((x) => x.status), Array(10).fill(200))
})
