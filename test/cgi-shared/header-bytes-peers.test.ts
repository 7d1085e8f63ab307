/**
 * Header bytes 0x80-0xFF cross the CGI family byte-exact, both ways (RFC 9110 §5.5 obs-text), as
 * nginx and lighttpd pass them: a request header's bytes reach the backend's HTTP_* variable
 * unchanged (valid UTF-8 or not), and a response header's bytes reach the client unchanged.
 * Real peers: a sh CGI script (fork server; header-bytes-perl.test.ts runs this file again with the
 * Perl one), php-cgi over FastCGI, uWSGI in SCGI mode. Each answers the hex of the HTTP_X_T it got
 * and sends `X-T: <0xE9>`; a `launcher: direct` CGI shows the documented exception.
 * docs/protocols/cgi.md "Header bytes".
 */
import t from 'tap'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { createProxy } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { closeServer, listen, rawRequest } from '../helpers/servers.js'
import { tempDir } from '../cgi/harness.js'
import { PHP_CGI, havePeer } from '../fastcgi/helpers/peers.js'
import { startUwsgi, uwsgiSkip } from '../scgi/uwsgi-peer.js'

const skip = uwsgiSkip()

/** Request header values (as bytes) and what the backend must see: the same bytes. */
const VALUES: Array<[string, number[]]> = [
  ['Latin-1 é (not UTF-8)', [0xe9]],
  ['UTF-8 é', [0xc3, 0xa9]],
  ['UTF-8 then a stray byte', [0x61, 0xc3, 0xa9, 0xe9, 0x20, 0xff, 0x62]],
  ['a truncated UTF-8 sequence', [0xe2, 0x82]],
  ['UTF-8 astral char then a lone continuation byte', [0xf0, 0x9f, 0x92, 0xa9, 0xa9]],
  ['all of 0x80-0xFF', Array.from({ length: 128 }, (_, i) => 0x80 + i)],
  ['plain ASCII', [0x76, 0x31]],
]

t.test('header bytes 0x80-0xFF reach CGI, FastCGI and SCGI backends and come back byte-exact', { skip }, async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tempDir(t, 'pc-hbytes-')
  const www = join(dir, 'www')
  mkdirSync(join(www, 'cgi'), { recursive: true })
  writeFileSync(join(www, 'cgi', 'h.sh'), "#!/bin/sh\nprintf 'Content-Type: text/plain\\nX-T: \\351\\n\\n'\nprintf %s \"$HTTP_X_T\" | od -An -tx1 | tr -d ' \\n'\n")
  chmodSync(join(www, 'cgi', 'h.sh'), 0o755)
  writeFileSync(join(www, 'cgi', 'e.sh'), "#!/bin/sh\nprintf 'Status: 204 Caf\\351\\nX-T: \\351\\nX-U: \\303\\251\\n\\n'\n")
  chmodSync(join(www, 'cgi', 'e.sh'), 0o755)
  writeFileSync(join(www, 'e.php'), '<?php header("X-T: \\xe9"); http_response_code(204);')
  writeFileSync(join(www, 'h.php'), '<?php header("X-T: \\xe9"); echo bin2hex($_SERVER["HTTP_X_T"] ?? "");')
  const app = join(dir, 'app.py')
  writeFileSync(app, [
    'def application(environ, start_response):',
    "    got = environ.get('HTTP_X_T', '').encode('latin1').hex()",
    "    start_response('200 OK', [('Content-Type', 'text/plain'), ('X-T', '\\xe9')])",
    '    return [got.encode()]',
    '',
  ].join('\n'))
  chmodSync(dir, 0o755)
  const peer = await startUwsgi('scgi', app)
  t.teardown(() => peer.stop())
  const proxy = await createProxy({
    spawns: {
      cgi: { socketType: 'pipe', copyEnvironment: ['PATH'], stopTimeout: 500 },
      direct: { socketType: 'pipe', launcher: 'direct', copyEnvironment: ['PATH'], stopTimeout: 500 },
      fcgi: { binPath: `${PHP_CGI} -n`, socketName: join(dir, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' },
    },
    routes: [
      { match: { prefix: '/cgi/' }, protocol: 'cgi', spawn: 'cgi', docroot: join(www, 'cgi'), stripPrefix: true },
      { match: { prefix: '/direct/' }, protocol: 'cgi', spawn: 'direct', docroot: join(www, 'cgi'), stripPrefix: true },
      { match: { prefix: '/scgi/' }, protocol: 'scgi', backends: [`unix:${peer.socketPath}`], scriptFilename: app },
      { match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'fcgi', docroot: www },
    ],
  })
  const server = createServer(proxy.handler)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const port = await listen(server)

  for (const path of ['/cgi/h.sh', '/h.php', '/scgi/h']) {
    for (const [what, bytes] of VALUES) {
      const req = Buffer.concat([
        Buffer.from(`GET ${path} HTTP/1.0\r\nHost: h.example\r\nX-T: `, 'latin1'),
        Buffer.from(bytes),
        Buffer.from('\r\n\r\n', 'latin1'),
      ])
      const res = await rawRequest(port, req)
      const at = res.indexOf('\r\n\r\n')
      t.match(res, /^HTTP\/1\.[01] 200 /, `${path} ${what}: 200`)
      t.equal(res.slice(at + 4), Buffer.from(bytes).toString('hex'), `${path} ${what}: HTTP_X_T has the bytes as sent`)
      const head = Buffer.from(res.slice(0, at), 'latin1')
      t.ok(head.includes(Buffer.from('\r\nX-T: \xe9\r\n', 'latin1')), `${path}: the response header X-T is the one byte E9 (${JSON.stringify(res.slice(0, at))})`)
    }
  }

  // No body (204) and HEAD: the head goes out alone, and must keep its bytes all the same.
  for (const [method, path] of [['GET', '/cgi/e.sh'], ['GET', '/e.php'], ['HEAD', '/cgi/h.sh'], ['HEAD', '/h.php'], ['HEAD', '/scgi/h']]) {
    const res = await rawRequest(port, `${method} ${path} HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n`)
    const head = res.slice(0, res.indexOf('\r\n\r\n'))
    t.match(head, /^HTTP\/1\.1 20[04] /, `${method} ${path}: answered`)
    t.ok(head.includes('\r\nX-T: \xe9\r\n'), `${method} ${path}: the response header X-T is the one byte E9 (${JSON.stringify(head)})`)
    if (path === '/cgi/e.sh') {
      t.match(head, /^HTTP\/1\.1 204 Caf\xe9\r\n/, 'a reason phrase keeps its byte E9 too')
      t.ok(head.includes('\r\nX-U: \xc3\xa9\r\n'), 'a UTF-8 response header value keeps its two bytes')
    }
  }

  // The documented exception: Node's spawn() takes the environment as text only, so a byte that is
  // not UTF-8 reaches a `launcher: direct` script as U+FFFD; valid UTF-8 still arrives as sent.
  const direct = async (bytes: number[]): Promise<string> => {
    const res = await rawRequest(port, Buffer.concat([Buffer.from('GET /direct/h.sh HTTP/1.0\r\nHost: h\r\nX-T: ', 'latin1'), Buffer.from(bytes), Buffer.from('\r\n\r\n', 'latin1')]))
    return res.slice(res.indexOf('\r\n\r\n') + 4)
  }
  t.equal(await direct([0x61, 0xe9]), '61efbfbd', 'launcher direct: a byte that is not UTF-8 arrives as U+FFFD')
  t.equal(await direct([0xc3, 0xa9]), 'c3a9', 'launcher direct: UTF-8 arrives as sent')
})

