/**
 * A client cannot take HTTP_HOST away by listing `host` in `Connection`: Host is for every hop
 * (RFC 9112 §3.2), so a CGI-family backend keeps it, as an HTTP backend keeps its Host
 * (test/core/audit-headers.test.ts). Other listed fields are still hop-by-hop and dropped.
 */
import t from 'tap'
import { buildCgiEnv } from '../../src/core/cgi/env.js'

const env = (rawHeaders: string[]): Record<string, string> => buildCgiEnv({
  method: 'GET', url: '/x', path: '/x', query: '', httpVersion: '1.1', headers: {}, rawHeaders,
  client: { address: '127.0.0.1', port: 1, localAddress: '127.0.0.1', localPort: 2, secure: false },
  script: { filename: '/srv/x', name: '/x', pathInfo: '', docroot: '/srv' },
  serverSoftware: 'proxycore/test', contentLength: null,
})

t.test('Connection: host does not drop HTTP_HOST; other listed fields go', async (t) => {
  const e = env(['Host', 'site.example', 'Connection', 'close, Host, X-Drop', 'X-Drop', '1', 'X-Keep', '2'])
  t.equal(e.HTTP_HOST, 'site.example', 'HTTP_HOST kept')
  t.equal(e.SERVER_NAME, 'site.example')
  t.equal(e.HTTP_X_DROP, undefined, 'a listed field is dropped')
  t.equal(e.HTTP_X_KEEP, '2')
  const mixed = env(['host', 'site.example', 'connection', 'HOST', 'connection', 'keep-alive'])
  t.equal(mixed.HTTP_HOST, 'site.example', 'any case, any Connection line')
})
