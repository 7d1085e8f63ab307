/**
 * X-Sendfile under a response field node:http refuses to write (a control character in a value, a
 * name that is no token), handed over by a custom adapter (the public adapter API; the built-in
 * adapters refuse such heads themselves). The ordinary response path answers 502
 * ERR_BAD_RESPONSE_HEADER (test/component/adapter-bad-head.test.ts); the X-Sendfile path wrote its
 * head in a promise callback without that guard: the throw was an unhandled rejection (the end of
 * a proxy run with node's default `--unhandled-rejections=throw`), the client got nothing, and the
 * opened file's descriptor leaked. Now the same 502, and the file is never opened.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { scriptedAdapter } from '../helpers/adapters.js'
import { guardLeaks } from '../helpers/leaks.js'
import { proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

t.test('an X-Sendfile head with a field node:http refuses: 502 ERR_BAD_RESPONSE_HEADER, no crash, no fd left', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pc-sf-badhead-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  writeFileSync(join(root, 'f.txt'), 'file body')
  const fields: Record<string, [string, string]> = {
    '/value': ['x-bad', 'a\u0001b'],
    '/name': ['x bad', 'v'],
  }
  const adapter = scriptedAdapter('sf-bad-head', (ex, h, done) => {
    done()
    const [name, value] = fields[ex.path] ?? ['x-ok', 'ok']
    h.onHead(200, [name, value, 'x-sendfile', join(root, 'f.txt'), 'content-type', 'text/plain'], { resume () {} }, 'OK')
    h.onEnd()
  })
  const { port } = await proxyServer(t, { adapters: [adapter], routes: [{ protocol: 'sf-bad-head', backends: ['127.0.0.1:9'], xSendfile: { allow: [root] } }] })
  for (const path of Object.keys(fields)) {
    const r = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    t.match(r, /^HTTP\/1\.1 502 Bad Gateway\r\n/, `${path}: a 502`)
    t.match(r, /ERR_BAD_RESPONSE_HEADER/, `${path}: the page names the code`)
    t.notMatch(r, /file body/, `${path}: the file is not sent`)
  }
  // The same proxy still serves a good head: the process survived, the route works.
  const ok = await rawRequest(port, 'GET /good HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(ok, /^HTTP\/1\.1 200 [^]*x-ok: ok[^]*\r\n\r\nfile body$/i)
})
