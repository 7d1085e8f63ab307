/**
 * buildCgiEnv refuses a NUL in any variable it hands the FastCGI encoder (php reads C strings),
 * whichever input it came from, with `NUL in NAME` for the first such variable in the
 * environment's order. The walk over the environment now only runs when a value not taken from a
 * header field may carry one (header values pass their own check first), so every such source is
 * tried here, and an operator variable that replaces the NUL-carrying one still clears it.
 */
import t from 'tap'
import { buildCgiEnv, type CgiEnvInput } from '../../src/core/cgi/env.js'
import { ERRORS, ProxyError } from '../../src/core/errors.js'

const client = { address: '127.0.0.1', port: 40000, localAddress: '127.0.0.1', localPort: 18081, secure: false }
const script = { filename: '/srv/www/index.php', name: '/index.php', pathInfo: '/a', docroot: '/srv/www' }

function input (over: Partial<CgiEnvInput> = {}): CgiEnvInput {
  return {
    method: 'GET',
    url: '/index.php/a?x=1',
    path: '/index.php/a',
    query: 'x=1',
    httpVersion: '1.1',
    headers: {},
    rawHeaders: ['Host', 'h.example', 'Content-Type', 'text/plain', 'X-A', 'b'],
    client,
    script,
    serverSoftware: 'proxycore/0.1.0',
    contentLength: 3,
    ...over
  }
}

function refusal (over: Partial<CgiEnvInput>): string | null {
  try {
    buildCgiEnv(input(over))
    return null
  } catch (err) {
    if (!(err instanceof ProxyError)) throw err
    // The message is the code's text, ': ', then the detail.
    return `${err.code} ${err.message.slice(ERRORS[err.code].message.length + 2)}`
  }
}

const cases: Array<[string, Partial<CgiEnvInput>]> = [
  ['SERVER_SOFTWARE', { serverSoftware: 'p\0' }],
  ['SERVER_NAME', { rawHeaders: ['Content-Type', 'text/plain'], defaultServerName: 'w\0w' }],
  ['SERVER_ADDR', { rawHeaders: [], client: { ...client, localAddress: '127.0.0.1\0' } }],
  ['REMOTE_ADDR', { client: { ...client, address: '10.0.0.1\0' } }],
  ['REQUEST_METHOD', { method: 'G\0' }],
  ['REQUEST_URI', { url: '/index.php\0?x=1' }],
  ['QUERY_STRING', { query: 'x=\0' }],
  ['SCRIPT_NAME', { script: { ...script, name: '/i\0.php' } }],
  ['SCRIPT_FILENAME', { script: { ...script, filename: '/srv/www/i\0.php' } }],
  ['PATH_INFO', { script: { ...script, pathInfo: '/\0' } }],
  ['DOCUMENT_ROOT', { script: { ...script, docroot: '/srv/\0' } }],
  ['APP_X', { params: { APP_OK: '1', APP_X: 'a\0' } }],
]

t.test('a NUL from any non-header source is refused, naming the variable', async (t) => {
  t.equal(refusal({}), null, 'the clean input passes')
  for (const [name, over] of cases) {
    // SERVER_ADDR: the NUL local address is also SERVER_NAME's default, which comes first.
    const first = name === 'SERVER_ADDR' ? 'SERVER_NAME' : name
    t.equal(refusal(over), `ERR_BAD_HEADER_VALUE NUL in ${first}`, name)
  }
})

t.test('the first variable in environment order is named', async (t) => {
  t.equal(refusal({ query: 'x=\0', script: { ...script, docroot: '/\0' } }), 'ERR_BAD_HEADER_VALUE NUL in QUERY_STRING')
})

t.test('a header value with NUL is refused by the header check first', async (t) => {
  t.equal(refusal({ query: 'x=\0', rawHeaders: ['Host', 'h', 'X-A', 'a\0'] }), 'ERR_BAD_HEADER_VALUE NUL, CR or LF in x-a')
})

t.test('an operator variable replacing the NUL-carrying one clears the refusal', async (t) => {
  const env = buildCgiEnv(input({ query: 'x=\0', params: { query_string: 'clean' } }))
  t.equal(env.query_string, 'clean')
  t.notOk('QUERY_STRING' in env)
})
