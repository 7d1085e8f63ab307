import t from 'tap'
import { buildCgiEnv, plainAddress, type CgiEnvInput } from '../../src/core/cgi/env.js'
import { ProxyError } from '../../src/core/errors.js'

const client = { address: '127.0.0.1', port: 40000, localAddress: '127.0.0.1', localPort: 8080, secure: false }
const script = { filename: '/srv/www/cgi-bin/env.sh', name: '/cgi-bin/env.sh', pathInfo: '/a/b', docroot: '/srv/www' }

type Over = Partial<CgiEnvInput> & { raw?: string[] }

function input ({ raw = ['Host', 'h.example:8080'], ...over }: Over = {}): CgiEnvInput {
  return {
    method: 'GET',
    url: '/cgi-bin/env.sh/a/b?x=1&y=%20',
    path: '/cgi-bin/env.sh/a/b',
    query: 'x=1&y=%20',
    httpVersion: '1.1',
    headers: {},
    rawHeaders: raw,
    client,
    script,
    serverSoftware: 'proxycore/0.1.0',
    contentLength: null,
    ...over
  }
}

function code (fn: () => unknown): string | undefined {
  try { fn() } catch (err) { return err instanceof ProxyError ? err.code : 'not a ProxyError' }
  return undefined
}

t.test('AC-29 meta-variables are complete and correct', async (t) => {
  const env = buildCgiEnv(input())
  t.match(env, {
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_PROTOCOL: 'HTTP/1.1',
    REQUEST_METHOD: 'GET',
    SCRIPT_NAME: '/cgi-bin/env.sh',
    SCRIPT_FILENAME: '/srv/www/cgi-bin/env.sh',
    PATH_INFO: '/a/b',
    QUERY_STRING: 'x=1&y=%20',
    REQUEST_URI: '/cgi-bin/env.sh/a/b?x=1&y=%20',
    SERVER_NAME: 'h.example',
    SERVER_PORT: '8080',
    SERVER_ADDR: '127.0.0.1',
    REMOTE_ADDR: '127.0.0.1',
    REMOTE_PORT: '40000',
    SERVER_SOFTWARE: 'proxycore/0.1.0',
    REQUEST_SCHEME: 'http',
    DOCUMENT_ROOT: '/srv/www',
    HTTP_HOST: 'h.example:8080'
  })
  t.notOk('CONTENT_LENGTH' in env, 'no CONTENT_LENGTH without a body')
  t.notOk('CONTENT_TYPE' in env)
  t.notOk('HTTPS' in env)
  t.notOk('PATH_TRANSLATED' in env, 'no PATH_TRANSLATED even with PATH_INFO: php-cgi would run it (test/cgi-shared/path-translated.test.ts)')
})

t.test('AC-30 QUERY_STRING always set and raw', async (t) => {
  t.equal(buildCgiEnv(input({ url: '/cgi-bin/env.sh', query: '' })).QUERY_STRING, '')
  t.equal(buildCgiEnv(input({ url: '/cgi-bin/env.sh?', query: '' })).REQUEST_URI, '/cgi-bin/env.sh?')
  t.equal(buildCgiEnv(input({ url: '/x?a+b=%2B', query: 'a+b=%2B' })).QUERY_STRING, 'a+b=%2B')
})

t.test('PATH_INFO absent → no PATH_TRANSLATED (§4.1.6)', async (t) => {
  const env = buildCgiEnv(input({ script: { ...script, pathInfo: '' } }))
  t.notOk('PATH_INFO' in env)
  t.notOk('PATH_TRANSLATED' in env)
  const app = buildCgiEnv(input({ script: { filename: '/app.py', name: '', pathInfo: '/x', docroot: '' } }))
  t.equal(app.SCRIPT_NAME, '', 'root-mounted app has SCRIPT_NAME ""')
  t.equal(app.PATH_INFO, '/x')
  t.notOk('PATH_TRANSLATED' in app, 'nothing to translate into without a docroot')
  t.notOk('DOCUMENT_ROOT' in app)
})

t.test('AC-32 CONTENT_LENGTH iff a body', async (t) => {
  const raw = ['Host', 'h', 'Content-Type', 'text/plain', 'Content-Length', '5']
  const withBody = buildCgiEnv(input({ raw, contentLength: 5, method: 'POST' }))
  t.equal(withBody.CONTENT_LENGTH, '5')
  t.equal(withBody.CONTENT_TYPE, 'text/plain')
  t.equal(buildCgiEnv(input({ raw, contentLength: 0 })).CONTENT_LENGTH, '0', 'empty body present → "0"')
  const none = buildCgiEnv(input({ raw, contentLength: null }))
  t.notOk('CONTENT_LENGTH' in none)
  t.notOk('CONTENT_TYPE' in none, 'CONTENT_TYPE only with a body')
  t.notOk('HTTP_CONTENT_TYPE' in none)
  t.notOk('HTTP_CONTENT_LENGTH' in none)
})

