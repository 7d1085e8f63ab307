/**
 * The status page is a handler in front of the proxy, not a route: a backend's CGI local redirect
 * (RFC 3875 §6.2.2, `Location: /server-status` without a Status) can never reach it — even from
 * loopback, where access would be allowed. Local redirects are off by default (a 302 goes to the
 * client); when a route turns them on they are re-dispatched through the router, inside that route.
 */
import t from 'tap'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { scriptedAdapter } from '../helpers/adapters.js'
import { guardLeaks } from '../helpers/leaks.js'
import { fetchText, statusRig } from './harness.js'

/** An adapter whose backend answers `/go` with a local redirect to the status path. */
const redirector = scriptedAdapter('redirector', (ex, h, done) => {
  if (ex.path === '/go') { done(); h.onLocalRedirect?.('/server-status'); return }
  h.onHead(200, ['content-type', 'text/plain'], { resume () {} })
  h.onData(Buffer.from(`backend saw ${ex.url}`))
  done()
  h.onEnd()
})

t.test('custom adapter: onLocalRedirect("/server-status") lands on the backend, not the status page', async (t) => {
  guardLeaks(t)
  const rig = await statusRig(t, { adapters: [redirector], routes: [{ name: 'all', protocol: 'redirector', backends: ['127.0.0.1:9'], localRedirects: true }] })
  const direct = await fetchText(`${rig.url}/server-status?format=json`)
  t.equal(direct.status, 200, 'loopback may see the status page directly')
  const r = await fetchText(`${rig.url}/go`)
  t.equal(r.status, 200)
  t.equal(r.body, 'backend saw /server-status', 'the redirect went through the router to the backend')
  t.notMatch(r.body, /"routes"|<table|proxycore_/)
  const off = await statusRig(t, { adapters: [redirector], routes: [{ name: 'all', protocol: 'redirector', backends: ['127.0.0.1:9'] }] })
  const r302 = await fetch(`${off.url}/go`, { redirect: 'manual' })
  t.equal(r302.status, 302, 'off by default: the client gets a 302')
  t.equal(r302.headers.get('location'), '/server-status')
  await r302.arrayBuffer()
})

const PHP = '/usr/bin/php-cgi'

t.test('php-cgi over FastCGI: header("Location: /server-status", true, 200) never reaches the page', { skip: process.env.CI === 'true' || existsSync(PHP) ? false : 'php-cgi not installed' }, async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const root = mkdtempSync(join(tmpdir(), 'pc-status-php-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  // A 200 response code makes php-cgi send Location without Status: a CGI local redirect.
  writeFileSync(join(root, 'go.php'), '<?php header("Location: /server-status", true, 200);')
  writeFileSync(join(root, 'hop.php'), '<?php header("Location: /hello.php", true, 200);')
  writeFileSync(join(root, 'hello.php'), '<?php echo "hello from ", $_SERVER["SCRIPT_NAME"];')
  const rig = await statusRig(t, {
    spawns: { php: { binPath: PHP, socketName: '127.0.0.1:0', environment: { PHP_FCGI_CHILDREN: '0' }, stopTimeout: '2s' } },
    routes: [{ name: 'php', match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: root, localRedirects: true }],
  })
  const hop = await fetchText(`${rig.url}/hop.php`)
  t.equal(hop.body, 'hello from /hello.php', 'php-cgi local redirects are followed inside the proxy')
  const r = await fetchText(`${rig.url}/go.php`)
  t.equal(r.status, 404, 'the redirect target is outside the route: refused')
  t.match(r.body, /ERR_NO_ROUTE/)
  t.notMatch(r.body, /"routes"|<table|proxycore_/, 'no status data')
  t.equal((await fetchText(`${rig.url}/server-status?format=json`)).status, 200, 'while the page itself is mounted and allowed')
})
