/**
 * Audit (H7): a backend address whose host is neither an IP address nor a host name is refused at
 * load, for every protocol, with the address error (ERR_CONFIG at /routes/N/backends/M).
 *
 * Before: endpoint.ts took any text before the last `:` as the host. `my host:9000`, `h<TAB>:80` or
 * `user@127.0.0.1:PORT` loaded for fastcgi and scgi, and every request then failed at connect
 * (a DNS lookup of the text: 502 ERR_CONNECT_FAILED, the backend disabled); for http, `my host`
 * was refused with undici's "Invalid URL", and `user@127.0.0.1:PORT` was taken by the URL parser
 * as userinfo, so http connected to 127.0.0.1 while fastcgi looked up "user@127.0.0.1": one
 * address, two meanings.
 */
import t from 'tap'
import { createProxy, silentLogger, type Proxy } from '../../src/index.js'
import { parseEndpoint } from '../../src/core/endpoint.js'
import { guardLeaks } from '../helpers/leaks.js'

guardLeaks(t)

const BAD = ['my host:9000', 'h\t:80', 'user@127.0.0.1:9000', 'a..b:80', '-lead.example:80', 'x_{y}:80', `${'a'.repeat(64)}.example:80`, `${'a.'.repeat(127)}b:80`]
const GOOD: Array<[string, string]> = [
  ['localhost:9000', 'localhost'],
  ['php_fpm:9000', 'php_fpm'],
  ['app-1.internal.example:8080', 'app-1.internal.example'],
  ['localhost.:9000', 'localhost.'],
  ['127.0.0.1:80', '127.0.0.1'],
  ['[::1]:80', '::1'],
  [`${'a'.repeat(63)}.example:80`, `${'a'.repeat(63)}.example`],
]

t.test('parseEndpoint refuses a host that is no IP address and no host name', async (t) => {
  for (const bad of BAD) {
    t.throws(() => parseEndpoint(bad), { name: 'AddressError', message: /not an IP address or a host name/ }, JSON.stringify(bad))
  }
  for (const [good, host] of GOOD) {
    const e = parseEndpoint(good)
    t.equal(e.kind === 'tcp' ? e.host : null, host, good)
  }
})

for (const protocol of ['fastcgi', 'scgi', 'http']) {
  t.test(`${protocol}: createProxy refuses such an address at load, naming it`, async (t) => {
    for (const bad of BAD) {
      let proxy: Proxy | null = null
      const err = await createProxy({ logger: silentLogger, routes: [{ protocol, backends: [bad], docroot: '/tmp' }] }).then((p) => { proxy = p; return null }, (e: unknown) => e as Error & { code?: string })
      if (proxy !== null) await (proxy as Proxy).close(100)
      t.ok(err !== null, `${JSON.stringify(bad)} refused`)
      if (err === null) continue
      t.equal(err.code, 'ERR_CONFIG')
      t.match(err.message, '/routes/0/backends/0', 'at the address')
      // A value over 80 characters is quoted bounded (core/errors.ts boundValues); `found` keeps it whole.
      const named = bad.length > 80 ? `invalid address "${bad.slice(0, 80)}…" (${bad.length - 80} more)` : `invalid address ${JSON.stringify(bad)}`
      t.match(err.message, named, 'named')
      t.equal((err as Error & { issues?: Array<{ found?: unknown }> }).issues?.[0]?.found, bad, 'the issue keeps the whole value')
    }
    for (const [good] of GOOD) {
      const p = await createProxy({ logger: silentLogger, routes: [{ protocol, backends: [good], docroot: '/tmp' }] })
      t.equal(p.routes[0].pool.backends.length, 1, `${good} loads`)
      await p.close(100)
    }
  })
}
