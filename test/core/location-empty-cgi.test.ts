/**
 * An empty `Location:` in a CGI-family response head (CGI pipe, FastCGI) is an invalid response:
 * RFC 3875 §6.3.2 allows a Location only as an absolute URI (fragment-URI) or a local path
 * (local-pathquery, `/…`), and an empty value is neither. 502 ERR_BAD_RESPONSE_HEADER, logged,
 * never a 302 pointing nowhere (a browser would take it for the same URL, and loop).
 * An HTTP backend's empty Location passes as is: RFC 9110 §10.2.2 makes Location a
 * URI-reference, and the empty string is one (the same resource); nginx passes it too.
 */
import t from 'tap'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'
import { captureLogger, havePeer, scriptsProxy, tempDir } from '../cgi/harness.js'

const PHP = '/usr/bin/php-cgi'
guardLeaks(t, { timeoutMs: 15_000 })

t.test('CGI (sh): an empty Location is 502 ERR_BAD_RESPONSE_HEADER; a real one still redirects', async (t) => {
  const p = await scriptsProxy(t, {
    'empty.sh': '#!/bin/sh\nprintf "Location:\\r\\n\\r\\n"\n',
    'blank.sh': '#!/bin/sh\nprintf "Status: 302 Found\\r\\nContent-Type: text/plain\\r\\nLocation:   \\r\\n\\r\\nmoved"\n',
    'good.sh': '#!/bin/sh\nprintf "Location: http://example.com/x\\r\\n\\r\\n"\n',
  }, {})
  for (const name of ['empty.sh', 'blank.sh']) {
    const r = await get(`${p.url}/c/${name}`)
    t.equal(r.status, 502, `${name}: 502`)
    t.equal(r.headers.location, undefined, `${name}: no Location to the client`)
  }
  const logged = p.lines.filter((l) => l.obj.code === 'ERR_BAD_RESPONSE_HEADER')
  t.equal(logged.length, 2, 'each logged once')
  t.match(logged[0]?.msg ?? '', /Location/)
  const ok = await get(`${p.url}/c/good.sh`)
  t.equal(ok.status, 302)
  t.equal(ok.headers.location, 'http://example.com/x')
})

t.test('FastCGI (php-cgi): header("Location: ") is 502 ERR_BAD_RESPONSE_HEADER', async (t) => {
  if (!havePeer(t, PHP)) return
  const root = tempDir(t)
  writeFileSync(join(root, 'empty.php'), '<?php header("Location: "); echo "body";')
  writeFileSync(join(root, 'good.php'), '<?php header("Location: /elsewhere"); echo "body";')
  const { logger, lines } = captureLogger()
  const { url } = await proxyServer(t, {
    logger,
    spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '0' }, stopTimeout: '2s' } },
    routes: [{ match: { prefix: '/' }, protocol: 'fastcgi', spawn: 'php', docroot: root, scriptExtensions: ['.php'] }],
  })
  const r = await get(`${url}/empty.php`)
  t.equal(r.status, 502)
  t.equal(r.headers.location, undefined)
  t.equal(lines.filter((l) => l.obj.code === 'ERR_BAD_RESPONSE_HEADER').length, 1, 'logged once')
  const ok = await get(`${url}/good.php`)
  t.equal(ok.status, 302, 'a local path still redirects')
  t.equal(ok.headers.location, '/elsewhere')
})

t.test('HTTP backend: an empty Location is passed as is (a valid URI-reference)', async (t) => {
  const b = await backend(t, (_req, res) => { res.writeHead(302, { location: '' }); res.end('x') })
  for (const route of [{}, { match: { prefix: '/app/' }, stripPrefix: true }]) {
    const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [b.address], ...route }] })
    const r = await get(`${url}/app/x`)
    t.equal(r.status, 302)
    t.equal(r.headers.location, '', `passed empty (${JSON.stringify(route)})`)
  }
})
