/**
 * Audit: `stripPrefix` with a prefix a client can only send percent-encoded (`/café/`, `/a b/`).
 * The router matches the decoded path, so such a route was chosen, but the prefix was then left
 * on the upstream path (`/caf%C3%A9/x` reached the backend whole) and the Location rewrite put
 * the decoded prefix into the header (`/café/x`, a byte 0xE9 on the wire, not a URL).
 */
import t, { type Test } from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

async function setup (t: Test): Promise<{ port: number, seen: string[] }> {
  const seen: string[] = []
  const b = await backend(t, (req, res) => {
    seen.push(req.url ?? '')
    if (req.url === '/go') { res.writeHead(302, { Location: '/there' }); res.end(); return }
    res.end('ok')
  })
  const { port } = await proxyServer(t, {
    routes: [
      { name: 'cafe', protocol: 'http', backends: [b.address], match: { prefix: '/café/' }, stripPrefix: true },
      { name: 'space', protocol: 'http', backends: [b.address], match: { prefix: '/a b' }, stripPrefix: true },
      { name: 'ascii', protocol: 'http', backends: [b.address], match: { prefix: '/api/' }, stripPrefix: true },
    ],
  })
  return { port, seen }
}

async function send (port: number, path: string): Promise<string> {
  return rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
}

t.test('a prefix the client sends percent-encoded is stripped', async (t) => {
  const { port, seen } = await setup(t)
  const cases: Array<[string, string]> = [
    ['/caf%C3%A9/x', '/x'],
    ['/caf%c3%a9/x?q=1', '/x?q=1'],
    ['/caf%C3%A9', '/'],
    ['/caf%C3%A9/d%20e/f', '/d%20e/f'],
    ['/%63af%C3%A9/x', '/x'],
    ['/a%20b/x', '/x'],
    ['/a%20b', '/'],
    ['/a%20bc', '/c'], // a prefix without its slash, as `/app` takes `/appx`
    ['/api/x%20y', '/x%20y'], // a literal prefix keeps the client's bytes, as before
    ['/%61pi/x', '/x'],
  ]
  for (const [path, want] of cases) {
    seen.length = 0
    const out = await send(port, path)
    t.match(out, /^HTTP\/1\.1 200 /, `${path}: 200`)
    t.same(seen, [want], `${path}: the backend gets ${want}`)
  }
})

t.test('Location is mapped back to the prefix as the client spells it: percent-encoded', async (t) => {
  const { port } = await setup(t)
  const out = await send(port, '/caf%C3%A9/go')
  t.match(out, /^HTTP\/1\.1 302 /)
  const loc = /\r\nLocation: ([^\r]*)\r\n/i.exec(out)?.[1]
  t.equal(loc, '/caf%C3%A9/there', 'an ASCII URL, the prefix encoded')
  const sp = await send(port, '/a%20b/go')
  t.equal(/\r\nLocation: ([^\r]*)\r\n/i.exec(sp)?.[1], '/a%20b/there')
})
