/**
 * Request routing and request-target handling: trusted proxies written as IPv4-mapped
 * IPv6, route hosts in another spelling than the request's, the stripPrefix mapping back of
 * Location and Set-Cookie, and `OPTIONS *` on an HTTP route. Real node:http backends that echo
 * what they received; a raw-socket client so the exact request bytes reach the proxy.
 */
import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'
import { createProxy, silentLogger } from '../../src/index.js'
import { TrustedProxies } from '../../src/core/trust.js'

guardLeaks(t)

interface Tap { teardown (fn: () => void | Promise<void>): void }

/**
 * A backend that echoes the request-target and raw headers it got. `/redir<path>` answers 302 with
 * `Location: <path>` and cookies with `Path=<path>` and its own address as Domain; `/abs<path>`
 * answers 302 with an absolute Location built from the Host it was sent.
 */
async function echo (t: Tap) {
  const seen: Array<{ url: string, raw: string[] }> = []
  const be = await backend(t, (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? ''
    seen.push({ url, raw: req.rawHeaders })
    req.resume()
    if (url.startsWith('/redir')) {
      const to = url.slice(6) === '' ? '/' : url.slice(6)
      res.statusCode = 302
      res.setHeader('location', to)
      res.setHeader('set-cookie', [`a=1; Path=${to}; HttpOnly`, 'b=2; Domain=127.0.0.1; Path=/'])
    } else if (url.startsWith('/abs')) {
      res.statusCode = 302
      res.setHeader('location', `http://${req.headers.host ?? ''}${url.slice(4)}`)
      res.setHeader('content-location', 'http://elsewhere.example/y')
    }
    res.end(JSON.stringify({ url, raw: req.rawHeaders }))
  })
  return { ...be, seen }
}

interface Reply { status: number, head: string, headers: Array<[string, string]>, body: string }

async function send (port: number, head: string): Promise<Reply> {
  const out = await rawRequest(port, `${head}\r\nConnection: close\r\n\r\n`)
  const at = out.indexOf('\r\n\r\n')
  const lines = out.slice(0, at).split('\r\n')
  const headers = lines.slice(1).map((l): [string, string] => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()])
  return { status: Number(out.slice(9, 12)), head: out.slice(0, at), headers, body: out.slice(at + 4) }
}

const all = (r: Reply, name: string): string[] => r.headers.filter(([n]) => n === name).map(([, v]) => v)
const one = (r: Reply, name: string): string | undefined => all(r, name)[0]

t.test('trustedProxies: an IPv4-mapped entry trusts the IPv4 peer it names', async (t) => {
  // A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d, so operators copy that form.
  const tp = new TrustedProxies(['::ffff:10.0.0.5', '::ffff:192.168.0.0/112'])
  t.ok(tp.has('10.0.0.5'), 'plain IPv4 peer')
  t.ok(tp.has('::ffff:10.0.0.5'), 'mapped peer')
  t.ok(tp.has('192.168.4.9'), 'mapped CIDR /112 is 192.168.0.0/16')
  t.notOk(tp.has('192.169.0.1'), 'outside the CIDR')
  t.notOk(tp.has('10.0.0.6'), 'another address')
  t.notOk(new TrustedProxies(['::/0']).has('10.0.0.5'), 'a wide IPv6 range is not widened to IPv4')
  t.ok(new TrustedProxies(['::/0']).has('2001:db8::1'))

  for (const entry of ['::ffff:127.0.0.1', '::ffff:127.0.0.0/104']) {
    const be = await echo(t)
    const { proxy, port } = await proxyServer(t, { trustedProxies: [entry], routes: [{ protocol: 'http', backends: [be.address] }] })
    const clients: string[] = []
    const onStart = (e: { client: string }): void => { clients.push(e.client) }
    proxy.events.on('request:start', onStart)
    t.teardown(() => { proxy.events.off('request:start', onStart) })
    const r = await send(port, 'GET /x HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https')
    t.equal(r.status, 200, entry)
    t.equal(clients.at(-1), '203.0.113.7', `${entry}: the client address comes from the trusted peer's X-Forwarded-For`)
    const raw = be.seen.at(-1)?.raw ?? []
    const proto = raw.filter((_, i) => i % 2 === 1 && raw[i - 1].toLowerCase() === 'x-forwarded-proto')
    t.same(proto, ['https'], `${entry}: the trusted peer's X-Forwarded-Proto is kept`)
  }
})

