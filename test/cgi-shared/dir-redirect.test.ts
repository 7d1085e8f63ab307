/**
 * A path naming a directory with an index file, without its trailing slash, is sent to the slash
 * form (301, the query kept), as Apache mod_dir (DirectorySlash), lighttpd and nginx do: served as
 * is, the index's relative links would resolve against the parent directory. The Location is built
 * from the decoded, normalised path, never the raw target (`//host` would be an open redirect).
 * Real shell CGI scripts through the whole pipeline (src/core/cgi/script.ts resolveIndex).
 */
import t from 'tap'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, rawRequest } from '../helpers/servers.js'
import { cgiProxy, tempDir, writeScripts } from '../cgi/harness.js'

const INDEX = '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\n"\necho "index of $SCRIPT_NAME pi=${PATH_INFO-unset} q=$QUERY_STRING"\n'

t.test('directory without its trailing slash → 301 to the slash form', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  const www = join(dir, 'www')
  writeScripts(www, {
    'sub/index.sh': INDEX,
    'sub/deeper/index.sh': INDEX,
    'café/index.sh': INDEX,
    'evil.example/index.sh': INDEX,
    'empty/readme.txt': 'no index here\n',
  })
  const route = { protocol: 'cgi', spawn: 'cgi', docroot: www, index: ['index.sh'] }
  const p = await cgiProxy(t, { cgi: {} }, [
    { ...route, match: { prefix: '/c/' }, stripPrefix: true },
    { ...route, match: { prefix: '/' } },
  ])

  const r = await get(`${p.url}/c/sub`)
  t.equal(r.status, 301)
  t.equal(r.headers.location, '/c/sub/', 'Location keeps the route prefix')
  t.equal(r.body.length, 0)

  t.equal((await get(`${p.url}/c/sub?a=1&b=%20`)).headers.location, '/c/sub/?a=1&b=%20', 'the query is kept, raw')
  t.equal((await get(`${p.url}/c/sub/deeper`)).headers.location, '/c/sub/deeper/')
  t.equal((await get(`${p.url}/c//sub/./deeper`)).headers.location, '/c/sub/deeper/', 'built from the normalised path')
  t.equal((await get(`${p.url}/c/caf%C3%A9`)).headers.location, '/c/caf%C3%A9/', 'segments percent-encoded again')
  t.equal((await get(`${p.url}/sub`)).headers.location, '/sub/', 'a route without a prefix')

  const head = await get(`${p.url}/c/sub`, { method: 'HEAD' })
  t.equal(head.status, 301)
  t.equal(head.headers.location, '/c/sub/')

  const open = await rawRequest(p.port, 'GET //evil.example HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(open, /^HTTP\/1\.1 301 /, open)
  t.match(open, /\r\nlocation: \/evil\.example\/\r\n/i, 'never `//evil.example/` (an open redirect)')

  const ok = await get(`${p.url}/c/sub/?x=1`)
  t.equal(ok.status, 200)
  t.equal(ok.body.toString(), 'index of /c/sub/index.sh pi=unset q=x=1\n', 'the slash form runs the index')

  t.equal((await get(`${p.url}/c/empty`)).status, 404, 'a directory without an index file stays 404')
  t.equal((await get(`${p.url}/c/nothing`)).status, 404)
})