t.test('AC-33 HTTP_* mapping and merging', async (t) => {
  const raw = ['Host', 'h', 'X-A', '1', 'x-a', '2', 'Cookie', 'a=1', 'Cookie', 'b=2', 'xx-yy123', 'foo',
    'Authorization', 'Basic dTpw', 'Content-Type', 'text/plain', 'Connection', 'close, X-Hop', 'X-Hop', 'h',
    'Keep-Alive', '5', 'TE', 'trailers', 'Upgrade', 'h2c', 'Proxy-Authorization', 'Basic x']
  const env = buildCgiEnv(input({ raw }))
  t.equal(env.HTTP_X_A, '1, 2')
  t.equal(env.HTTP_COOKIE, 'a=1; b=2')
  t.equal(env.HTTP_XX_YY123, 'foo')
  for (const name of ['HTTP_AUTHORIZATION', 'HTTP_CONTENT_TYPE', 'HTTP_CONNECTION', 'HTTP_X_HOP', 'HTTP_KEEP_ALIVE',
    'HTTP_TE', 'HTTP_UPGRADE', 'HTTP_PROXY_AUTHORIZATION', 'CONTENT_TYPE']) t.notOk(name in env, `no ${name}`)
  const auth = buildCgiEnv(input({ raw, passAuthorization: true }))
  t.equal(auth.HTTP_AUTHORIZATION, 'Basic dTpw', 'passAuthorization opts in')
  t.notOk('HTTP_PROXY_AUTHORIZATION' in auth, 'Proxy-Authorization never')
})

t.test('parsed headers work when rawHeaders is absent', async (t) => {
  const env = buildCgiEnv(input({ rawHeaders: undefined, headers: { host: 'a.example', 'set-x': ['1', '2'], proxy: 'http://evil/' } }))
  t.equal(env.SERVER_NAME, 'a.example')
  t.equal(env.HTTP_SET_X, '1, 2')
  t.notOk('HTTP_PROXY' in env)
})

t.test('AC-34 auth variables never from client headers', async (t) => {
  const env = buildCgiEnv(input({ raw: ['Host', 'h', 'Remote-User', 'admin', 'Auth-Type', 'Basic'] }))
  t.notOk('REMOTE_USER' in env)
  t.notOk('AUTH_TYPE' in env)
  t.equal(env.HTTP_REMOTE_USER, 'admin')
})

t.test('AC-35 absolute-form target names the server', async (t) => {
  const env = buildCgiEnv(input({ url: 'http://A.example/cgi-bin/env.sh?q', query: 'q', raw: ['Host', 'b.example'] }))
  t.equal(env.SERVER_NAME, 'a.example')
  t.equal(env.REQUEST_URI, '/cgi-bin/env.sh/a/b?q', 'REQUEST_URI is origin-form')
})

t.test('AC-36 HTTPS and REQUEST_SCHEME cannot be spoofed', async (t) => {
  const env = buildCgiEnv(input({ raw: ['Host', 'h', 'HTTPS', 'on', 'X-Forwarded-Proto', 'https'] }))
  t.notOk('HTTPS' in env)
  t.equal(env.REQUEST_SCHEME, 'http')
  t.equal(env.HTTP_HTTPS, 'on')
  const tls = buildCgiEnv(input({ client: { ...client, secure: true } }))
  t.equal(tls.HTTPS, 'on')
  t.equal(tls.REQUEST_SCHEME, 'https')
})

t.test('AC-39 httpoxy: never HTTP_PROXY', async (t) => {
  for (const name of ['Proxy', 'proxy', 'PROXY']) {
    const env = buildCgiEnv(input({ raw: ['Host', 'h', name, 'http://127.0.0.1:9/'] }))
    t.notOk('HTTP_PROXY' in env, `header ${name}`)
  }
  const env = buildCgiEnv(input({ params: { HTTP_PROXY: 'x', http_proxy: 'y', REDIRECT_STATUS: '200' } }))
  t.notOk('HTTP_PROXY' in env)
  t.notOk('http_proxy' in env, 'operator params cannot set it in any case')
  t.equal(env.REDIRECT_STATUS, '200')
})

