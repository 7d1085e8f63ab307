/**
 * Bodyless responses through the CGI-family adapters with real peers (RFC 9110 §6.4.1, RFC 3875
 * §4.3.3): the answer to HEAD, a 204 and a 304 end at their head whatever Content-Length says,
 * stray body bytes are dropped, and the client connection stays usable. A `Status: 1xx` head is
 * refused (502 ERR_BAD_RESPONSE): it is not a final response.
 *
 * Every case sends the request under test and a GET on ONE keep-alive connection: the second
 * answer arriving intact proves the first one was framed right and the connection survived.
 */
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { proxyServer, rawRequest } from '../helpers/servers.js'
import { PHP_CGI, havePeer as haveFcgiPeer, startPhpCgi } from '../fastcgi/helpers/peers.js'
import { startUwsgi, uwsgiSkip } from '../scgi/uwsgi-peer.js'
import { cgiProxy, havePeer, tempDir, writeScripts } from './harness.js'

const SH = {
  'cl.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nContent-Length: 11\\r\\n\\r\\n'\n[ \"$REQUEST_METHOD\" = HEAD ] || printf 'hello world'\n",
  // A script that ignores the method: its body must not reach a HEAD client nor desync it.
  'always.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 11\\n\\nhello world'\n",
  'status.sh': `#!/bin/sh
case "$QUERY_STRING" in
  204) printf 'Status: 204 No Content\\nContent-Length: 11\\n\\n' ;;
  204body) printf 'Status: 204 No Content\\n\\nstray bytes' ;;
  304) printf 'Status: 304 Not Modified\\nETag: "e1"\\nContent-Length: 11\\n\\n' ;;
  100) printf 'Status: 100 Continue\\n\\nbody after 100' ;;
  103) printf 'Status: 103 Early Hints\\nLink: </a.css>; rel=preload\\n\\n' ;;
esac
`
}

const PHP = `<?php
$c = (int)($_SERVER['QUERY_STRING'] ?: '200');
if ($c !== 200) http_response_code($c);
header('Content-Type: text/plain');
header('Content-Length: 11');
echo 'hello world';
`

const WSGI = `def application(environ, start_response):
    q = environ.get('QUERY_STRING', '')
    if q == '304':
        start_response('304 Not Modified', [('ETag', '"e1"'), ('Content-Length', '11')])
        return []
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '11')])
    return [] if environ['REQUEST_METHOD'] == 'HEAD' else [b'hello world']
`

/** `first`, then a GET of `then` on the same connection (which closes after it): the raw bytes. */
function pipelined (port: number, first: string, then: string): Promise<string> {
  const [method, path] = first.split(' ')
  return rawRequest(port, `${method} ${path} HTTP/1.1\r\nHost: a\r\n\r\nGET ${then} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
}

/** Split raw output at each status line: [head, body] per response. */
function responses (raw: string): Array<{ head: string, body: string }> {
  return raw.split(/(?=HTTP\/1\.1 \d{3} )/).filter((s) => s !== '').map((r) => {
    const end = r.indexOf('\r\n\r\n')
    return { head: r.slice(0, end + 2), body: r.slice(end + 4) }
  })
}

/** HEAD with Content-Length and no body: head kept whole, nothing after it, connection reused. */
async function headThenGet (t: Test, port: number, path: string): Promise<void> {
  const raw = await pipelined(port, `HEAD ${path}`, path)
  const [head, get] = responses(raw)
  t.match(head?.head, /^HTTP\/1\.1 200 OK\r\n/, 'HEAD answered', { raw })
  t.match(head?.head, /\r\nContent-Length: 11\r\n/i, 'HEAD keeps the backend Content-Length (the GET body size)')
  t.equal(head?.body, '', 'no body after the HEAD head')
  t.match(get?.head, /^HTTP\/1\.1 200 OK\r\n/, 'the next request on the connection is answered')
  t.equal(get?.body, 'hello world', 'and framed right')
}

t.test('CGI (shell scripts over pipes)', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(join(dir, 'cgi'), SH)
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: join(dir, 'cgi'), match: { prefix: '/' } }])

  await t.test('HEAD with Content-Length and no body', (t) => headThenGet(t, p.port, '/cl.sh'))

  await t.test('HEAD to a script that sends its body anyway', async (t) => {
    const [head, get] = responses(await pipelined(p.port, 'HEAD /always.sh', '/cl.sh'))
    t.match(head?.head, /\r\nContent-Length: 11\r\n/i)
    t.equal(head?.body, '', 'body bytes dropped')
    t.equal(get?.body, 'hello world')
  })

  await t.test('204 with Content-Length: no Content-Length forwarded (RFC 9110 §8.6), no body', async (t) => {
    const [r, get] = responses(await pipelined(p.port, 'GET /status.sh?204', '/cl.sh'))
    t.match(r?.head, /^HTTP\/1\.1 204 /)
    t.notMatch(r?.head, /content-length/i)
    t.equal(r?.body, '')
    t.equal(get?.body, 'hello world')
  })

  await t.test('204 with stray body bytes: dropped', async (t) => {
    const [r, get] = responses(await pipelined(p.port, 'GET /status.sh?204body', '/cl.sh'))
    t.match(r?.head, /^HTTP\/1\.1 204 /)
    t.equal(r?.body, '')
    t.equal(get?.body, 'hello world')
  })

  await t.test('304 with Content-Length and no body', async (t) => {
    const [r, get] = responses(await pipelined(p.port, 'GET /status.sh?304', '/cl.sh'))
    t.match(r?.head, /^HTTP\/1\.1 304 /)
    t.match(r?.head, /\r\nContent-Length: 11\r\n/i, 'a 304 may carry the 200 length (RFC 9110 §8.6)')
    t.match(r?.head, /\r\nETag: "e1"\r\n/i)
    t.equal(r?.body, '')
    t.equal(get?.body, 'hello world')
  })

  for (const s of ['100', '103']) {
    await t.test(`Status: ${s} is not a final response: 502, the next request keeps its own answer`, async (t) => {
      const [r, get] = responses(await pipelined(p.port, `GET /status.sh?${s}`, '/cl.sh'))
      t.match(r?.head, /^HTTP\/1\.1 502 /)
      t.match(r?.body, /ERR_BAD_RESPONSE/)
      t.equal(get?.body, 'hello world')
    })
  }
})

t.test('php-cgi as CGI', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, { 's.php': PHP }, 0o644)
  const p = await cgiProxy(t, { php: { binPath: PHP_CGI } }, [
    { protocol: 'cgi', spawn: 'php', docroot: dir, match: { extension: '.php' }, params: { REDIRECT_STATUS: '200' } }
  ])
  await t.test('HEAD: php sends the head with Content-Length and no body', (t) => headThenGet(t, p.port, '/s.php'))
  await t.test('304 with php\'s body: body dropped', async (t) => {
    const [r, get] = responses(await pipelined(p.port, 'GET /s.php?304', '/s.php'))
    t.match(r?.head, /^HTTP\/1\.1 304 /)
    t.equal(r?.body, '')
    t.equal(get?.body, 'hello world')
  })
  await t.test('http_response_code(103): 502', async (t) => {
    const [r, get] = responses(await pipelined(p.port, 'GET /s.php?103', '/s.php'))
    t.match(r?.head, /^HTTP\/1\.1 502 /)
    t.equal(get?.body, 'hello world')
  })
})

t.test('php-cgi as FastCGI', async (t) => {
  if (!haveFcgiPeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t)
  writeFileSync(join(dir, 's.php'), PHP)
  const php = await startPhpCgi(t, dir, 2)
  const { port } = await proxyServer(t, {
    routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${php.socketPath}`], docroot: dir }]
  })
  await t.test('HEAD: php sends the head with Content-Length and no body', (t) => headThenGet(t, port, '/s.php'))
  await t.test('204 with php\'s body: no Content-Length, body dropped', async (t) => {
    const [r, get] = responses(await pipelined(port, 'GET /s.php?204', '/s.php'))
    t.match(r?.head, /^HTTP\/1\.1 204 /)
    t.notMatch(r?.head, /content-length/i)
    t.equal(r?.body, '')
    t.equal(get?.body, 'hello world')
  })
  await t.test('http_response_code(103): 502', async (t) => {
    const [r, get] = responses(await pipelined(port, 'GET /s.php?103', '/s.php'))
    t.match(r?.head, /^HTTP\/1\.1 502 /)
    t.match(r?.body, /ERR_BAD_RESPONSE/)
    t.equal(get?.body, 'hello world')
  })
})

t.test('uWSGI as SCGI', { skip: uwsgiSkip() }, async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  const app = join(dir, 'app.py')
  writeFileSync(app, WSGI)
  const peer = await startUwsgi('scgi', app)
  t.teardown(() => peer.stop())
  const { port } = await proxyServer(t, {
    routes: [{ match: { prefix: '/' }, protocol: 'scgi', backends: [`unix:${peer.socketPath}`], scriptFilename: app }]
  } as Parameters<typeof proxyServer>[1])
  await t.test('HEAD with Content-Length and no body', (t) => headThenGet(t, port, '/x'))
  await t.test('304 with Content-Length and no body', async (t) => {
    const [r, get] = responses(await pipelined(port, 'GET /x?304', '/x'))
    t.match(r?.head, /^HTTP\/1\.1 304 /)
    t.match(r?.head, /\r\nContent-Length: 11\r\n/i)
    t.equal(r?.body, '')
    t.equal(get?.body, 'hello world')
  })
})
