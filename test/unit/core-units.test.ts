/** Pure pieces of the core: addresses, matching, balancers, trust, units, admission, headers. */
import t from 'tap'
import { parseEndpoint } from '../../src/core/endpoint.js'
import { compileMatch } from '../../src/core/router.js'
import { createBalancer, fnv1a } from '../../src/core/balancers.js'
import { TrustedProxies, forwardedChain } from '../../src/core/trust.js'
import { parseDuration, parseSize } from '../../src/config/units.js'
import { Admission } from '../../src/core/admission.js'
import { connectionListed, filterResponseHeaders, validStatus } from '../../src/core/headers.js'
import { parseTarget } from '../../src/core/runtime.js'

t.test('endpoints', async (t) => {
  t.same(parseEndpoint('127.0.0.1:9000'), { kind: 'tcp', host: '127.0.0.1', port: 9000, id: '127.0.0.1:9000' })
  t.same(parseEndpoint('[::1]:80'), { kind: 'tcp', host: '::1', port: 80, id: '[::1]:80' })
  t.same(parseEndpoint('unix:/run/a.sock'), { kind: 'unix', path: '/run/a.sock', id: 'unix:/run/a.sock' })
  t.same(parseEndpoint('/run/b.sock').kind, 'unix')
  for (const bad of ['::1:80', 'host', 'h:0', 'h:70000', 'unix:rel.sock', '[1.2.3.4]:80', `unix:/${'x'.repeat(120)}`]) {
    t.throws(() => parseEndpoint(bad), { name: 'AddressError' }, bad)
  }
  // A URL or a scheme prefix (nginx's proxy_pass, php-fpm habits) is named as such, not as an
  // unbracketed IPv6 address.
  for (const [bad, prefix] of [['tcp:127.0.0.1:9000', 'tcp:'], ['http://127.0.0.1:8080', 'http://'], ['http://localhost', 'http://'], ['fcgi://[::1]:9000', 'fcgi://']]) {
    t.throws(() => parseEndpoint(bad!), { name: 'AddressError', message: `invalid address "${bad!}": no "${prefix!}" prefix: write host:port, [v6]:port or unix:/path (the route's protocol says how to talk to it)` }, bad)
  }
  t.throws(() => parseEndpoint('fe80::1:80'), { message: /IPv6 addresses need brackets/ }, 'an unbracketed IPv6 address is still told to use brackets')
  t.same(parseEndpoint('localhost:9000').id, 'localhost:9000', 'a host name is no scheme')
})

t.test('match predicates', async (t) => {
  const m = (match: object, host: string, path: string, method = 'GET'): boolean => compileMatch(match)({ host, path, method })
  t.ok(m({ host: '*.ex.com' }, 'a.b.ex.com', '/'))
  t.notOk(m({ host: '*.ex.com' }, 'ex.com', '/'))
  t.ok(m({ host: ['a.test', 'B.test'] }, 'b.test', '/'), 'host list, case-insensitive')
  t.ok(m({ prefix: '/api/' }, 'h', '/api'), '/api/ matches /api')
  t.notOk(m({ prefix: '/api/' }, 'h', '/apiary'))
  t.ok(m({ extension: 'PHP' }, 'h', '/a/b.php'))
  t.ok(m({ extension: '.php' }, 'h', '/a.php/info/x'), 'PATH_INFO after the script')
  t.notOk(m({ extension: '.php' }, 'h', '/a.phpx'))
  t.ok(m({ glob: '/s/**/*.css' }, 'h', '/s/a/b%20c.css'), 'glob over the decoded path')
  t.ok(m({ regex: '^/v\\d+/' }, 'h', '/v3/x'))
  t.notOk(m({ methods: ['post'] }, 'h', '/', 'GET'))
  t.ok(m({}, 'h', '/anything'), 'empty match matches all')
  t.notOk(m({ prefix: '/a/', methods: ['GET'] }, 'h', '/a/x', 'PUT'), 'every field must match')
  t.ok(m({ methods: ['GET'] }, 'h', '/', 'HEAD'), 'GET admits HEAD (nginx limit_except GET)')
  t.notOk(m({ methods: ['HEAD'] }, 'h', '/', 'GET'), 'HEAD alone does not admit GET')
  t.notOk(m({ methods: ['POST'] }, 'h', '/', 'HEAD'))
})

t.test('request targets', async (t) => {
  t.same(parseTarget('GET', '/a/b?x=1&y', 'H:80'), { method: 'GET', url: '/a/b?x=1&y', path: '/a/b', query: 'x=1&y', host: 'h' })
  t.same(parseTarget('GET', 'http://Evil.Example:81/p?q', 'a'), { method: 'GET', url: '/p?q', path: '/p', query: 'q', host: 'evil.example', authority: 'Evil.Example:81' })
  t.equal(parseTarget('GET', 'ftp://x/y', 'a'), null)
  t.equal(parseTarget('GET', '[::1]:80/x', 'a'), null)
  t.equal(parseTarget('GET', '/', '[::1]:8080')?.host, '[::1]')
})

