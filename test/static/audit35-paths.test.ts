/**
 * Audit 35 (static, paths): request targets as a raw client sends them (curl and undici would
 * normalise them): encoded separators, NUL, overlong UTF-8, double encoding, trailing dot and
 * space, empty segments, dot files, and the directory redirect: never a Location a browser reads
 * as another host (`//host`, `/\\host`), the query kept.
 */
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

async function raw (port: number, target: string): Promise<{ status: number, head: string, body: string }> {
  const out = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`)
  const end = out.indexOf('\r\n\r\n')
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(out)?.[1] ?? 0), head: end < 0 ? out : out.slice(0, end), body: end < 0 ? '' : out.slice(end + 4) }
}

t.test('odd targets: served as the file, or refused, never outside', async (t) => {
  const top = mkdtempSync(join(tmpdir(), 'pc-a35p-'))
  t.teardown(() => rmSync(top, { recursive: true, force: true }))
  const root = join(top, 'www')
  mkdirSync(join(root, 'docs'), { recursive: true })
  mkdirSync(join(root, 'evil.example'))
  mkdirSync(join(root, '\\evil'))
  mkdirSync(join(root, '.well-known'))
  writeFileSync(join(root, 'docs', 'index.html'), 'D')
  writeFileSync(join(root, 'evil.example', 'index.html'), 'E')
  writeFileSync(join(root, '\\evil', 'index.html'), 'B')
  writeFileSync(join(root, '.well-known', 'index.html'), 'W')
  writeFileSync(join(root, '.env'), 'SECRET')
  writeFileSync(join(root, 'ten.txt'), '0123456789')
  writeFileSync(join(top, 'outside.txt'), 'OUTSIDE')
  const { port } = await proxyServer(t, { routes: [
    { name: 'pre', match: { prefix: '/pre/' }, stripPrefix: true, protocol: 'static', docroot: root, index: ['index.html'] },
    { name: 'top', protocol: 'static', docroot: root, index: ['index.html'] },
  ] })
  const cases: Array<[string, number, string?]> = [
    ['//ten.txt', 200, '0123456789'], // empty segments merged, as nginx merge_slashes
    ['/docs//index.html', 200, 'D'],
    ['/ten.txt.', 404], // no Windows name folding
    ['/ten.txt%20', 404],
    ['/ten.txt/', 404],
    ['/ten.txt%3f', 404],
    ['/%2e%2e/outside.txt', 400],
    ['/docs%2f..%2f..%2foutside.txt', 400],
    ['/%5c..%5coutside.txt', 400],
    ['/ten.txt%00', 400],
    ['/%c0%ae%c0%ae/outside.txt', 400], // overlong UTF-8 `.`: not UTF-8, refused
    ['/%252e%252e/outside.txt', 404], // decoded once: a name `%2e%2e`
    ['/.env', 404],
    ['/%2eenv', 404],
    ['/.well-known/', 200, 'W'],
  ]
  for (const [target, status, body] of cases) {
    const r = await raw(port, target)
    t.equal(r.status, status, target)
    if (body !== undefined) t.equal(r.body, body, `${target}: body`)
    t.notMatch(r.body, /OUTSIDE|SECRET/, `${target}: nothing hidden`)
  }
  // The directory redirect: a path from the root, one leading slash, the query kept.
  const redirects: Array<[string, string]> = [
    ['//evil.example', '/evil.example/'],
    ['///evil.example?a=1', '/evil.example/?a=1'],
    ['/.//evil.example', '/evil.example/'],
    ['/pre//evil.example?x=%2F', '/pre/evil.example/?x=%2F'],
    ['/docs?', '/docs/'],
    ['/.well-known', '/.well-known/'],
  ]
  for (const [target, location] of redirects) {
    const r = await raw(port, target)
    t.equal(r.status, 301, target)
    const loc = /\r\nlocation: ([^\r\n]*)/i.exec(r.head)?.[1] ?? ''
    t.equal(loc, location, `${target} → ${location}`)
    t.notMatch(loc, /^\/[/\\]/, `${target}: not another host`)
  }
  // A directory whose name starts with a backslash: `/\evil/` would be `//evil/` to a browser.
  for (const target of ['/%5Cevil', '/%5cevil?x=1', '/\\evil']) {
    const r = await raw(port, target)
    t.notMatch(r.head, /\r\nlocation: \/\\/i, `${target}: no Location starting with /\\`)
    t.ok(r.status === 400 || (r.status === 301 && /\r\nlocation: \/%5C/i.test(r.head)), `${target}: refused or encoded (${r.status})`)
  }
})
