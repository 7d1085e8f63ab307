/**
 * Address keys of `check` ("no two listeners share an address", src/config/spawns.ts addressKey)
 * against what a bind does:
 * - after `unix:` everything is a socket path, relative ones too: `unix:s.sock` had no key (never
 *   compared, and refused as "not an address" as a spawn socketName, which the spawn manager
 *   accepts), and `unix:127.0.0.1:p` was taken for the TCP address 127.0.0.1:p;
 * - an IPv4-mapped IPv6 address is its IPv4 address: `[::ffff:127.0.0.1]:p` and `127.0.0.1:p` are
 *   one socket on Linux (the second bind fails with EADDRINUSE), `[::ffff:0.0.0.0]:p` the IPv4 wildcard;
 * - `0.0.0.0:p` takes every IPv4 address on p, not an IPv6 one: `[::1]:p` binds beside it, so check
 *   refused a config that serves. `[::]:p` (and `:p`) takes both families.
 */
import t from 'tap'
import { createServer, type Server } from 'node:net'
import { resolve } from 'node:path'
import '../../src/index.js' // registers the built-in adapters, as createProxy and the CLI do
import { checkConfig } from '../../src/config/check.js'
import { parseAddress } from '../../src/spawn/spec.js'
import { guardLeaks } from '../helpers/leaks.js'

const P = 40137 // never bound by the check tests: check only compares addresses

async function issuesAt (config: unknown): Promise<Array<[string, string]>> {
  return (await checkConfig(config)).map((i) => [i.path, i.message])
}

const listenOnly = (listen: string[]): unknown => ({ listen, routes: [] })
const withSpawn = (socketName: string, listen: string): unknown => ({ listen, spawns: { a: { binPath: '/usr/bin/php-cgi', socketName } }, routes: [] })

t.test('a relative unix path after unix: has a key', async (t) => {
  for (const listen of [
    ['unix:audit37-s.sock', 'unix:audit37-s.sock'],
    ['unix:audit37-s.sock', `unix:${resolve('audit37-s.sock')}`],
    ['unix:audit37-s.sock', 'unix:./audit37-s.sock'],
    ['unix:audit37-d/s.sock', 'unix:audit37-d/../audit37-d/s.sock'],
  ]) {
    const got = await issuesAt(listenOnly(listen))
    t.same(got.map(([p]) => p), ['/listen/1'], `${JSON.stringify(listen)}: the second is refused (${JSON.stringify(got)})`)
    t.match(got[0]?.[1], /already used by \/listen\/0/)
  }
  // A spawn may name it so: the spawn manager binds it, resolved against the cwd.
  t.same(parseAddress('unix:audit37-s.sock'), { kind: 'unix', path: resolve('audit37-s.sock') }, 'the spawn manager takes it')
  t.same(await issuesAt(withSpawn('unix:audit37-s.sock', `127.0.0.1:${P}`)), [], 'a spawn socketName unix:s.sock is an address')
  const got = await issuesAt(withSpawn('unix:audit37-s.sock', 'unix:./audit37-s.sock'))
  t.same(got.map(([p]) => p), ['/spawns/a/socketName'], 'and collides with the listener at the same path')
  t.match(got[0]?.[1], /already used by \/listen/)
  // Its length is checked as for an absolute path (sun_path).
  const long = await issuesAt(withSpawn(`unix:${'a'.repeat(120)}`, `127.0.0.1:${P}`))
  t.same(long.map(([p]) => p), ['/spawns/a/socketName'])
  t.match(long[0]?.[1], /a unix socket path of \d+ bytes/)
  // A bare name without unix: stays refused (the spawn manager refuses it too).
  t.throws(() => parseAddress('audit37-s.sock'), { code: 'ERR_SPAWN_BAD_ADDRESS' })
  t.match((await issuesAt(withSpawn('audit37-s.sock', `127.0.0.1:${P}`)))[0]?.[1], /not an address/)
  // `unix:` alone is no path.
  t.match((await issuesAt(withSpawn('unix:', `127.0.0.1:${P}`)))[0]?.[1], /not an address/)
})

