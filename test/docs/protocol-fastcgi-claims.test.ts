/**
 * docs/protocols/fastcgi.md walked as a new user: its claims about options, discovery, record
 * limits, STDERR, the authorizer's variables, worker recycling and Content-Length framing checked
 * against real php-cgi, php-fpm and fcgiwrap; multiplexing against FAKE-FCGI (no installed
 * FastCGI server multiplexes); option errors through `proxycore check`. What test/fastcgi/*
 * already asserts is not repeated here. A missing peer skips locally and fails under CI=true.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { runCli } from '../cli/run.js'
import { get, proxyServer } from '../helpers/servers.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS, type FastcgiOptions } from '../../src/protocols/fastcgi/options.js'
import { makeExchange, record, testContext, unixEndpoint, type ExchangeInit, type Recorded } from '../fastcgi/helpers/harness.js'
import { FCGIWRAP, PHP_CGI, PHP_FPM, havePeer, startFcgiwrap, startPhpCgi, startPhpFpm, tempDir } from '../fastcgi/helpers/peers.js'
import { fakeClient, type FakeRequest } from '../fastcgi/helpers/fake.js'
import { pairs, rec } from '../fastcgi/helpers/records.js'

type Tap = Test

const md5 = (b: Buffer | string): string => createHash('md5').update(b).digest('hex')

/** A client on `socketPath` with `opts` over the defaults; `ask` runs `script` for one exchange. */
function clientOn (t: Tap, socketPath: string, script: string, opts: Partial<FastcgiOptions> = {}) {
  const ctx = testContext()
  const client = new FastcgiClient(unixEndpoint(socketPath), { ...FASTCGI_DEFAULTS, ...opts }, ctx)
  t.teardown(() => client.destroy())
  const ask = (init: ExchangeInit = {}): Promise<Recorded> => {
    const r = record()
    client.dispatch(makeExchange({ ...init, env: { SCRIPT_FILENAME: script, ...init.env } }), r.handler)
    return r.done
  }
  return { ctx, client, ask }
}

// Prints every HTTP_X_* variable as name=length:md5, then the body's length and md5.
const ENV_PHP = `<?php
header('Content-Type: text/plain');
$out = [];
foreach ($_SERVER as $k => $v) if (strncmp($k, 'HTTP_X_', 7) === 0) $out[] = $k . '=' . strlen($v) . ':' . md5($v);
sort($out);
$in = file_get_contents('php://input');
echo implode("\\n", $out), "\\nbody=", strlen($in), ':', md5($in);
`

t.test('Options: keepConn, idleTimeout, discovery against php-cgi', async (t) => {
  if (!havePeer(t, PHP_CGI)) return

  t.test('keepConn: false: a connection per request, none kept', async (t) => {
    guardLeaks(t)
    const dir = tempDir(t, 'pc-fcgiclaims-')
    writeFileSync(join(dir, 'e.php'), ENV_PHP)
    const peer = await startPhpCgi(t, dir, 1)
    const { ctx, client, ask } = clientOn(t, peer.socketPath, join(dir, 'e.php'), { keepConn: false })
    for (let i = 0; i < 3; i++) {
      const r = await ask()
      t.equal(r.status, 200, r.error?.message ?? peer.log())
      t.ok(await waitFor(() => client.connections === 0), `request ${i + 1}: its connection is closed, not kept`)
    }
    t.equal(ctx.connects, 1 + 3, 'discovery + one connection per request')
  })

  t.test('idleTimeout: an idle kept-alive connection closes after it, not before', async (t) => {
    guardLeaks(t)
    const dir = tempDir(t, 'pc-fcgiclaims-')
    writeFileSync(join(dir, 'e.php'), ENV_PHP)
    const peer = await startPhpCgi(t, dir, 1)
    const idleTimeout = 300
    const { ctx, client, ask } = clientOn(t, peer.socketPath, join(dir, 'e.php'), { idleTimeout })
    t.equal((await ask()).status, 200)
    const idleSince = Date.now()
    t.equal(client.connections, 1, 'kept alive after the answer')
    t.ok(await waitFor(() => client.connections === 0, idleTimeout * 10), 'closed once idle')
    const idleMs = Date.now() - idleSince
    t.ok(idleMs >= idleTimeout - 5, `closed after ${idleMs} ms idle (idleTimeout ${idleTimeout})`)
    t.equal((await ask()).status, 200, 'the php-cgi worker it held takes the next connection')
    t.equal(ctx.connects, 3, 'discovery, the first connection, a new one after the idle close')
  })

  t.test('discovery: false: no FCGI_GET_VALUES connection, the limits stay unknown', async (t) => {
    guardLeaks(t)
    const dir = tempDir(t, 'pc-fcgiclaims-')
    writeFileSync(join(dir, 'e.php'), ENV_PHP)
    const peer = await startPhpCgi(t, dir, 1)
    const { ctx, client, ask } = clientOn(t, peer.socketPath, join(dir, 'e.php'), { discovery: false })
    t.equal((await ask()).status, 200)
    t.equal(ctx.connects, 1, 'only the request connection')
    t.same(client.backendValues, { maxConns: null, maxReqs: null, mpxsConns: false, answered: false })
  })
})

