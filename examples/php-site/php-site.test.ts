/**
 * examples/php-site through createProxy, configured by its own proxycore.yaml: php-cgi spawned
 * over FastCGI, the home page (index), a form POST, a PATH_INFO page, and the uploaded
 * `photo.jpg` with PHP inside that must never run, not even as `/uploads/photo.jpg/x.php`.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { fileURLToPath } from 'node:url'
import { collectStatus, createProxy, loadConfigOrThrow } from '../../src/index.js'
import { guardLeaks } from '../../test/helpers/leaks.js'
import { closeServer, get, listen } from '../../test/helpers/servers.js'
import { captureLogger, havePeer } from '../../test/cgi/harness.js'

const PHP_CGI = '/usr/bin/php-cgi'
const CONFIG = fileURLToPath(new URL('./proxycore.yaml', import.meta.url))

t.test('php-site: php-cgi spawned by proxycore', async (t) => {
  guardLeaks(t)
  if (!havePeer(t, PHP_CGI)) return
  const { config } = await loadConfigOrThrow(CONFIG, { env: { PHP_CGI } })
  const { listen: _listen, status: _status, ...rest } = config
  const { logger, lines } = captureLogger()
  const proxy = await createProxy({ ...rest, logger })
  t.teardown(() => proxy.close(2000))
  const server = createServer(proxy.handler)
  const port = await listen(server)
  t.teardown(() => closeServer(server))
  const url = `http://127.0.0.1:${port}`
  /** Requests that reached php-cgi, from the route's backend counters. */
  const phpRequests = (): number => collectStatus(proxy).routes.reduce((n, r) => n + r.backends.reduce((m, b) => m + b.requests, 0), 0)

  const home = await get(`${url}/`)
  t.equal(home.status, 200, 'GET / answers through the index')
  t.match(home.body.toString(), /via cgi-fcgi/, 'php-cgi over FastCGI served it')
  t.match(home.body.toString(), /SCRIPT_NAME \/index\.php/)

  const form = await get(`${url}/form.php`)
  t.equal(form.status, 200)
  t.match(form.body.toString(), /<form method="post"/, 'GET shows the form')
  const posted = await get(`${url}/form.php`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'name=Ada+%3Cb%3E',
  })
  t.equal(posted.status, 200)
  t.equal(posted.body.toString(), '<p>Hello, Ada &lt;b&gt;!</p>\n', 'POST body reached PHP; output escaped')

  const page = await get(`${url}/page.php/hello/world?x=1`)
  t.equal(page.status, 200)
  t.equal(page.body.toString(), 'SCRIPT_NAME=/page.php\nPATH_INFO=/hello/world\nQUERY_STRING=x=1\n')

  const before = phpRequests()
  t.ok(before >= 4, `${before} requests reached php-cgi so far`)
  for (const path of ['/uploads/photo.jpg/x.php', '/uploads/photo.jpg/x.php/more', '/uploads/photo.jpg', '/uploads/', '/uploads/photo.jpg/']) {
    const r = await get(`${url}${path}`)
    t.ok(r.status === 403 || r.status === 404, `${path} -> ${r.status}`)
    t.notMatch(r.body.toString(), /EXECUTED|<\?php/, `${path}: photo.jpg neither ran nor leaked`)
  }
  t.equal((await get(`${url}/uploads/photo.jpg/x.php`)).status, 403, 'the PATH_INFO trick is a 403 (ERR_SCRIPT_FORBIDDEN)')
  t.equal(phpRequests(), before, 'none of those reached php-cgi')
  t.ok(lines.some((l) => l.obj.code === 'ERR_SCRIPT_FORBIDDEN' && l.obj.url === '/uploads/photo.jpg/x.php'), 'the refusal is logged with its code')

  t.equal((await get(`${url}/missing.php`)).status, 404)
  const spawn = proxy.spawns?.status().find((s) => s.name === 'php')
  t.equal(spawn?.state, 'running')
  // Recycling is proxycore's (maxRequests): php-cgi got PHP_FCGI_MAX_REQUESTS=0, so it never exits by itself.
  const pid = spawn?.processes.find((p) => p.state === 'ready')?.pid
  t.ok(typeof pid === 'number', 'php-cgi pid')
  const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')
  t.ok(environ.includes('PHP_FCGI_CHILDREN=4'), 'PHP_FCGI_CHILDREN from the config')
  t.ok(environ.includes('PHP_FCGI_MAX_REQUESTS=0'), 'PHP_FCGI_MAX_REQUESTS=0 set by the spawn manager')
})