t.test('AC-40 header names with underscores or odd bytes are dropped', async (t) => {
  const dropped: string[] = []
  const raw = ['Host', 'h', 'X_Forwarded_For', '6.6.6.6', 'X-Forwarded-For', '1.1.1.1', 'Content_Length', '5',
    'Script_Name', '/evil', 'X.Dot', '1', 'Content-Length', '3']
  const env = buildCgiEnv(input({ raw, contentLength: 3, onDroppedHeader: (n) => dropped.push(n) }))
  t.equal(env.HTTP_X_FORWARDED_FOR, '1.1.1.1')
  t.notOk('HTTP_CONTENT_LENGTH' in env)
  t.notOk('HTTP_SCRIPT_NAME' in env)
  t.notOk('HTTP_X_DOT' in env)
  t.equal(env.CONTENT_LENGTH, '3')
  t.equal(env.SCRIPT_NAME, '/cgi-bin/env.sh')
  t.same(dropped, ['x_forwarded_for', 'content_length', 'script_name', 'x.dot'])
})

t.test('operator params are applied last, case-insensitively', async (t) => {
  const env = buildCgiEnv(input({ params: { server_name: 'vhost', X_APP: '1' } }))
  t.equal(env.server_name, 'vhost')
  t.notOk('SERVER_NAME' in env, 'the case variant is replaced, not duplicated')
  t.equal(env.X_APP, '1')
})

const badValues: Array<[string, Over, string]> = [
  ['CR in a header', { raw: ['Host', 'h', 'X-A', 'a\rb'] }, 'ERR_BAD_HEADER_VALUE'],
  ['LF in a header', { raw: ['Host', 'h', 'X-A', 'a\nb'] }, 'ERR_BAD_HEADER_VALUE'],
  ['NUL in a header', { raw: ['Host', 'h', 'X-A', 'a\0b'] }, 'ERR_BAD_HEADER_VALUE'],
  ['NUL in Content-Type', { raw: ['Content-Type', 'a\0'], contentLength: 1 }, 'ERR_BAD_HEADER_VALUE'],
  ['NUL in PATH_INFO', { script: { ...script, pathInfo: '/a\0b' } }, 'ERR_BAD_HEADER_VALUE'],
  ['NUL in a param', { params: { X: 'a\0' } }, 'ERR_BAD_HEADER_VALUE'],
  ['two Host headers', { raw: ['Host', 'a', 'Host', 'b'] }, 'ERR_BAD_REQUEST'],
  ['Host with a path', { raw: ['Host', 'a/b'] }, 'ERR_BAD_REQUEST'],
  ['Host with a space', { raw: ['Host', 'a b'] }, 'ERR_BAD_REQUEST'],
  ['Host with a bad port', { raw: ['Host', 'a:8x'] }, 'ERR_BAD_REQUEST']
]
for (const [name, over, want] of badValues) {
  t.test(`rejects: ${name}`, async (t) => {
    t.equal(code(() => buildCgiEnv(input(over))), want)
  })
}

t.test('SERVER_NAME forms', async (t) => {
  t.equal(buildCgiEnv(input({ raw: ['Host', '[::1]:8080'] })).SERVER_NAME, '[::1]')
  t.equal(buildCgiEnv(input({ raw: ['Host', 'Example.COM'] })).SERVER_NAME, 'example.com')
  t.equal(buildCgiEnv(input({ raw: [], httpVersion: '1.0' })).SERVER_NAME, '127.0.0.1', 'HTTP/1.0 without Host: local address')
  t.equal(buildCgiEnv(input({ raw: [], defaultServerName: 'www' })).SERVER_NAME, 'www')
  t.equal(buildCgiEnv(input({ httpVersion: '1.0' })).SERVER_PROTOCOL, 'HTTP/1.0')
  t.equal(buildCgiEnv(input({ httpVersion: '2.0' })).SERVER_PROTOCOL, 'HTTP/1.1')
})

t.test('IPv4-mapped addresses are shown plain', async (t) => {
  t.equal(plainAddress('::ffff:127.0.0.1'), '127.0.0.1')
  t.equal(plainAddress('::1'), '::1')
  const env = buildCgiEnv(input({ client: { ...client, address: '::ffff:10.0.0.1', localAddress: '::ffff:127.0.0.1' } }))
  t.equal(env.REMOTE_ADDR, '10.0.0.1')
  t.equal(env.SERVER_ADDR, '127.0.0.1')
})

t.test('env values are Unicode text: UTF-8 header bytes are decoded', async (t) => {
  const latin1OfUtf8 = Buffer.from('café', 'utf8').toString('latin1')
  const env = buildCgiEnv(input({ raw: ['Host', 'h', 'X-Name', latin1OfUtf8, 'X-Latin', 'caf\xe9'] }))
  t.equal(env.HTTP_X_NAME, 'café')
  t.equal(env.HTTP_X_LATIN, 'caf\udce9', 'not UTF-8: the byte escaped (U+DC00 + byte), written back as E9')
})
