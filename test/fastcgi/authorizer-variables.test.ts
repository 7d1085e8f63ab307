/**
 * What an authorizer's `Variable-*` headers may do (src/core/authorizer.ts AUTHORIZER_NAME,
 * mergeAuthorizerVariables), and what the authorizer step does to an `http` route's paths. Real
 * php-cgi is the authorizer (FCGI_ROLE=AUTHORIZER); the responders are a shell CGI script that
 * prints its whole process environment, php-fpm (which reads PHP_VALUE / PHP_ADMIN_VALUE from the
 * FastCGI params) and a node:http upstream.
 */
import t from 'tap'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { mergeAuthorizerVariables } from '../../src/core/authorizer.js'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, get, proxyServer, rawRequest } from '../helpers/servers.js'
import { PHP_CGI, PHP_FPM, havePeer, startPhpFpm, tempDir } from './helpers/peers.js'

/** Every name the authorizer tries, as sent (`Variable-X-User-Id` is X_USER_ID). */
const SENT: Record<string, string> = {
  // allowed
  'REMOTE_USER': 'alice',
  'AUTH_TYPE': 'Bearer',
  'AUTH_METHOD': 'database lookup',
  'X-User-Id': '42',
  'X_TENANT': 'from-authorizer',
  // outside the allow-list: loader, shell, interpreter, spawn environment
  'PATH': '/tmp/evil-bin',
  'LD_PRELOAD': '/nonexistent/evil.so',
  'GIT_PROJECT_ROOT': '/',
  'PHP_ADMIN_VALUE': 'auto_prepend_file=EVIL',
  'PHP_VALUE': 'auto_prepend_file=EVIL',
  'PERL5OPT': '-Mevil',
  'USER_ROLE': 'admin',
  // meta-variables the server computes
  'HTTP_PROXY': 'http://127.0.0.1:9/',
  'SCRIPT_FILENAME': '/bin/sh',
  'Script-Name': '/x',
  'DOCUMENT_ROOT': '/',
  'REMOTE_HOST': 'spoofed',
  'REMOTE_ADDR': '6.6.6.6',
  'REDIRECT_STATUS': '1',
  'HTTPS': 'on',
  'CONTENT_LENGTH': '99',
}

const AUTH_PHP = (extra: string): string => `<?php
if (getenv('FCGI_ROLE') !== 'AUTHORIZER') { http_response_code(500); echo 'not called as authorizer'; exit; }
if (strpos($_SERVER['REQUEST_URI'], 'slow') !== false) usleep(3000000);
if (strpos($_SERVER['REQUEST_URI'], 'deny') !== false) { http_response_code(403); echo 'denied ', $_SERVER['REQUEST_URI']; exit; }
header('X-Seen-Uri: ' . $_SERVER['REQUEST_URI']);
${extra}
foreach (json_decode(${JSON.stringify(JSON.stringify(SENT))}, true) as $k => $v) header("Variable-$k: $v", false);
`

function parseEnv (text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of text.split('\n')) { const i = line.indexOf('='); if (i > 0) out[line.slice(0, i)] = line.slice(i + 1) }
  return out
}

t.test('mergeAuthorizerVariables: allow-list, never over an existing variable (any case)', async (t) => {
  const env: Record<string, string> = { REMOTE_ADDR: '127.0.0.1', remote_user: 'operator' }
  mergeAuthorizerVariables(env, { REMOTE_USER: 'alice', AUTH_TYPE: 'Basic', X_ID: '1', LD_PRELOAD: 'x', PATH: '/x', REMOTE_ADDR: '6.6.6.6' })
  t.same(env, { REMOTE_ADDR: '127.0.0.1', remote_user: 'operator', AUTH_TYPE: 'Basic', X_ID: '1' })
})