t.test('Discovery: what php-fpm and fcgiwrap answer to FCGI_GET_VALUES', async (t) => {
  t.test('php-fpm answers, without usable limits', async (t) => {
    if (!havePeer(t, PHP_FPM)) return
    guardLeaks(t)
    const dir = tempDir(t, 'pc-fcgiclaims-')
    writeFileSync(join(dir, 'e.php'), ENV_PHP)
    const fpm = await startPhpFpm(t, dir, 1)
    const { client, ask } = clientOn(t, fpm.socketPath, join(dir, 'e.php'))
    const r = await ask()
    t.equal(r.status, 200, r.error?.message ?? 'php-fpm answers')
    t.same(client.backendValues, { maxConns: null, maxReqs: null, mpxsConns: false, answered: true })
  })

  // AC-79
  t.test('fcgiwrap does not answer: the first request waits discoveryTimeout', async (t) => {
    if (!havePeer(t, FCGIWRAP)) return
    guardLeaks(t)
    const dir = tempDir(t, 'pc-fcgiclaims-')
    const script = join(dir, 'ok.sh')
    writeFileSync(script, '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nok"\n')
    chmodSync(script, 0o755)
    const wrap = await startFcgiwrap(t, dir, 1)
    const discoveryTimeout = 200
    const { client, ask } = clientOn(t, wrap.socketPath, script, { discoveryTimeout })
    const at = Date.now()
    const r = await ask()
    const ms = Date.now() - at
    t.equal(r.status, 200, r.error?.message ?? wrap.log())
    t.same(client.backendValues, { maxConns: null, maxReqs: null, mpxsConns: false, answered: false })
    t.ok(ms >= discoveryTimeout - 5, `first answer after ${ms} ms (discoveryTimeout ${discoveryTimeout})`)
  })
})

t.test('Wire rules: record limits against php-fpm', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-fcgiclaims-')
  writeFileSync(join(dir, 'e.php'), ENV_PHP)
  const fpm = await startPhpFpm(t, dir, 1)
  const { ctx, ask } = clientOn(t, fpm.socketPath, join(dir, 'e.php'), { maxConnections: 1 })
  const line = (name: string, value: string): string => `${name}=${Buffer.byteLength(value)}:${md5(value)}`

  // A pair is 1 + 4 length bytes + name + value: HTTP_X_BIG (10) with 65520 value bytes is 65535.
  const full = 'b'.repeat(65520)
  const r = await ask({ env: { HTTP_X_BIG: full } })
  t.equal(r.status, 200, r.error?.message ?? fpm.log())
  t.equal(r.body.toString().split('\n')[0], line('HTTP_X_BIG', full), 'a 65535-byte pair (one whole record) reaches php intact')
  const before = ctx.connects
  const over = await ask({ env: { HTTP_X_BIG: full + 'b' } })
  t.equal(over.error?.code, 'ERR_BAD_HEADER_VALUE', 'one byte more fails')
  t.equal(over.error?.status, 400)
  t.equal(ctx.connects, before, 'before any connection is opened')

  // Names and values are sent as UTF-8: the limit counts bytes, not characters.
  const e = 'é'.repeat(32760) // 65520 bytes
  const u = await ask({ env: { HTTP_X_BIG: e } })
  t.equal(u.body.toString().split('\n')[0], line('HTTP_X_BIG', e), 'a 65520-byte UTF-8 value arrives as its UTF-8 bytes')
  t.equal((await ask({ env: { HTTP_X_BIG: e + 'é' } })).error?.code, 'ERR_BAD_HEADER_VALUE', '32761 characters, 65522 bytes: refused')

  // Several PARAMS records, none splitting a pair.
  const vars: Record<string, string> = { HTTP_X_P1: '1'.repeat(40000), HTTP_X_P2: '2'.repeat(40000), HTTP_X_P3: '3'.repeat(40000) }
  const many = await ask({ env: vars })
  t.same(many.body.toString().split('\n').slice(0, 3), Object.entries(vars).map(([k, v]) => line(k, v)), '120 KB of params over several records: every pair intact')

  // STDIN records are ≤ 65535 bytes: bodies around that boundary arrive byte-exact.
  for (const size of [65535, 65536, 131071]) {
    const body = Buffer.alloc(size)
    for (let i = 0; i < size; i++) body[i] = (i * 31 + 7) & 0xff
    const p = await ask({ method: 'POST', body })
    t.equal(p.body.toString().split('\n').at(-1), `body=${size}:${md5(body)}`, `a ${size}-byte body`)
  }
})

