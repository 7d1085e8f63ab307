/**
 * Request header hygiene against spoofing: which forwarding header a trusted peer is believed for
 * (one, nginx `real_ip_header`), and header names with an underscore, which WSGI/Rack/PHP backends
 * fold into the same HTTP_X_FORWARDED_* key as the dashed name (nginx `underscores_in_headers off`).
 * Real node:http backends, a raw-socket client so the exact header bytes reach the proxy.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'
import { forwardedChain, TrustedProxies } from '../../src/core/trust.js'

guardLeaks(t)

interface Tap { teardown (fn: () => void | Promise<void>): void }

/** A backend that records the raw header list of every request it gets. */
async function recorder (t: Tap) {
  const seen: string[][] = []
  const be = await backend(t, (req: IncomingMessage, res) => { seen.push(req.rawHeaders); req.resume(); res.end('ok') })
  return { ...be, seen }
}

const send = (port: number, headers: string): Promise<string> =>
  rawRequest(port, `GET /x HTTP/1.1\r\nHost: a.example\r\n${headers}Connection: close\r\n\r\n`)

t.test('a trusted peer is believed for X-Forwarded-For only: a client\'s Forwarded is ignored', async (t) => {
  const be = await recorder(t)
  // The front proxy on 127.0.0.1 appends X-Forwarded-For (nginx $proxy_add_x_forwarded_for) and
  // passes everything else through, including a Forwarded header the client wrote itself.
  const { proxy, port } = await proxyServer(t, { trustedProxies: ['127.0.0.1'], routes: [{ protocol: 'http', backends: [be.address] }] })
  const clients: string[] = []
  const onStart = (e: { client: string }): void => { clients.push(e.client) }
  proxy.events.on('request:start', onStart)
  t.teardown(() => { proxy.events.off('request:start', onStart) })
  const cases: Array<[string, string, string]> = [
    ['X-Forwarded-For: 203.0.113.7\r\n', '203.0.113.7', 'X-Forwarded-For from the trusted peer'],
    ['X-Forwarded-For: 203.0.113.7\r\nForwarded: for=10.0.0.1\r\n', '203.0.113.7', 'client-supplied Forwarded does not override X-Forwarded-For'],
    ['Forwarded: for=10.0.0.1\r\nX-Forwarded-For: 203.0.113.7\r\n', '203.0.113.7', 'nor does it when it comes first'],
    ['Forwarded: for=10.0.0.1\r\n', '127.0.0.1', 'Forwarded alone is not read: the client is the peer'],
    ['X-Forwarded-For: 10.0.0.1, 203.0.113.7\r\n', '203.0.113.7', 'right to left: the client-written left part is not believed'],
  ]
  for (const [headers, want, name] of cases) {
    const r = await send(port, headers)
    t.match(r, /^HTTP\/1\.1 200 /, `${name}: 200`)
    t.equal(clients.at(-1), want, name)
  }
  t.equal(clients.length, cases.length)
})

t.test('Forwarded is read only when chosen, and then X-Forwarded-For is not', async (t) => {
  t.equal(new TrustedProxies(['127.0.0.1']).header, 'x-forwarded-for', 'default header')
  const tp = new TrustedProxies(['127.0.0.1'], 'forwarded')
  t.equal(tp.header, 'forwarded')
  t.equal(tp.resolve('127.0.0.1', forwardedChain('10.0.0.1', 'for=203.0.113.7;proto=https', tp.header)), '203.0.113.7')
  t.equal(tp.resolve('127.0.0.1', forwardedChain('10.0.0.1', undefined, tp.header)), '127.0.0.1', 'X-Forwarded-For alone is not read')
  t.same(forwardedChain(undefined, 'for="[2001:db8::1]:4711", for=192.0.2.60:80', 'forwarded'), ['2001:db8::1', '192.0.2.60'])
  t.same(forwardedChain('192.0.2.1, 192.0.2.2', 'for=10.0.0.1'), ['192.0.2.1', '192.0.2.2'], 'default: X-Forwarded-For')
  t.same(forwardedChain(undefined, 'for=10.0.0.1'), [], 'default: Forwarded ignored')
})