t.test('route hosts are compared in the request host\'s form; a host with a port is a config error', async (t) => {
  const be = await echo(t)
  const { proxy, port } = await proxyServer(t, {
    routes: [
      { name: 'dot', match: { host: 'Dot.Example.' }, protocol: 'http', backends: [be.address] },
      { name: 'wild', match: { host: ['*.Wild.Example.'] }, protocol: 'http', backends: [be.address] },
      { name: 'v6', match: { host: '::1' }, protocol: 'http', backends: [be.address] },
      { name: 'v6b', match: { host: '[::2]' }, protocol: 'http', backends: [be.address] },
      { name: 'any', protocol: 'http', backends: [be.address] },
    ],
  })
  const routes: string[] = []
  const onStart = (e: { route: string }): void => { routes.push(e.route) }
  proxy.events.on('request:start', onStart)
  t.teardown(() => { proxy.events.off('request:start', onStart) })
  const cases: Array<[string, string, string]> = [
    ['GET /x HTTP/1.1\r\nHost: dot.example', 'dot', 'lower-case, no trailing dot'],
    ['GET /x HTTP/1.1\r\nHost: DOT.example.:8080', 'dot', 'upper-case, trailing dot and port'],
    ['GET http://dot.example/x HTTP/1.1\r\nHost: other.example', 'dot', 'absolute-form authority'],
    ['GET /x HTTP/1.1\r\nHost: a.wild.example', 'wild', 'wildcard'],
    ['GET /x HTTP/1.1\r\nHost: wild.example', 'any', 'a wildcard does not match its own domain'],
    ['GET /x HTTP/1.1\r\nHost: [::1]:8080', 'v6', 'bare IPv6 literal in the config'],
    ['GET /x HTTP/1.1\r\nHost: [::2]', 'v6b', 'bracketed IPv6 literal in the config'],
    ['GET /x HTTP/1.1\r\nHost: other.example', 'any', 'no host route'],
  ]
  for (const [head, want, name] of cases) {
    const r = await send(port, head)
    t.equal(r.status, 200, name)
    t.equal(routes.at(-1), want, name)
  }
  t.equal(routes.length, cases.length)

  for (const [host, path] of [['a.example:8080', '/routes/0/match/host'], [['x.example', '[::1]:80'], '/routes/0/match/host/1']] as const) {
    await t.rejects(createProxy({ logger: silentLogger, routes: [{ match: { host: host as string | string[] }, protocol: 'http', backends: [be.address] }] }),
      { name: 'ConfigError', issues: [{ path }] }, `${JSON.stringify(host)}: a port in a route host is refused at load`)
  }
})

t.test('stripPrefix: the backend\'s paths come back under the prefix, on a segment boundary', async (t) => {
  const be = await echo(t)
  const { port } = await proxyServer(t, {
    routes: [
      { name: 'app', match: { prefix: '/app' }, protocol: 'http', backends: [be.address], stripPrefix: true },
      { name: 'api', match: { prefix: '/api/' }, protocol: 'http', backends: [be.address], stripPrefix: true },
    ],
  })
  for (const prefix of ['/app', '/api']) {
    const r = await send(port, `GET ${prefix}/redir/x/y HTTP/1.1\r\nHost: a.example`)
    t.equal(r.status, 302, prefix)
    t.equal(be.seen.at(-1)?.url, '/redir/x/y', `${prefix}: the backend gets the path without the prefix`)
    t.equal(one(r, 'location'), `${prefix}/x/y`, `${prefix}: Location /x/y is ${prefix}/x/y`)
    t.same(all(r, 'set-cookie'), [`a=1; Path=${prefix}/x/y; HttpOnly`, `b=2; Domain=a.example; Path=${prefix}/`], `${prefix}: cookie Path and Domain`)
    const root = await send(port, `GET ${prefix}/redir HTTP/1.1\r\nHost: a.example`)
    t.equal(one(root, 'location'), `${prefix}/`, `${prefix}: Location / is ${prefix}/`)
  }
})