t.test('STDERR: stderrLimit against php-cgi', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-fcgiclaims-')
  writeFileSync(join(dir, 'loud.php'), "<?php error_log(str_repeat('x', 5000)); echo 'logged';")
  const peer = await startPhpCgi(t, dir, 1)
  const { ask } = clientOn(t, peer.socketPath, join(dir, 'loud.php'), { stderrLimit: 1000 })
  const r = await ask()
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'logged', 'the response is not affected')
  const marker = '[stderr truncated after 1000 bytes]'
  t.ok(r.stderr.endsWith(marker), 'one marker line in place of the rest')
  const kept = r.stderr.slice(0, -marker.length)
  t.equal(Buffer.byteLength(kept), 1000, 'exactly stderrLimit bytes handed on')
  t.match(kept, /^[^\n]*x{900}$/, 'the first 1000 bytes of what php wrote')
})

t.test('STDERR: a stream that ends inside a UTF-8 character (fcgiwrap) is handed on, not dropped', async (t) => {
  if (!havePeer(t, FCGIWRAP)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-fcgiclaims-')
  const script = join(dir, 'cut.sh')
  // The script's stderr ends with the first byte of "é" (c3): no later record completes it.
  writeFileSync(script, '#!/bin/sh\nprintf "caf\\303" >&2\nprintf "Content-Type: text/plain\\r\\n\\r\\nok"\n')
  chmodSync(script, 0o755)
  const wrap = await startFcgiwrap(t, dir, 1)
  const { ask } = clientOn(t, wrap.socketPath, script, { discovery: false })
  const r = await ask()
  t.equal(r.status, 200, r.error?.message ?? wrap.log())
  t.equal(r.body.toString(), 'ok')
  t.equal(r.stderr, 'caf\ufffd', 'the byte left over at the end is logged (as U+FFFD), not lost')
})

// Go's net/http/fcgi answers FCGI_GET_VALUES with FCGI_MPXS_CONNS=1 and nothing else.
const GO_VALUES = rec(10, 0, pairs([['FCGI_MPXS_CONNS', '1']]))

t.test('Multiplexing (FAKE-FCGI answering as Go net/http/fcgi): 16 requests per connection when FCGI_MAX_REQS is absent', async (t) => {
  guardLeaks(t)
  const held: FakeRequest[] = []
  const { fake, client, ask } = await fakeClient(t, (req) => { held.push(req) }, { discovery: true }, GO_VALUES)
  const perConn = (): number[] => {
    const n = new Map<number, number>()
    for (const q of held) n.set(q.conn, (n.get(q.conn) ?? 0) + 1)
    return [...n.values()]
  }
  const first = [ask({ query: 'first' })]
  t.ok(await waitFor(() => held.length === 1), 'the first request is on the wire')
  const rest = Array.from({ length: 19 }, (_, i) => ask({ query: `n${i}` }))
  t.ok(await waitFor(() => held.length === 20), 'all 20 reached the backend')
  t.same(perConn(), [16, 4], '16 on the first connection, the other 4 on a second one')
  t.equal(fake.accepted, 3, 'discovery + 2 connections')
  t.equal(client.backendValues.mpxsConns, true)
  client.destroy()
  await Promise.all([...first, ...rest])
})

t.test('Multiplexing: a burst arriving before the first connection is up shares it too', async (t) => {
  guardLeaks(t)
  const held: FakeRequest[] = []
  const { fake, client, ask } = await fakeClient(t, (req) => { held.push(req) }, { discovery: true }, GO_VALUES)
  const all = Array.from({ length: 20 }, (_, i) => ask({ query: `n${i}` }))
  t.ok(await waitFor(() => held.length === 20), 'all 20 reached the backend')
  t.equal(fake.accepted, 3, `discovery + 2 connections (${fake.accepted - 1} opened)`)
  client.destroy()
  await Promise.all(all)
})

t.test('Multiplexing: multiplex: false keeps one request per connection', async (t) => {
  guardLeaks(t)
  const held: FakeRequest[] = []
  const { fake, client, ask } = await fakeClient(t, (req) => { held.push(req) }, { discovery: true, multiplex: false }, GO_VALUES)
  const all = Array.from({ length: 3 }, () => ask())
  t.ok(await waitFor(() => held.length === 3))
  t.same(held.map((q) => q.id), [1, 1, 1], 'each request alone on its connection')
  t.equal(fake.accepted, 4, 'discovery + 3 connections')
  client.destroy()
  await Promise.all(all)
})

t.test('Options: "Unknown keys and bad values are ConfigError issues with paths under the route\'s options path" (proxycore check)', async (t) => {
  const dir = tempDir(t, 'pc-fcgiclaims-')
  const config = join(dir, 'proxycore.yaml')
  writeFileSync(config, `listen: 127.0.0.1:0
routes:
  - match: { extension: .php }
    protocol: fastcgi
    backends: ["unix:${dir}/php.sock"]
    docroot: ${dir}
    options: { keepconn: true, idleTimeout: 0 }
    authorizer: { backends: ["unix:${dir}/auth.sock"], options: { stderrLimit: -1 } }
`)
  const r = await runCli(['check', config])
  t.not(r.code, 0, 'check fails')
  const out = r.stdout + r.stderr
  t.match(out, '/routes/0/options/keepconn', 'unknown key, with its path')
  t.match(out, '/routes/0/options/idleTimeout', 'bad value, with its path')
  t.match(out, '/routes/0/authorizer/options/stderrLimit', 'the authorizer\'s options too')
})

// An authorizer that shows what it got: refused (403), its body is the client's answer.
const AUTH_SH = `#!/bin/sh
if [ "$HTTP_X_TOKEN" = ok ]; then
  printf 'Status: 200 OK\\r\\nVariable-X-User-Id: 42\\r\\n\\r\\nignored'
  exit 0
fi
printf 'Status: 403 Forbidden\\r\\nContent-Type: text/plain\\r\\n\\r\\n'
for v in FCGI_ROLE HTTP_AUTHORIZATION REQUEST_METHOD REQUEST_URI SCRIPT_FILENAME CONTENT_LENGTH CONTENT_TYPE PATH_INFO PATH_TRANSLATED SCRIPT_NAME; do
  eval "val=\\\${$v-(unset)}"
  echo "$v=$val"
done
`
const APP_SH = `#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "X_USER_ID=\${X_USER_ID-(unset)} CONTENT_LENGTH=\${CONTENT_LENGTH-(unset)} body=$(wc -c)"
`

t.test('Authorizer: the variables it gets (§6.3), and Variable-* for the handler (fcgiwrap, shell scripts)', async (t) => {
  if (!havePeer(t, FCGIWRAP)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-fcgiclaims-')
  writeFileSync(join(dir, 'auth.sh'), AUTH_SH)
  writeFileSync(join(dir, 'app.sh'), APP_SH)
  chmodSync(join(dir, 'auth.sh'), 0o755)
  chmodSync(join(dir, 'app.sh'), 0o755)
  const wrap = await startFcgiwrap(t, dir, 2)
  const backend = `unix:${wrap.socketPath}`
  const { url } = await proxyServer(t, {
    routes: [{
      match: { prefix: '/app/' }, protocol: 'fastcgi', backends: [backend], scriptFilename: join(dir, 'app.sh'),
      options: { discovery: false }, authorizer: { backends: [backend], scriptFilename: join(dir, 'auth.sh'), timeout: '2s', options: { discovery: false } },
    }],
  })
  const headers = { authorization: 'Basic dTpw', 'content-type': 'text/plain' }
  const no = await get(`${url}/app/x/y?q=1`, { method: 'POST', headers: { ...headers, 'x-token': 'no' }, body: 'payload' })
  t.equal(no.status, 403, 'the refusal is the client answer')
  t.same(Object.fromEntries(no.body.toString().trim().split('\n').map((l) => l.split(/=(.*)/s).slice(0, 2))), {
    FCGI_ROLE: 'AUTHORIZER',
    HTTP_AUTHORIZATION: 'Basic dTpw',
    REQUEST_METHOD: 'POST',
    REQUEST_URI: '/app/x/y?q=1',
    SCRIPT_FILENAME: join(dir, 'auth.sh'),
    CONTENT_LENGTH: '(unset)',
    CONTENT_TYPE: '(unset)',
    PATH_INFO: '(unset)',
    PATH_TRANSLATED: '(unset)',
    SCRIPT_NAME: '(unset)',
  }, 'HTTP_* with HTTP_AUTHORIZATION, SCRIPT_FILENAME = scriptFilename; no CONTENT_*, PATH_INFO, PATH_TRANSLATED, SCRIPT_NAME')
  const ok = await get(`${url}/app/x/y?q=1`, { method: 'POST', headers: { ...headers, 'x-token': 'ok' }, body: 'payload' })
  t.equal(ok.status, 200)
  t.equal(ok.body.toString().trim(), 'X_USER_ID=42 CONTENT_LENGTH=7 body=7', 'Variable-X-User-Id is X_USER_ID; the body reaches the handler only')
})

t.test('Connections 6: php-cgi recycling after PHP_FCGI_MAX_REQUESTS: every request answered, none run twice', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-fcgiclaims-')
  const log = join(dir, 'runs.log')
  writeFileSync(join(dir, 'count.php'), `<?php
$id = $_SERVER['REQUEST_METHOD'] . ' ' . $_SERVER['QUERY_STRING'];
file_put_contents(${JSON.stringify(log)}, $id . "\\n", FILE_APPEND | LOCK_EX);
echo getmypid(), ' ', $id, ' ', file_get_contents('php://input');
`)
  writeFileSync(log, '')
  const peer = await startPhpCgi(t, dir, 1, { PHP_FCGI_MAX_REQUESTS: '2' })
  const { ask } = clientOn(t, peer.socketPath, join(dir, 'count.php'))
  const sent: string[] = []
  const answers: string[] = []
  const one = async (i: number): Promise<void> => {
    const method = ['GET', 'POST', 'DELETE'][i % 3]
    const body = method === 'POST' ? Buffer.from(`b${i}`) : null
    sent.push(`${method} n=${i}`)
    const r = await ask({ method, query: `n=${i}`, body })
    answers.push(r.error !== null ? `${method} n=${i} ${r.error.code}` : r.body.toString().trim())
  }
  for (let i = 0; i < 12; i++) await one(i)
  await Promise.all(Array.from({ length: 9 }, (_, k) => one(12 + k)))
  t.same(answers.filter((a) => / ERR_/.test(a)), [], 'no request failed')
  const runs = readFileSync(log, 'utf8').trim().split('\n')
  t.same([...runs].sort(), [...sent].sort(), 'each request ran exactly once')
  const pids = new Set(answers.map((a) => a.split(' ')[0]))
  t.ok(pids.size >= 10, `21 requests served by ${pids.size} workers in turn (each exits after 2 answers)`)
})

t.test('Error mapping: a body against the backend\'s Content-Length (php-fpm)', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-fcgiclaims-')
  writeFileSync(join(dir, 'cl.php'), `<?php
parse_str($_SERVER['QUERY_STRING'], $q);
if (isset($q['status'])) http_response_code((int)$q['status']);
header('Content-Type: text/plain');
header('Content-Length: ' . $q['cl']);
echo $q['body'];
`)
  const fpm = await startPhpFpm(t, dir, 1)
  const { ctx, client, ask } = clientOn(t, fpm.socketPath, join(dir, 'cl.php'), { maxConnections: 1 })
  const short = await ask({ query: 'cl=100&body=short' })
  t.same([short.status, short.body.toString(), short.error?.code, short.error?.phase], [200, 'short', 'ERR_BACKEND_CLOSED', 'body'],
    'END_REQUEST short of Content-Length: the bytes that came, then ERR_BACKEND_CLOSED in phase body')
  t.equal(client.connections, 1, 'the connection is kept (the END_REQUEST was clean)')
  const connects = ctx.connects
  const extra = await ask({ query: 'cl=3&body=abcdef' })
  t.same([extra.status, extra.body.toString(), extra.ended, extra.error], [200, 'abc', true, null], 'STDOUT past Content-Length is dropped')
  const head = await ask({ method: 'HEAD', query: 'cl=100&body=short' })
  t.same([head.status, head.body.length, head.ended, head.error], [200, 0, true, null], 'HEAD ends at its head')
  const nm = await ask({ query: 'status=304&cl=100&body=short' })
  t.same([nm.status, nm.body.length, nm.ended, nm.error], [304, 0, true, null], '304 ends at its head')
  t.equal(ctx.connects, connects, 'all on the same kept-alive connection')
})
