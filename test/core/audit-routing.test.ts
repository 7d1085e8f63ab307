/**
 * Routing audit (H5, 2026-12): real requests through proxyServer to node:http backends, each
 * backend naming the route that reached it.
 * - An IPv6 literal Host is routed on its canonical form (RFC 5952, as WHATWG URL writes it):
 *   `[0:0::1]` and `[0000::0001]:99` are the `[::1]` a `match.host: ::1` names. Before, only the
 *   one spelling matched, and another spelling of the same address fell through to the next route.
 */
import t, { type Test } from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'
import { ConfigError, createProxy, silentLogger } from '../../src/index.js'

guardLeaks(t)

async function namedBackends (t: Test, names: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const n of names) {
    const b = await backend(t, (_req, res) => { res.setHeader('x-route', n); res.end('ok') })
    out[n] = b.address
  }
  return out
}

/** The route that answered a raw request (its backend's x-route), or the status line when none did. */
async function routeOf (port: number, head: string): Promise<string> {
  const out = await rawRequest(port, head)
  return /\r\nx-route: (\S+)/i.exec(out)?.[1] ?? out.slice(0, out.indexOf('\r\n'))
}

const req = (host: string, path = '/'): string => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`

t.test('an IPv6 literal Host is routed in its canonical form, whatever its spelling', async (t) => {
  const b = await namedBackends(t, ['loop6', 'doc6', 'other'])
  const { port } = await proxyServer(t, {
    routes: [
      { name: 'loop6', match: { host: '::1' }, protocol: 'http', backends: [b.loop6] },
      { name: 'doc6', match: { host: '[2001:DB8:0:0::0:1]' }, protocol: 'http', backends: [b.doc6] },
      { name: 'other', protocol: 'http', backends: [b.other] },
    ],
  })
  t.equal(await routeOf(port, req('[::1]')), 'loop6')
  t.equal(await routeOf(port, req('[::1]:99')), 'loop6')
  t.equal(await routeOf(port, req('[0:0::1]')), 'loop6', 'zeros written out')
  t.equal(await routeOf(port, req('[0000:0000:0000:0000:0000:0000:0000:0001]:99')), 'loop6', 'every group written')
  t.equal(await routeOf(port, req('[2001:db8::1]')), 'doc6', 'a route written in a long form matches the short one')
  t.equal(await routeOf(port, req('[2001:0DB8::0001]:8443')), 'doc6', 'upper case and leading zeros')
  t.equal(await routeOf(port, 'GET http://[0::1]:99/x HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n'), 'loop6', 'absolute-form authority')
  t.equal(await routeOf(port, req('[::2]')), 'other', 'another address is another host')
  t.equal(await routeOf(port, req('[::1')), 'HTTP/1.1 400 Bad Request', 'an unclosed literal is refused')
})

/*
 * A `match.regex` is run by V8's backtracking engine on a path the client chose. One whose
 * repeated group itself repeats, alternates or refers back (`(a+)+`, `(a|a)*`, `(x\1)*`) takes
 * time exponential in the path's length: before this audit `^/re/(a+)+$` held the event loop for
 * seconds on `/re/aaaaaaaaaaaaaaaaaaaaaaaaaaa!` (9 s on the audit box), every other request
 * waiting. Such a regex is now refused at load, with its path in the config.
 */
t.test('a regex with catastrophic backtracking is refused at load; ordinary ones still load', async (t) => {
  const hazards = ['^/re/(a+)+$', '^/(a|a)*$', '^/((ab)*c)*$', '^/(?:x\\d*){2,}', '^/(a|ab)+x', '(?<n>a)(\\k<n>b)+', '^/(\\w+\\.)*php$']
  for (const regex of hazards) {
    const err = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: ['127.0.0.1:1'], match: { regex } }] }).then(async (p) => { await p.close(0); return null }, (e: unknown) => e)
    t.ok(err instanceof ConfigError, `${regex} refused`)
    const issue = (err as ConfigError | null)?.issues[0]
    t.equal(issue?.path, '/routes/0/match/regex', `${regex}: the issue names the field`)
    t.match(issue?.message ?? '', /backtrack/, `${regex}: the issue says why`)
  }
  for (const regex of ['^/$', '^/v[0-9]+/', '^/(blog/?)?$', '^/(index\\.html|style\\.css)?$', '^/(?:a|b)/x+$', '^/[(a+)+]*$', '^/\\(a+\\)+$', '\\.php$']) {
    const p = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: ['127.0.0.1:1'], match: { regex } }] })
    await p.close(0)
    t.pass(`${regex} loads`)
  }
})
