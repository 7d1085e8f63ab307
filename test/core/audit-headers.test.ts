/**
 * Header hygiene audit (H5, 2026-12), real requests through proxyServer to a node:http backend
 * that records the raw header lines it got.
 * - `Connection: Host` from a client: the fields `Connection` lists are removed (RFC 9110 §7.6.1),
 *   but Host is not a field one hop may take away from the next (RFC 9112 §3.2: every HTTP/1.1
 *   request carries it). Before this audit the client's Host was dropped and the backend's HTTP
 *   client wrote its own (`127.0.0.1:port`): a client picked the backend's default virtual host
 *   while X-Forwarded-Host still named the one it asked for.
 * - Hop-by-hop fields and the ones `Connection` lists are still removed both ways, in any case and
 *   from several `Connection` lines (regression cover for the above).
 * - A trusted peer's X-Forwarded-For entry is an address only in the form a proxy writes it
 *   (dotted-quad IPv4, IPv6), and is used in its canonical form. Before, ipaddr.js's lenient parse
 *   took `3221225985`, `0300.0.2.1` or `127.1` (inet_aton forms) as addresses and handed them on
 *   raw as REMOTE_ADDR (`3221225985`), and `2001:DB8:0::1` as written; nginx realip stops at them.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

interface Seen { url: string, raw: string[] }

/** Header names (lower-case) and values of a raw list as [name, value] pairs. */
const pairs = (raw: string[]): Array<[string, string]> => raw.flatMap((v, i) => i % 2 === 0 ? [[v.toLowerCase(), raw[i + 1]] as [string, string]] : [])

async function setup (t: Test, hostHeader?: string): Promise<{ port: number, seen: Seen[] }> {
  const seen: Seen[] = []
  const b = await backend(t, (req, res) => {
    seen.push({ url: req.url ?? '', raw: req.rawHeaders })
    if (req.url === '/hop') {
      res.writeHead(200, ['Connection', 'X-Secret, Keep-Alive', 'CONNECTION', 'x-other', 'X-Secret', '1', 'x-other', '2', 'X-Kept', '3',
        'Keep-Alive', 'timeout=5', 'Proxy-Connection', 'keep-alive', 'Upgrade', 'h2c', 'TE', 'trailers', 'Content-Length', '2'])
    }
    res.end('ok')
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [b.address], ...(hostHeader !== undefined ? { hostHeader } : {}) }] })
  return { port, seen }
}

t.test('a Host named in Connection still reaches the backend as the client sent it', async (t) => {
  const { port, seen } = await setup(t)
  for (const conn of ['Host', 'close, HOST', 'x-a, host, close']) {
    seen.length = 0
    const out = await rawRequest(port, `GET /v HTTP/1.1\r\nHost: vhost.example\r\nConnection: ${conn}\r\nX-A: 1\r\n\r\n`, /\r\n\r\nok/)
    t.match(out, /^HTTP\/1\.1 200 /, `Connection: ${conn}`)
    const got = pairs(seen[0]?.raw ?? [])
    t.same(got.filter(([n]) => n === 'host'), [['host', 'vhost.example']], `Connection: ${conn}: the client's Host, once`)
    t.same(got.filter(([n]) => n === 'x-forwarded-host'), [['x-forwarded-host', 'vhost.example']], 'X-Forwarded-Host agrees')
    if (/x-a/.test(conn)) t.notOk(got.some(([n]) => n === 'x-a'), 'another listed field is still removed')
  }
})

t.test('hostHeader backend or a literal still replaces a listed Host', async (t) => {
  const { port, seen } = await setup(t, 'internal.example')
  await rawRequest(port, 'GET /v HTTP/1.1\r\nHost: vhost.example\r\nConnection: host, close\r\n\r\n', /\r\n\r\nok/)
  t.same(pairs(seen[0]?.raw ?? []).filter(([n]) => n === 'host'), [['host', 'internal.example']])
})

t.test('hop-by-hop and Connection-listed fields are removed both ways, any case, several Connection lines', async (t) => {
  const { port, seen } = await setup(t)
  const out = await rawRequest(port, 'GET /hop HTTP/1.1\r\nHost: h\r\nConnection: close, X-Foo\r\nconnection: X-BAR\r\nX-Foo: 1\r\nx-bar: 2\r\nX-Keep: 3\r\n' +
    'TE: trailers\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTrailer: x\r\n\r\n', /\r\n\r\nok/)
  const sent = pairs(seen[0]?.raw ?? []).map(([n]) => n)
  for (const n of ['x-foo', 'x-bar', 'te', 'keep-alive', 'proxy-connection', 'upgrade', 'trailer']) t.notOk(sent.includes(n), `request: ${n} removed`)
  t.ok(sent.includes('x-keep'), 'request: an unlisted field is kept')
  const head = out.slice(0, out.indexOf('\r\n\r\n')).toLowerCase().split('\r\n').map((l) => l.slice(0, l.indexOf(':')))
  for (const n of ['x-secret', 'x-other', 'proxy-connection', 'upgrade', 'te']) t.notOk(head.includes(n), `response: ${n} removed`)
  t.ok(head.includes('x-kept'), 'response: an unlisted field is kept')
})

t.test('a trusted peer\'s X-Forwarded-For: only proper address forms, used in canonical form', async (t) => {
  const docroot = mkdtempSync(join(tmpdir(), 'pc-audit-xff-'))
  t.teardown(() => rmSync(docroot, { recursive: true, force: true }))
  writeFileSync(join(docroot, 'who.sh'), "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"addr=$REMOTE_ADDR\"\n", { mode: 0o755 })
  const { port } = await proxyServer(t, { trustedProxies: ['127.0.0.1'], spawns: { cgi: { socketType: 'pipe' } }, routes: [{ protocol: 'cgi', spawn: 'cgi', docroot }] })
  const who = async (xff: string): Promise<string> => {
    const r = await rawRequest(port, `GET /who.sh HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: ${xff}\r\nConnection: close\r\n\r\n`)
    const at = r.indexOf('addr=')
    return at < 0 ? r.slice(0, r.indexOf('\r\n')) : r.slice(at + 5, r.indexOf('\n', at))
  }
  t.equal(await who('192.0.2.1'), '192.0.2.1', 'a dotted quad is the client')
  t.equal(await who('198.51.100.9, 192.0.2.1'), '192.0.2.1', 'the rightmost untrusted entry')
  t.equal(await who('2001:DB8:0::1'), '2001:db8::1', 'IPv6 in its canonical form')
  t.equal(await who('::ffff:192.0.2.1'), '192.0.2.1', 'IPv4-mapped as plain IPv4')
  for (const odd of ['3221225985', '0300.0.2.1', '127.1', '0x7f.0.0.1', '01.2.3.4']) {
    t.equal(await who(odd), '127.0.0.1', `${odd}: not an address a proxy writes; the walk stops at the peer`)
  }
  t.equal(await who('192.0.2.1, 127.1'), '127.0.0.1', 'nor is such an entry skipped as a trusted hop')
})
