/**
 * Every route field is matched on ONE normalised path (decoded once, `//` merged, dot-segments
 * resolved), as nginx and lighttpd match locations: no spelling of a guarded path reaches a script
 * or backend through another route. Literal request bytes over a raw socket (an HTTP client would
 * normalise them first); real shell CGI scripts, php-cgi and node:http backends.
 */
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'
import { cgiProxy, havePeer, parseEnv, tempDir, writeScripts } from '../cgi/harness.js'
import { normalizePath } from '../../src/core/cgi/url-path.js'
import { ProxyError } from '../../src/core/errors.js'

const PHP_CGI = '/usr/bin/php-cgi'

interface Tap { teardown (fn: () => unknown): void }

/** A node:http backend that answers with its name and records the request-target it got. */
async function named (t: Tap, name: string) {
  const seen: string[] = []
  const be = await backend(t, (req, res) => {
    seen.push(req.url ?? '')
    req.resume()
    req.on('end', () => res.end(`${name} ${req.url ?? ''}`))
  })
  return { ...be, seen }
}

async function send (port: number, target: string): Promise<{ status: number, body: string }> {
  const out = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
  const at = out.indexOf('\r\n\r\n')
  let body = out.slice(at + 4)
  if (/\r\ntransfer-encoding: chunked/i.test(out.slice(0, at))) body = unchunk(body)
  return { status: Number(out.slice(9, 12)), body }
}

function unchunk (s: string): string {
  let out = ''
  for (let i = 0; ;) {
    const eol = s.indexOf('\r\n', i)
    const n = parseInt(s.slice(i, eol), 16)
    if (!(n > 0)) return out
    out += s.slice(eol + 2, eol + 2 + n)
    i = eol + 2 + n + 2
  }
}

t.test('normalizePath: the one path routes are matched on', async (t) => {
  const same: Array<[string, string]> = [
    ['/', '/'], ['//', '/'], ['/a/b', '/a/b'], ['/a/b/', '/a/b/'], ['//a///b//', '/a/b/'],
    ['/./a/./b', '/a/b'], ['/a/.', '/a/'], ['/a/b/..', '/a/'], ['/a/..', '/'], ['/x/../a', '/a'],
    ['/%61dmin/', '/admin/'], ['/a/%2e%2E/b', '/b'], ['/a/.%2e/b', '/b'], ['/%252e%252e/x', '/%2e%2e/x'],
    ['/a%20b/%C3%A9', '/a b/é'], ['/.hidden/x', '/.hidden/x'], ['/a..b/', '/a..b/'], ['*', '*'],
    // nginx matches locations on the decoded URI: an encoded slash is a separator there.
    ['/admin%2fx', '/admin/x'], ['/admin%2Fx', '/admin/x'], ['/x%2F..%2Fadmin/', '/admin/'],
  ]
  for (const [raw, want] of same) t.equal(normalizePath(raw), want, raw)
  const refused: Array<[string, string]> = [
    ['/..', 'ERR_BAD_REQUEST'], ['/a/../..', 'ERR_BAD_REQUEST'], ['/%2e%2e/a', 'ERR_BAD_REQUEST'],
    ['/a%zz', 'ERR_BAD_REQUEST'], ['/a%2', 'ERR_BAD_REQUEST'], ['/%ff', 'ERR_BAD_REQUEST'], ['/a%00b', 'ERR_BAD_REQUEST'],
    ['/a%0d%0a', 'ERR_BAD_REQUEST'], ['/a%5cb', 'ERR_BAD_REQUEST'], ['/a\\b', 'ERR_BAD_REQUEST'],
    ['/a%2F..%2F..%2Fb', 'ERR_BAD_REQUEST'],
  ]
  for (const [raw, code] of refused) {
    let got: unknown = null
    try { normalizePath(raw) } catch (err) { got = err }
    t.ok(got instanceof ProxyError && got.code === code, `${raw} -> ${code}`)
  }
})

const SECRET = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nSECRET RAN\\n'\n"
const ENV = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nenv\n"

t.test('prefix routes: encoded, doubled-slash and dot-segment spellings pick the guard route (CGI)', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, { 'admin/secret.sh': SECRET, 'env.sh': ENV })
  const gate = await named(t, 'gate')
  const p = await cgiProxy(t, { cgi: {} }, [
    { name: 'admin', match: { prefix: '/admin/' }, protocol: 'http', backends: [gate.address] },
    { name: 'site', match: { prefix: '/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir },
  ])
  for (const target of ['/admin/secret.sh', '/%61dmin/secret.sh', '//admin/secret.sh', '/./admin/secret.sh', '/x/../admin/secret.sh', '/x/%2e%2e/admin/secret.sh', '/admin', '/admin%2fsecret.sh', '/admin%2Fsecret.sh']) {
    const r = await send(p.port, target)
    t.equal(r.status, 200, target)
    t.equal(r.body, `gate ${target}`, `${target}: the guard route, with the client's own bytes`)
  }
  for (const [target, status] of [['/x%2fsecret.sh', 404], ['/../admin/secret.sh', 400], ['/x/../../admin/secret.sh', 400], ['/%2e%2e/admin/secret.sh', 400], ['/adm%zzin/secret.sh', 400]] as const) {
    const r = await send(p.port, target)
    t.equal(r.status, status, `${target} -> ${status}`)
    t.notMatch(r.body, 'SECRET RAN', `${target}: the script never runs`)
  }
  t.equal(gate.seen.length, 9, 'only the guarded requests reached the guard')

  // The CGI route's script walk sees the segments its route was chosen on.
  const env = await send(p.port, '/%65nv.sh/a%20b/')
  t.equal(env.status, 200)
  const e = parseEnv(env.body)
  t.equal(e.SCRIPT_NAME, '/env.sh')
  t.equal(e.PATH_INFO, '/a b/')
  t.equal(e.REQUEST_URI, '/%65nv.sh/a%20b/', 'REQUEST_URI keeps the raw bytes')
  t.equal((await send(p.port, '//env.sh')).status, 200, '//env.sh runs env.sh')
  t.equal((await send(p.port, '/admin/../env.sh')).status, 400, 'the script walk still refuses `..` (chosen route: site, by /env.sh)')
})

