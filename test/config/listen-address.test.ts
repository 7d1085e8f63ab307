/**
 * `listen` and spawn `socketName` addresses are checked by `check` with the rules the runtime binds
 * them by (the gateway's listener, spec.ts parseAddress): an address `check` calls ok must not make
 * `serve` fail later with a stack trace (`start failed`, exit 1) after its spawns have started. A
 * `listen` that is not host:port / [v6]:port / unix:/path, a port above 65535, or an empty `unix:`
 * is a config issue at its path (exit 2), as a bad backend address already is.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import '../../src/index.js' // registers the built-in adapters, as createProxy and the CLI do
import { checkConfig } from '../../src/config/check.js'
import { runCli } from '../cli/run.js'
import { guardLeaks } from '../helpers/leaks.js'

async function issuesAt (config: unknown): Promise<Array<[string, string]>> {
  return (await checkConfig(config)).map((i) => [i.path, i.message])
}

t.test('a listen address serve cannot bind is a config issue at its path', async (t) => {
  guardLeaks(t)
  for (const [listen, at, why] of [
    ['foo', '/listen', /not an address "foo"/],
    ['127.0.0.1:99999', '/listen', /port 99999 is out of range/],
    ['127.0.0.1:-5', '/listen', /not an address/],
    ['unix:', '/listen', /needs a socket path/],
    ['/tmp/x.sock', '/listen', /not an address/], // a listener's unix socket is written unix:/path
  ] as const) {
    const got = await issuesAt({ listen, routes: [] })
    t.equal(got.length, 1, `${listen}: one issue (${JSON.stringify(got)})`)
    t.equal(got[0]?.[0], at, `${listen}: at ${at}`)
    t.match(got[0]?.[1], why, `${listen}: says why`)
  }
  // In a list: the index of the bad one.
  t.same((await issuesAt({ listen: ['127.0.0.1:0', '[::1]:70000'], routes: [] })).map(([p]) => p), ['/listen/1'])
  // What the gateway binds stays accepted.
  for (const listen of ['127.0.0.1:0', '[::1]:0', ':0', 'localhost:65535', '0.0.0.0:8081', 'unix:/run/proxycore.sock', ['127.0.0.1:0', 'unix:/tmp/a.sock']]) {
    t.same(await issuesAt({ listen, routes: [] }), [], `${JSON.stringify(listen)} is fine`)
  }
})

t.test('a spawn socketName with a port above 65535 is a config issue', async (t) => {
  guardLeaks(t)
  const got = await issuesAt({
    spawns: { app: { binPath: ['php-cgi', '-b', '127.0.0.1:99999'], socketName: '127.0.0.1:99999' } },
    routes: [{ protocol: 'fastcgi', spawn: 'app', docroot: '/srv' }],
  })
  t.same(got.map(([p]) => p), ['/spawns/app/socketName'])
  t.match(got[0]?.[1], /port 99999 is out of range/)
  t.same(await issuesAt({
    spawns: { app: { binPath: ['php-cgi'], socketName: ['127.0.0.1:65535', '[::1]:0', '/run/app.sock'] } },
    routes: [{ protocol: 'fastcgi', spawn: 'app', docroot: '/srv' }],
  }), [])
})

t.test('check and serve: exit 2 with the issue, no stack trace', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-listen-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, 'listen: "127.0.0.1:99999"\nroutes: []\n')
  const check = await runCli(['check', file])
  t.equal(check.code, 2, 'check: exit 2')
  t.match(check.stderr, /proxycore\.yaml:1:9: \/listen: port 99999 is out of range/)
  const serve = await runCli(['serve', file], { PROXYCORE_LOG_FORMAT: 'json' })
  t.equal(serve.code, 2, 'serve: exit 2 (a config error), not 1')
  t.match(serve.stderr, /port 99999 is out of range/)
  t.notMatch(serve.stderr, /start failed|RangeError|"stack"/, 'no stack trace')
})

t.test('a spawn unix socketName longer than sun_path holds is a config issue', async (t) => {
  guardLeaks(t)
  const spawn = (socketName: string, extra: Record<string, unknown> = {}): unknown => ({ spawns: { a: { binPath: '/usr/bin/php-cgi', socketName, ...extra } }, routes: [] })
  const at = (n: number): string => '/tmp/' + 'x'.repeat(n - 5) // an absolute path of n bytes
  t.same(await issuesAt(spawn(at(107))), [], '107 bytes fit')
  const long = await issuesAt(spawn(at(108)))
  t.same(long.map(([p]) => p), ['/spawns/a/socketName'])
  t.match(long[0]?.[1], /of 108 bytes: at most 107 fit/)
  t.same((await issuesAt(spawn(`unix:${at(120)}`))).map(([p]) => p), ['/spawns/a/socketName'], 'unix: prefix too')
  // Further processes listen at <path>-N: with maxProcs 4, 105 bytes + "-4" fit, 106 + "-4" do not.
  t.same(await issuesAt(spawn(at(105), { maxProcs: 4 })), [])
  t.match((await issuesAt(spawn(at(106), { maxProcs: 4 })))[0]?.[1], /further processes listen at <path>-N, 108 bytes/)
  // A recycle's successor listens beside its predecessor: maxRequests counts as a further process.
  t.match((await issuesAt(spawn(at(106), { maxRequests: 100 })))[0]?.[1], /further processes/)
})
