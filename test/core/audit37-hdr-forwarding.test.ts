/**
 * Forwarding fields a client sends itself, as an HTTP backend sees them. From an untrusted peer
 * (not in `trustedProxies`), X-Forwarded-Proto/Host were replaced but a client's own `Forwarded`
 * element was kept ahead of proxycore's (a backend reading the first element, as Spring does, took
 * the client's `proto=https;host=evil`), and `X-Real-IP`, `X-Forwarded-Port`, `X-Forwarded-Prefix`
 * and `X-Forwarded-Server` passed untouched, read by backends as a front proxy's. Now, from an
 * untrusted peer: those four are dropped (with `xForwarded`, the default, as Traefik drops them),
 * and `Forwarded` is proxycore's element alone (with `forwarded`). A trusted peer keeps them all,
 * its `Forwarded` ahead of ours, as before; with the options off, nothing is touched.
 */
import type { IncomingHttpHeaders } from 'node:http'
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, get, proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

const SPOOF = {
  'x-real-ip': '6.6.6.6',
  'x-forwarded-port': '443',
  'x-forwarded-prefix': '/evil',
  'x-forwarded-server': 'evil.example',
  forwarded: 'for=6.6.6.6;proto=https;host=evil.example',
}

async function echo (t: { teardown (fn: () => void | Promise<void>): void }): Promise<{ address: string, seen: IncomingHttpHeaders[], raw: string[][] }> {
  const seen: IncomingHttpHeaders[] = []
  const raw: string[][] = []
  const be = await backend(t, (req, res) => { seen.push(req.headers); raw.push(req.rawHeaders); res.end('ok') })
  return { address: be.address, seen, raw }
}

t.test('an untrusted peer: its X-Real-IP, X-Forwarded-Port/-Prefix/-Server and Forwarded are not passed on', async (t) => {
  const be = await echo(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], forwarded: true }] })
  const r = await get(`http://127.0.0.1:${port}/x`, { headers: { ...SPOOF, 'x-keep': 'yes' } })
  t.equal(r.status, 200)
  const h = be.seen[0] ?? {}
  t.equal(h['x-real-ip'], undefined)
  t.equal(h['x-forwarded-port'], undefined)
  t.equal(h['x-forwarded-prefix'], undefined)
  t.equal(h['x-forwarded-server'], undefined)
  t.equal(h.forwarded, `for=127.0.0.1;proto=http;host="127.0.0.1:${port}"`, 'proxycore\'s element alone')
  t.equal(h['x-forwarded-for'], '127.0.0.1')
  t.equal(h['x-keep'], 'yes', 'any other field passes')

  // In any spelling, repeated, and folded into one list: none of them gets through.
  const raw = await rawRequest(port, 'GET /y HTTP/1.1\r\nHost: a.example\r\nX-REAL-IP: 6.6.6.6\r\nx-real-ip: 7.7.7.7\r\nX-Forwarded-PORT: 1\r\nX-Forwarded-Prefix: /a\r\nx-forwarded-server: s\r\nFORWARDED: for=1.1.1.1\r\nForwarded: proto=https\r\nConnection: close\r\n\r\n')
  t.match(raw, /^HTTP\/1\.1 200 /)
  const names = (be.raw[1] ?? []).filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
  for (const n of ['x-real-ip', 'x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-server']) t.notOk(names.includes(n), `${n} dropped`)
  t.equal(names.filter((n) => n === 'forwarded').length, 1, 'one Forwarded field')
  t.equal(be.seen[1]?.forwarded, 'for=127.0.0.1;proto=http;host=a.example')
})

t.test('a trusted peer keeps them all, its Forwarded ahead of proxycore\'s element', async (t) => {
  const be = await echo(t)
  const { port } = await proxyServer(t, { trustedProxies: ['127.0.0.1'], routes: [{ protocol: 'http', backends: [be.address], forwarded: true }] })
  const r = await get(`http://127.0.0.1:${port}/x`, { headers: SPOOF })
  t.equal(r.status, 200)
  const h = be.seen[0] ?? {}
  t.equal(h['x-real-ip'], '6.6.6.6')
  t.equal(h['x-forwarded-port'], '443')
  t.equal(h['x-forwarded-prefix'], '/evil')
  t.equal(h['x-forwarded-server'], 'evil.example')
  t.equal(h.forwarded, `for=6.6.6.6;proto=https;host=evil.example, for=127.0.0.1;proto=http;host="127.0.0.1:${port}"`)
})

t.test('with xForwarded and forwarded off, a client\'s fields pass untouched', async (t) => {
  const be = await echo(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], xForwarded: false, forwarded: false }] })
  const r = await get(`http://127.0.0.1:${port}/x`, { headers: SPOOF })
  t.equal(r.status, 200)
  const h = be.seen[0] ?? {}
  for (const [k, v] of Object.entries(SPOOF)) t.equal(h[k], v, `${k} as sent`)
  t.equal(h['x-forwarded-for'], undefined)
})
