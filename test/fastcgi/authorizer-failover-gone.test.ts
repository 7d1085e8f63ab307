/**
 * An authorization whose client is gone before it is sent is not sent at all (authorizer.ts
 * dispatch): the client's 'abort' came before the authorizer listened for it (a client that left
 * while a spawned authorizer started, or between two attempts), so nothing would stop the
 * authorizer from running it for nobody. Before, it was sent, and its verdict came to nobody.
 * Driven through authorize() itself with a guarded request whose signal is already aborted: through
 * a proxy, the gap between the abort and the dispatch is a few microtasks wide. php-cgi is the
 * authorizer and logs every authorization it runs.
 */
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { havePeer, PHP_CGI, startPhpCgi, tempDir } from './helpers/peers.js'
import { authorize } from '../../src/core/authorizer.js'
import { ProxyError } from '../../src/core/errors.js'
import type { Authorizable } from '../../src/core/exchange.js'
import type { CreateProxyOptions } from '../../src/index.js'

type RouteConfig = CreateProxyOptions['routes'][number]

const AUTH_PHP = `<?php
file_put_contents(__DIR__ . '/asked.log', ($_SERVER['QUERY_STRING'] ?? '') . "\\n", FILE_APPEND | LOCK_EX);
header('Variable-X-Auth: yes');`

if (havePeer(t, PHP_CGI)) {
  t.test('a client already gone: the authorization is not sent', async (t) => {
    guardLeaks(t, { timeoutMs: 10_000 })
    const dir = tempDir(t, 'pc-authz-gone-')
    writeFileSync(join(dir, 'auth.php'), AUTH_PHP)
    writeFileSync(join(dir, 'app.php'), '<?php echo "app ", getenv("X_AUTH");')
    const php = await startPhpCgi(t, dir, 2)
    const addr = `unix:${php.socketPath}`
    const { url, proxy } = await proxyServer(t, {
      routes: [{
        match: { extension: '.php' }, protocol: 'fastcgi', backends: [addr], docroot: dir,
        authorizer: { backends: [addr], scriptFilename: join(dir, 'auth.php'), timeout: '10s' },
      } as RouteConfig],
    })
    const asked = (): string[] => { try { return readFileSync(join(dir, 'asked.log'), 'utf8').split('\n').filter((l) => l !== '') } catch { return [] } }
    // The authorizer works: a client that stays gets its 200.
    const r = await get(`${url}/app.php?q=stays`)
    t.same([r.status, r.body.toString()], [200, 'app yes'])
    t.same(asked(), ['q=stays'])

    const settings = proxy.routes[0].authorizer!
    const headers = { host: 'localhost' }
    const main = {
      id: 1, method: 'GET', url: '/app.php?q=gone', path: '/app.php', query: 'q=gone', httpVersion: '1.1',
      requestHeaders: headers, routeName: '0', env: null,
      client: { address: '127.0.0.1', port: 40000, localAddress: '127.0.0.1', localPort: 80, secure: false },
      req: { httpVersion: '1.1', headers, rawHeaders: ['Host', 'localhost'] },
      res: null,
      signal: AbortSignal.abort(),
    } as unknown as Authorizable
    const outcome = await authorize(main, settings).then((v) => `resolved ${JSON.stringify(v)}`, (err: unknown) => err instanceof ProxyError ? err.code : String(err))
    t.equal(outcome, 'ERR_CLIENT_ABORTED', 'it ends as the client\'s leaving')
    t.equal(settings.pool.backends[0].inflight, 0, 'no backend held')
    // Another request through the same php-cgi: its line comes after any line of the gone one.
    const r2 = await get(`${url}/app.php?q=after`)
    t.equal(r2.status, 200)
    t.same(asked(), ['q=stays', 'q=after'], 'php-cgi never ran the gone client\'s authorization')
  })
}