t.test('unix:host:port is a socket file, not a TCP address', async (t) => {
  t.same(await issuesAt(listenOnly([`127.0.0.1:${P}`, `unix:127.0.0.1:${P}`])), [])
  t.same(await issuesAt(withSpawn(`unix:127.0.0.1:${P}`, `127.0.0.1:${P}`)), [])
  t.same(await issuesAt(listenOnly([`0.0.0.0:${P}`, `unix:[::1]:${P}`])), [])
})

t.test('IPv4-mapped IPv6 and wildcards, as a dual-stack Linux bind has them', async (t) => {
  const clash = [
    [`127.0.0.1:${P}`, `[::ffff:127.0.0.1]:${P}`],
    [`[::ffff:7f00:1]:${P}`, `127.0.0.1:${P}`],
    [`[::ffff:0.0.0.0]:${P}`, `127.0.0.1:${P}`],
    [`0.0.0.0:${P}`, `[::ffff:127.0.0.1]:${P}`],
    [`[::]:${P}`, `[::ffff:127.0.0.1]:${P}`],
    [`[::]:${P}`, `[::1]:${P}`],
    [`0.0.0.0:${P}`, `[::]:${P}`],
    [`:${P}`, `0.0.0.0:${P}`],
    [`0.0.0.0:${P}`, `localhost:${P}`], // a host name may be IPv4: kept as before
  ]
  for (const listen of clash) {
    const got = await issuesAt(listenOnly(listen))
    t.same(got.map(([p]) => p), ['/listen/1'], `${JSON.stringify(listen)}: one socket (${JSON.stringify(got)})`)
  }
  for (const listen of [
    [`0.0.0.0:${P}`, `[::1]:${P}`],
    [`[::1]:${P}`, `0.0.0.0:${P}`],
    [`[::ffff:0.0.0.0]:${P}`, `[::1]:${P}`],
    [`127.0.0.1:${P}`, `[::1]:${P}`],
  ]) {
    t.same(await issuesAt(listenOnly(listen)), [], `${JSON.stringify(listen)}: two sockets`)
  }
})

function bind (host: string, port: number): Promise<Server | string> {
  return new Promise((resolve) => {
    const s = createServer()
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
    s.listen(port, host, () => resolve(s))
  })
}

t.test('check says what two real loopback binds say', async (t) => {
  guardLeaks(t)
  for (const [a, b] of [['127.0.0.1', '::ffff:127.0.0.1'], ['::ffff:127.0.0.1', '127.0.0.1'], ['127.0.0.1', '::1']]) {
    const first = await bind(a, 0)
    if (typeof first === 'string') { t.fail(`bind ${a}: ${first}`); continue }
    const port = (first.address() as { port: number }).port
    const second = await bind(b, port)
    const inUse = second === 'EADDRINUSE'
    if (typeof second !== 'string') await new Promise((resolve) => second.close(resolve))
    await new Promise((resolve) => first.close(resolve))
    const spell = (h: string): string => h.includes(':') ? `[${h}]:${port}` : `${h}:${port}`
    const got = await issuesAt(listenOnly([spell(a), spell(b)]))
    t.equal(got.length > 0, inUse, `${a} then ${b}: bind ${inUse ? 'EADDRINUSE' : 'ok'}, check ${JSON.stringify(got)}`)
  }
})

t.test('a unix listen path longer than sun_path is refused by check', async (t) => {
  // Node binds such a path cut to 107 bytes (another file) and `serve` then failed at its chmod
  // (ENOENT, a stack trace) after leaving the cut socket file behind.
  const dir = '/tmp/audit37-d/'
  for (const [path, bad] of [[`${dir}${'b'.repeat(107 - dir.length)}`, false], [`${dir}${'b'.repeat(108 - dir.length)}`, true], [`${'r'.repeat(200)}.sock`, true]] as const) {
    const got = await issuesAt(listenOnly([`127.0.0.1:${P}`, `unix:${path}`]))
    if (!bad) { t.same(got, [], `${Buffer.byteLength(resolve(path))} bytes fit`); continue }
    t.same(got.map(([p]) => p), ['/listen/1'], `${Buffer.byteLength(resolve(path))} bytes do not fit`)
    t.match(got[0]?.[1], /a unix socket path of \d+ bytes: at most 107 fit/)
  }
})