t.test('balancers', async (t) => {
  const list = [{ inflight: 0, n: 'a' }, { inflight: 0, n: 'b' }, { inflight: 0, n: 'c' }]
  const all = (): boolean => true
  const key = { url: '/x', client: '1.2.3.4' }
  const rr = createBalancer<typeof list[0]>('round-robin')
  t.same([1, 2, 3, 4].map(() => rr(list, all, key)?.n), ['a', 'b', 'c', 'a'])
  const lc = createBalancer<typeof list[0]>('least-connection')
  list[0].inflight = 3; list[1].inflight = 1; list[2].inflight = 2
  t.equal(lc(list, all, key)?.n, 'b')
  t.equal(lc(list, (b) => b.n !== 'b', key)?.n, 'c')
  const h = createBalancer<typeof list[0]>('hash')
  const first = h(list, all, key)
  t.equal(h(list, all, key), first, 'stable')
  const next = h(list, (b) => b !== first, key)
  t.not(next, first, 'a down backend moves its keys to the next one')
  t.equal(h(list, () => false, key), null)
  t.equal(fnv1a(''), 0x811c9dc5)
  t.equal(fnv1a('a'), 0xe40c292c, 'FNV-1a 32 known vector')
})

t.test('trusted proxies (lighttpd extforward and AC-62 cases)', async (t) => {
  const tp = new TrustedProxies(['127.0.0.1', '127.0.30.1', '::1'])
  t.equal(tp.resolve('10.0.0.1', ['1.2.3.4']), '10.0.0.1', 'untrusted peer: header ignored')
  t.equal(tp.resolve('127.0.0.1', ['127.0.10.1']), '127.0.10.1')
  t.equal(tp.resolve('127.0.0.1', ['127.0.10.1', '127.0.20.1']), '127.0.20.1')
  t.equal(tp.resolve('127.0.0.1', ['127.0.10.1', '127.0.20.1', '127.0.30.1']), '127.0.20.1')
  t.equal(tp.resolve('127.0.0.1', forwardedChain(undefined, 'for=127.0.10.1, for=127.0.20.1;proto=https, for=127.0.30.1', 'forwarded')), '127.0.20.1')
  t.equal(tp.resolve('127.0.0.1', ['garbage', '1.2.3.4']), '1.2.3.4', 'walk stops at the first untrusted entry')
  t.equal(tp.resolve('127.0.0.1', ['1.2.3.4', 'garbage']), '127.0.0.1', 'invalid rightmost entry: keep the peer')
  t.equal(tp.resolve('::1', ['1.2.3.4']), '1.2.3.4', 'IPv6 peer')
  t.ok(new TrustedProxies(['10.0.0.0/8']).has('::ffff:10.1.2.3'), 'v4-mapped addresses')
  t.same(forwardedChain(undefined, 'for="[2001:db8::1]:4711", for=192.0.2.60:80', 'forwarded'), ['2001:db8::1', '192.0.2.60'])
  t.throws(() => new TrustedProxies(['not-an-ip']))
})

t.test('units', async (t) => {
  t.equal(parseDuration('250ms'), 250)
  t.equal(parseDuration('60s'), 60_000)
  t.equal(parseDuration('1.5m'), 90_000)
  t.equal(parseDuration(42), 42)
  t.equal(parseDuration('soon'), null)
  t.equal(parseSize('64KiB'), 65536)
  t.equal(parseSize('256MiB'), 256 * 1024 * 1024)
  t.equal(parseSize('10MB'), 10_000_000)
  t.equal(parseSize('1gib'), 1024 ** 3)
  t.equal(parseSize('lots'), null)
})

t.test('admission hands a freed slot to the next waiter', async (t) => {
  const a = new Admission(1, 1, 0)
  t.ok(a.tryAcquire())
  t.notOk(a.tryAcquire())
  const ac = new AbortController()
  const waiting = a.acquire(ac.signal)
  await t.rejects(a.acquire(ac.signal), { code: 'ERR_QUEUE_FULL' })
  a.release()
  await waiting
  t.equal(a.active, 1, 'slot passed on, not freed')
  a.release()
  t.equal(a.active, 0)
  const ac2 = new AbortController()
  t.ok(a.tryAcquire())
  const aborted = a.acquire(ac2.signal)
  ac2.abort()
  await t.rejects(aborted, { code: 'ERR_CLIENT_ABORTED' })
  t.equal(a.queued, 0, 'an aborted waiter leaves the queue')
})

t.test('response headers', async (t) => {
  t.same([...(connectionListed(',close, X-A ,, ') ?? [])], ['close', 'x-a'], 'lighttpd comma variants')
  const out = filterResponseHeaders(['Connection', 'x-a', 'X-A', '1', 'Keep-Alive', '5', 'Content-Type', 'text/plain', 'Transfer-Encoding', 'chunked'], 200, null, '1.1')
  t.same(out, ['Content-Type', 'text/plain'])
  t.same(filterResponseHeaders(['Connection', 'upgrade', 'Upgrade', 'websocket'], 101, null, '1.1'), ['Connection', 'upgrade', 'Upgrade', 'websocket'], '101 keeps its upgrade fields')
  t.ok(validStatus(599))
  t.notOk(validStatus(999))
  t.notOk(validStatus(99))
})
