/**
 * docs/guides/php.md, the `index: [index.php]` bullet, against real php-cgi spawned as FastCGI:
 * with a docroot route matching `^/(blog/?)?$`, `/blog` (a directory with index.php) is a 301 to
 * `/blog/` with the query kept, `/blog/` runs the index, and a directory without an index file is a
 * 404; with `^/(blog/)?$` instead, `/blog` matches no route (404 ERR_NO_ROUTE).
 */
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { havePeer, PHP_CGI, tempDir } from '../fastcgi/helpers/peers.js'

const INDEX = '<?php header("Content-Type: text/plain"); echo "index of ", $_SERVER["SCRIPT_NAME"], " q=", $_SERVER["QUERY_STRING"] ?? "", " via ", PHP_SAPI, "\\n";\n'

function site (t: Parameters<typeof tempDir>[0]): string {
  const www = tempDir(t, 'pc-doc-php-')
  writeFileSync(join(www, 'index.php'), INDEX)
  mkdirSync(join(www, 'blog'))
  writeFileSync(join(www, 'blog', 'index.php'), INDEX)
  mkdirSync(join(www, 'empty'))
  writeFileSync(join(www, 'empty', 'readme.txt'), 'no index here\n')
  return www
}

const spawns = { php: { binPath: PHP_CGI, socketName: '127.0.0.1:0', environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } }

t.test('php.md: index: [index.php] with regex ^/(blog/?)?$', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const www = site(t)
  const { url } = await proxyServer(t, {
    spawns,
    routes: [
      { name: 'home', match: { regex: '^/(blog/?)?$' }, protocol: 'fastcgi', spawn: 'php', docroot: www, index: ['index.php'] },
      { name: 'empty', match: { regex: '^/(empty/?)$' }, protocol: 'fastcgi', spawn: 'php', docroot: www, index: ['index.php'] },
    ],
  } as Parameters<typeof proxyServer>[1])

  const home = await get(`${url}/`)
  t.equal(home.status, 200, '/ runs the site index')
  t.match(home.body.toString(), /^index of \/index\.php q= via cgi-fcgi/)

  const bare = await get(`${url}/blog`)
  t.equal(bare.status, 301, '/blog is answered 301')
  t.equal(bare.headers.location, '/blog/', 'location: /blog/')

  const withQuery = await get(`${url}/blog?a=1`)
  t.equal(withQuery.status, 301, '/blog?a=1 is answered 301')
  t.equal(withQuery.headers.location, '/blog/?a=1', 'the query is kept')

  const slash = await get(`${url}/blog/?a=1`)
  t.equal(slash.status, 200, '/blog/ runs the index')
  t.equal(slash.body.toString(), 'index of /blog/index.php q=a=1 via cgi-fcgi\n', 'php-cgi (FastCGI) ran blog/index.php')

  t.equal((await get(`${url}/empty/`)).status, 404, 'a directory without an index file is a 404')
  t.equal((await get(`${url}/empty`)).status, 404, 'also without its trailing slash (no redirect to a directory that has no index)')
})

t.test('php.md: with ^/(blog/)?$ the route does not match /blog: 404 ERR_NO_ROUTE', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const www = site(t)
  const { url } = await proxyServer(t, {
    spawns,
    routes: [{ name: 'home', match: { regex: '^/(blog/)?$' }, protocol: 'fastcgi', spawn: 'php', docroot: www, index: ['index.php'] }],
  } as Parameters<typeof proxyServer>[1])
  const r = await get(`${url}/blog`)
  t.equal(r.status, 404)
  t.match(r.body.toString(), /ERR_NO_ROUTE/)
  t.equal((await get(`${url}/blog/`)).status, 200, '/blog/ still runs the index')
})