t.test('stripPrefix: absolute Locations naming the Host the backend was sent map back; others are left alone', async (t) => {
  const be = await echo(t)
  const { port } = await proxyServer(t, {
    routes: [
      { name: 'lit', match: { prefix: '/lit/' }, protocol: 'http', backends: [be.address], stripPrefix: true, hostHeader: 'Internal.Example' },
      { name: 'own', match: { prefix: '/own/' }, protocol: 'http', backends: [be.address], stripPrefix: true, hostHeader: 'backend' },
      { name: 'pre', match: { prefix: '/pre/' }, protocol: 'http', backends: [be.address], stripPrefix: true },
    ],
  })
  const cases: Array<[string, string, string]> = [
    ['GET /lit/abs/x HTTP/1.1\r\nHost: a.example', '/lit/x', 'literal hostHeader: the internal name never reaches the client'],
    ['GET /own/abs/x HTTP/1.1\r\nHost: a.example', '/own/x', 'hostHeader backend: the backend address'],
    ['GET /pre/abs/x HTTP/1.1\r\nHost: a.example:8080', '/pre/x', 'preserve: the client\'s own host and port'],
  ]
  for (const [head, want, name] of cases) {
    const r = await send(port, head)
    t.equal(r.status, 302, name)
    t.equal(one(r, 'location'), want, name)
    t.equal(one(r, 'content-location'), 'http://elsewhere.example/y', `${name}: another host is left alone`)
  }

  // The cookie Domain naming the backend becomes the client's host, an IPv6 literal whole.
  const v6 = await send(port, 'GET /pre/redir/x HTTP/1.1\r\nHost: [::1]:8080')
  t.same(all(v6, 'set-cookie'), ['a=1; Path=/pre/x; HttpOnly', 'b=2; Domain=[::1]; Path=/pre/'], 'IPv6 Host: Domain is [::1], not "["')
})

t.test('OPTIONS * on an HTTP route is a 400 ERR_BAD_REQUEST, never a 502 blaming the backend', async (t) => {
  const be = await echo(t)
  const { proxy, port } = await proxyServer(t, { routes: [{ name: 'any', protocol: 'http', backends: [be.address] }] })
  const ends: Array<{ status: number, error: string | null, route: string }> = []
  const onEnd = (e: { status: number, error: string | null, route: string }): void => { ends.push(e) }
  proxy.events.on('request:end', onEnd)
  t.teardown(() => { proxy.events.off('request:end', onEnd) })
  const r = await send(port, 'OPTIONS * HTTP/1.1\r\nHost: a.example')
  t.equal(r.status, 400)
  t.match(r.body, /ERR_BAD_REQUEST/)
  t.equal(be.seen.length, 0, 'the backend was not asked')
  t.match(ends.at(-1), { status: 400, error: 'ERR_BAD_REQUEST', route: 'any' })
  const up = await send(port, 'OPTIONS * HTTP/1.1\r\nHost: a.example\r\nConnection: upgrade\r\nUpgrade: websocket')
  t.equal(up.status, 400, 'an Upgrade request to * too')
  const ok = await send(port, 'OPTIONS /x HTTP/1.1\r\nHost: a.example')
  t.equal(ok.status, 200, 'OPTIONS on a path is forwarded')
  t.equal(be.seen.at(-1)?.url, '/x')
})