t.test('extension routes match the decoded path: no PHP source from the static route (php-cgi)', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, { 'info.php': "<?php echo 'php ran ', $_SERVER['SCRIPT_NAME'], \"\\n\";" }, 0o644)
  const files = await named(t, 'static')
  const p = await cgiProxy(t, { php: { binPath: PHP_CGI } }, [
    { name: 'php', match: { extension: '.php' }, protocol: 'cgi', spawn: 'php', docroot: dir, params: { REDIRECT_STATUS: '200' } },
    { name: 'static', protocol: 'http', backends: [files.address] },
  ])
  for (const target of ['/info.php', '/info.ph%70', '/info%2ephp', '//info.php', '/./info.php']) {
    const r = await send(p.port, target)
    t.equal(r.status, 200, target)
    t.equal(r.body, 'php ran /info.php\n', `${target} runs through the php route`)
  }
  t.same(files.seen, [], 'the static backend never saw a .php request')
})

t.test('match.extension without a dot is the same extension for the router and the script walk', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, {
    'info.php': "<?php echo 'php ran ', $_SERVER['SCRIPT_NAME'], \"\\n\";",
    'upload/avatarphp': "<?php echo 'UPLOAD RAN';",
  }, 0o644)
  const p = await cgiProxy(t, { php: { binPath: PHP_CGI } }, [
    { name: 'php', match: { extension: 'php' }, protocol: 'cgi', spawn: 'php', docroot: dir, params: { REDIRECT_STATUS: '200' } },
  ])
  const ok = await send(p.port, '/info.php')
  t.equal(ok.body, 'php ran /info.php\n')
  const up = await send(p.port, '/upload/avatarphp/x.php')
  t.equal(up.status, 403, 'the file found (avatarphp) does not end in .php: 403')
  t.notMatch(up.body, 'UPLOAD RAN')
})

t.test('HTTP routes: prefix, regex and glob guards see the normalised path; backends get the raw bytes', async (t) => {
  guardLeaks(t)
  const deny = await named(t, 'deny')
  const files = await named(t, 'files')
  const { port } = await proxyServer(t, {
    routes: [
      { name: 'admin', match: { prefix: '/admin/' }, protocol: 'http', backends: [deny.address] },
      { name: 'private', match: { regex: '^/private/' }, protocol: 'http', backends: [deny.address] },
      { name: 'keys', match: { glob: '/keys/**' }, protocol: 'http', backends: [deny.address] },
      { name: 'static', protocol: 'http', backends: [files.address] },
    ],
  })
  const guarded = ['/x/../admin/secret.txt', '/%61dmin/secret.txt', '//admin/secret.txt', '/./admin/secret.txt', '/admin/.', '/%70rivate/x', '//private/x', '/%6beys/a', '/a/%2E%2E/keys/a']
  for (const target of guarded) {
    const r = await send(port, target)
    t.equal(r.body, `deny ${target}`, target)
  }
  t.equal((await send(port, '/admin%2Fsecret.txt')).body, 'deny /admin%2Fsecret.txt', 'an encoded slash is a separator for matching (nginx); the backend gets the bytes')
  t.equal((await send(port, '/a/../../admin/secret.txt')).status, 400, 'climbs above /: 400')
  t.equal((await send(port, '/admin/../public/x')).body, 'files /admin/../public/x', 'leaving the prefix by .. leaves the route')
  t.same(files.seen, ['/admin/../public/x'])
})

t.test('stripPrefix: query on a bare prefix, and a prefix matched only in normal form', async (t) => {
  guardLeaks(t)
  const api = await named(t, 'api')
  const rest = await named(t, 'rest')
  const { port } = await proxyServer(t, {
    routes: [
      { name: 'api', match: { prefix: '/api/' }, protocol: 'http', backends: [api.address], stripPrefix: true },
      { name: 'rest', protocol: 'http', backends: [rest.address] },
    ],
  })
  const cases: Array<[string, string]> = [
    ['/api?x=1', 'api /?x=1'],
    ['/api', 'api /'],
    ['/api/v1/a%20b?q=%2F', 'api /v1/a%20b?q=%2F'],
    ['/%61pi/v1?q', 'api /v1?q'],
    ['//api//v1/a%20b', 'api /v1/a%20b'],
  ]
  for (const [target, want] of cases) t.equal((await send(port, target)).body, want, target)
  t.same(rest.seen, [])
})