if (havePeer(t, PHP_CGI)) {
  guardLeaks(t, { timeoutMs: 10_000 })

  t.test('a CGI responder gets only allowed, new names; operator params and meta-variables win', async (t) => {
    const root = tempDir(t, 'pc-authz-vars-')
    chmodSync(root, 0o755)
    writeFileSync(join(root, 'auth.php'), AUTH_PHP(''))
    const env = join(root, 'env.sh')
    writeFileSync(env, '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\n"\n/usr/bin/env | LC_ALL=C /usr/bin/sort\n')
    chmodSync(env, 0o755)
    const authorizer = { spawn: 'auth', scriptFilename: join(root, 'auth.php') }
    const { url } = await proxyServer(t, {
      spawns: {
        // Each route has its own authorizer pool, and each keeps a connection (a php-cgi child).
        auth: { binPath: `${PHP_CGI} -n`, socketName: join(root, 'auth.sock'), environment: { PHP_FCGI_CHILDREN: '2' }, stopTimeout: '2s' },
        cgi: { socketType: 'pipe', copyEnvironment: ['PATH'], environment: { GIT_PROJECT_ROOT: '/srv/git' }, stopTimeout: 500 },
      },
      routes: [
        { match: { prefix: '/op/' }, protocol: 'cgi', spawn: 'cgi', docroot: root, stripPrefix: true, params: { REMOTE_USER: 'fixed-by-operator', x_tenant: 'acme' }, authorizer },
        { match: { prefix: '/cgi/' }, protocol: 'cgi', spawn: 'cgi', docroot: root, stripPrefix: true, authorizer },
      ],
    })
    const r = await get(`${url}/cgi/env.sh/pi`)
    t.equal(r.status, 200, r.body.toString())
    const e = parseEnv(r.body.toString())
    t.match(e, { REMOTE_USER: 'alice', AUTH_TYPE: 'Bearer', AUTH_METHOD: 'database lookup', X_USER_ID: '42', X_TENANT: 'from-authorizer' }, 'REMOTE_USER, AUTH_TYPE, AUTH* and X_* pass')
    t.equal(e.PATH, process.env.PATH, 'PATH is the spawn\'s')
    t.equal(e.GIT_PROJECT_ROOT, '/srv/git', 'the spawn environment is the operator\'s')
    for (const k of ['LD_PRELOAD', 'PHP_ADMIN_VALUE', 'PHP_VALUE', 'PERL5OPT', 'USER_ROLE', 'HTTP_PROXY', 'REDIRECT_STATUS', 'HTTPS', 'CONTENT_LENGTH', 'Script-Name']) {
      t.notOk(k in e, `${k} is refused`)
    }
    t.match(e, { SCRIPT_FILENAME: join(root, 'env.sh'), SCRIPT_NAME: '/cgi/env.sh', DOCUMENT_ROOT: root, REMOTE_HOST: '127.0.0.1', REMOTE_ADDR: '127.0.0.1', PATH_INFO: '/pi' }, 'meta-variables are the server\'s')

    const opr = await get(`${url}/op/env.sh`)
    t.equal(opr.status, 200, opr.body.toString())
    const op = parseEnv(opr.body.toString())
    t.equal(op.REMOTE_USER, 'fixed-by-operator', 'route params win over the authorizer')
    t.equal(op.x_tenant, 'acme', 'in any case')
    t.notOk('X_TENANT' in op, 'no upper-case twin added next to the operator\'s variable')
    t.equal(op.X_USER_ID, '42')
  })

  t.test('php-fpm: PHP_VALUE / PHP_ADMIN_VALUE from an authorizer never reach the pool', { skip: !havePeer(t, PHP_FPM) }, async (t) => {
    const root = tempDir(t, 'pc-authz-fpm-')
    chmodSync(root, 0o755)
    writeFileSync(join(root, 'auth.php'), AUTH_PHP(`$GLOBALS['SENT_EVIL'] = true;`).replace(/EVIL/g, join(root, 'evil.php')))
    writeFileSync(join(root, 'evil.php'), '<?php echo "EVIL-PREPENDED ";')
    writeFileSync(join(root, 'app.php'), '<?php echo "app user=", $_SERVER["REMOTE_USER"] ?? "-", " id=", $_SERVER["X_USER_ID"] ?? "-";')
    const fpm = await startPhpFpm(t, root, 1)
    const { url } = await proxyServer(t, {
      spawns: { auth: { binPath: `${PHP_CGI} -n`, socketName: join(root, 'auth.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } },
      routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${fpm.socketPath}`], docroot: root, authorizer: { spawn: 'auth', scriptFilename: join(root, 'auth.php') } }],
    })
    const r = await get(`${url}/app.php`)
    t.equal(r.status, 200, r.body.toString())
    t.equal(r.body.toString(), 'app user=alice id=42', 'no auto_prepend_file from the authorizer')
  })

  t.test('an http route with an authorizer forwards what it forwards without one', async (t) => {
    const root = tempDir(t, 'pc-authz-http-')
    chmodSync(root, 0o755)
    writeFileSync(join(root, 'auth.php'), AUTH_PHP(''))
    const up = await backend(t, (req, res) => res.end(`upstream got ${req.url}`))
    const authorizer = { spawn: 'auth', scriptFilename: join(root, 'auth.php') }
    const { port } = await proxyServer(t, {
      spawns: { auth: { binPath: `${PHP_CGI} -n`, socketName: join(root, 'auth.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } },
      routes: [
        { match: { prefix: '/api/' }, protocol: 'http', backends: [up.address], authorizer },
        { match: { prefix: '/plain/' }, protocol: 'http', backends: [up.address] },
      ],
    })
    // Literal bytes: an HTTP client would normalise `/x/../api/y` before sending it.
    const send = async (target: string): Promise<{ status: number, body: string }> => {
      const out = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
      return { status: Number(out.slice(9, 12)), body: out.slice(out.indexOf('\r\n\r\n') + 4) }
    }
    for (const path of ['/api/a%2Fb', '/x/../api/y', '/api/a/./b', '/api//c', '/api/%C3%A9']) {
      const plain = await send(path.replace('/api/', '/plain/'))
      const authz = await send(path)
      t.equal(plain.status, 200, `${path} without an authorizer`)
      t.equal(authz.status, plain.status, `${path}: same status with an authorizer (${authz.body})`)
      t.equal(authz.body, plain.body.replace('/plain/', '/api/'), `${path}: same upstream request`)
    }
    const denied = await send('/api/deny%2Fme')
    t.equal(denied.status, 403, 'the authorizer\'s verdict decides')
    t.match(denied.body, /denied \/api\/deny%2Fme/)
  })

  t.test('an authorizer that does not answer in time is a 504, not the client leaving', async (t) => {
    const root = tempDir(t, 'pc-authz-slow-')
    chmodSync(root, 0o755)
    writeFileSync(join(root, 'auth.php'), AUTH_PHP(''))
    const up = await backend(t, (req, res) => res.end('must not be reached'))
    const { url } = await proxyServer(t, {
      spawns: { auth: { binPath: `${PHP_CGI} -n`, socketName: join(root, 'auth.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '1s' } },
      routes: [{ match: { prefix: '/api/' }, protocol: 'http', backends: [up.address], authorizer: { spawn: 'auth', scriptFilename: join(root, 'auth.php'), timeout: '300ms' } }],
    })
    const r = await get(`${url}/api/slow`)
    t.equal(r.status, 504, r.body.toString())
    t.match(r.body.toString(), /ERR_HEADERS_TIMEOUT/)
  })
}