t.test('header names with an underscore are not forwarded to HTTP backends', async (t) => {
  const be = await recorder(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const r = await send(port, 'X_Forwarded_Host: evil.example\r\nX_Forwarded_Proto: https\r\nX_Forwarded_For: 10.0.0.1\r\nX-Real_IP: 10.0.0.1\r\nMy_Header: 1\r\nX-Kept: yes\r\n')
  t.match(r, /^HTTP\/1\.1 200 /)
  t.equal(be.seen.length, 1)
  const raw = be.seen[0]
  const names = raw.filter((_, i) => i % 2 === 0)
  t.same(names.filter((n) => n.includes('_')), [], 'no underscore name reaches the backend')
  const value = (n: string): string[] => raw.filter((_, i) => i % 2 === 1 && raw[i - 1].toLowerCase() === n)
  t.same(value('x-forwarded-host'), ['a.example'], 'X-Forwarded-Host is proxycore\'s alone')
  t.same(value('x-forwarded-proto'), ['http'])
  t.same(value('x-forwarded-for'), ['127.0.0.1'])
  t.same(value('x-kept'), ['yes'], 'other end-to-end headers pass')
})

t.test('nor to an Upgrade backend', async (t) => {
  const seen: string[][] = []
  const be = await backend(t, (_req, res) => res.end())
  be.server.on('upgrade', (req: IncomingMessage, socket) => {
    seen.push(req.rawHeaders)
    socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n')
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const r = await rawRequest(port, 'GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: test\r\nX_Forwarded_Host: evil.example\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 101 /)
  t.equal(seen.length, 1)
  t.same(seen[0].filter((n, i) => i % 2 === 0 && n.includes('_')), [], 'no underscore name in the upgrade request')
  t.same(seen[0].filter((_, i) => i % 2 === 1 && seen[0][i - 1].toLowerCase() === 'x-forwarded-host'), ['a.example'])
})

t.test('forwardedHeader: forwarded reads Forwarded (for= and proto=) and ignores X-Forwarded-*', async (t) => {
  const docroot = mkdtempSync(join(tmpdir(), 'pc-fwd-'))
  t.teardown(() => rmSync(docroot, { recursive: true, force: true }))
  writeFileSync(join(docroot, 'who.sh'), "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"addr=$REMOTE_ADDR scheme=$REQUEST_SCHEME https=${HTTPS:-off}\"\n", { mode: 0o755 })
  const cgi = { spawns: { cgi: { socketType: 'pipe' as const } }, routes: [{ protocol: 'cgi', spawn: 'cgi', docroot }] }
  const xff = await proxyServer(t, { trustedProxies: ['127.0.0.1'], ...cgi })
  const who = async (port: number, headers: string): Promise<string> => {
    const r = await rawRequest(port, `GET /who.sh HTTP/1.1\r\nHost: a.example\r\n${headers}Connection: close\r\n\r\n`)
    return r.slice(r.indexOf('addr='), r.indexOf('\n', r.indexOf('addr=')))
  }
  t.equal(await who(xff.port, 'X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n'), 'addr=203.0.113.7 scheme=https https=on')
  t.equal(await who(xff.port, 'X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https, http\r\n'), 'addr=203.0.113.7 scheme=http https=off',
    'the rightmost X-Forwarded-Proto is our peer\'s; the left part may be the client\'s')
  const fwd = await proxyServer(t, { trustedProxies: ['127.0.0.1'], forwardedHeader: 'forwarded', ...cgi })
  t.equal(await who(fwd.port, 'Forwarded: for=10.9.9.9;proto=http, for=203.0.113.7;proto=https\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n'), 'addr=203.0.113.7 scheme=https https=on')
  t.equal(await who(fwd.port, 'X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n'), 'addr=127.0.0.1 scheme=http https=off', 'X-Forwarded-* alone are not read')
})

t.test('absolute-form targets and Host values: one host for the route, the backend and its headers', async (t) => {
  const a = await recorder(t)
  const b = await recorder(t)
  const { port } = await proxyServer(t, {
    routes: [
      { match: { host: ['a.example'] }, protocol: 'http', backends: [a.address] },
      { protocol: 'http', backends: [b.address] },
    ],
  })
  const value = (raw: string[], n: string): string[] => raw.filter((_, i) => i % 2 === 1 && raw[i - 1].toLowerCase() === n)
  const r = await rawRequest(port, 'GET http://a.example/h/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 200 /)
  t.equal(a.seen.length, 1, 'the target\'s authority chose the route (RFC 9112 §3.2.2)')
  t.same([value(a.seen[0], 'host'), value(a.seen[0], 'x-forwarded-host')], [['a.example'], ['a.example']], 'and the backend is told the same host')
  for (const bad of ['GET http://a.example:1@b.example/ HTTP/1.1\r\nHost: b.example\r\n', 'GET / HTTP/1.1\r\nHost: a.example:1@b.example\r\n', 'GET / HTTP/1.1\r\nHost: a b\r\n']) {
    t.match(await rawRequest(port, `${bad}Connection: close\r\n\r\n`), /^HTTP\/1\.1 400 /, `400: ${bad.split('\r\n').join(' | ')}`)
  }
  t.match(await rawRequest(port, 'GET / HTTP/1.1\r\nHost: a.example.\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 /)
  t.equal(a.seen.length, 2, 'a trailing dot names the same host')
  t.equal(b.seen.length, 0)
})
