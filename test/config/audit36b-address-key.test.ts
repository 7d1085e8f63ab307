/**
 * "No two spawns, nor a spawn and `listen`, share an address" compared addresses as written: the
 * same socket spelled twice (`unix:/tmp/d/s.sock` and `unix:../../tmp/d/s.sock`, `[::1]:p` and
 * `[0:0::1]:p`, a spawn's `./s.sock` and the listener's absolute path) passed `check`, and `serve`
 * then failed at bind. Now a unix path is compared resolved (as bind resolves it), an IP literal in
 * one spelling, a host name case-insensitively; a host name is not looked up (`check` does no DNS),
 * so `localhost:p` and `127.0.0.1:p` are not compared.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import '../../src/index.js' // registers the built-in adapters, as createProxy and the CLI do
import { checkConfig } from '../../src/config/check.js'
import { loadConfig } from '../../src/config/load.js'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'

const P = 40123 // never bound: check only compares addresses

async function issuesAt (config: unknown): Promise<Array<[string, string]>> {
  return (await checkConfig(config)).map((i) => [i.path, i.message])
}

t.test('the same listen socket spelled twice is refused', async (t) => {
  const abs = '/tmp/audit36b-d/s.sock'
  const rel = relative(process.cwd(), abs) // bind resolves a relative unix path against the cwd
  t.ok(rel.startsWith('..'), `a relative spelling: ${rel}`)
  for (const [listen, why] of [
    [[`127.0.0.1:${P}`, `unix:${abs}`, `unix:${rel}`], /already used by \/listen\/1/],
    [[`unix:${abs}`, 'unix:/tmp/audit36b-d/./x/../s.sock'], /already used by \/listen\/0/],
    [[`[::1]:${P}`, `[0:0::1]:${P}`], /already used by \/listen\/0/],
    [[`127.0.0.1:${P}`, `[0:0::0]:${P}`], /already used by \/listen\/0/], // `::` in another spelling: the wildcard
    [[`LocalHost:${P}`, `localhost:${P}`], /already used by \/listen\/0/], // host names are case-insensitive
  ] as const) {
    const got = await issuesAt({ listen, routes: [] })
    t.equal(got.length, 1, `${JSON.stringify(listen)}: one issue (${JSON.stringify(got)})`)
    t.equal(got[0]?.[0], `/listen/${listen.length - 1}`, 'at the second spelling')
    t.match(got[0]?.[1], why)
  }
  // Different sockets stay accepted; a host name is not looked up, so it is compared as written.
  for (const listen of [[`127.0.0.1:${P}`, `[::1]:${P}`], [`localhost:${P}`, `127.0.0.1:${P}`], [`unix:${abs}`, `unix:${abs}2`], [`[fe80::1%lo]:${P}`, `[fe80::1%eth0]:${P}`]]) {
    t.same(await issuesAt({ listen, routes: [] }), [], `${JSON.stringify(listen)} is fine`)
  }
})

t.test('a spawn socketName equal to a listen address spelled differently is refused', async (t) => {
  const spawn = (socketName: string, listen: string): unknown => ({ listen, spawns: { a: { binPath: '/usr/bin/php-cgi', socketName } }, routes: [] })
  for (const [socketName, listen] of [
    ['/tmp/audit36b-d/a.sock', 'unix:/tmp/audit36b-d/../audit36b-d/a.sock'],
    [`[::1]:${P}`, `[0000::1]:${P}`],
    [`127.0.0.1:${P}`, `[::]:${P}`],
  ]) {
    const got = await issuesAt(spawn(socketName, listen))
    t.same(got.map(([p]) => p), ['/spawns/a/socketName'], `${socketName} vs ${listen}`)
    t.match(got[0]?.[1], /already used by \/listen/)
  }
})

t.test('from a file: a spawn ./s.sock (resolved against the config directory) and the listener', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit36b-key-')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: ["127.0.0.1:${P}", "unix:${relative(process.cwd(), join(dir, 's.sock'))}"]\nspawns:\n  a: { binPath: /usr/bin/php-cgi, socketName: ./s.sock }\nroutes: []\n`)
  const { issues } = await loadConfig(file)
  t.same(issues.map((i) => i.path), ['/spawns/a/socketName'], JSON.stringify(issues))
  t.match(issues[0]?.message, /already used by \/listen\/1/)
})
