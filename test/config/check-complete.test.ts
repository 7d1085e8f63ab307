/**
 * `checkConfig` (proxycore check, SIGHUP reload, createProxy) shows every problem of a route in one
 * run: a route with a malformed field is compiled with that field removed — or, for the fields
 * compile's presence rules read (backends, spawn, docroot, scriptFilename), replaced by a stand-in —
 * so its unknown protocol, bad adapter options, bad regex and bad backend addresses show next to its
 * schema issues. No path is reported twice, nothing is reported that only the removal caused, and
 * compiled indices (of routes and of array elements) are the file's, in paths and in messages.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import '../../src/index.js' // registers the built-in adapters, as createProxy and the CLI do
import { checkConfig } from '../../src/config/check.js'
import { runCli } from '../cli/run.js'
import { guardLeaks } from '../helpers/leaks.js'

type Pair = [string, string]

async function pairs (config: unknown): Promise<Pair[]> {
  const issues = await checkConfig(config)
  return issues.map((i) => [i.path, i.message])
}

/** No issue (path and message) twice. */
function unique (got: Pair[]): boolean {
  const keys = got.map(([p, m]) => `${p}\0${m}`)
  return new Set(keys).size === keys.length
}

const ROOT_RULES = /exactly one of `backends` or `spawn`|needs `docroot`/

t.test('a malformed field does not hide the route\'s other problems', async (t) => {
  guardLeaks(t)
  const got = await pairs({ routes: [{ protocol: 'htp', backends: ['127.0.0.1:1'], balance: 'lol' }] })
  t.same(got, [
    ['/routes/0/balance', 'invalid value'],
    ['/routes/0/protocol', 'unknown protocol "htp"'],
  ])

  const more = await pairs({
    routes: [{
      protocol: 'http',
      backends: ['127.0.0.1:1', 5, 'nope'],
      match: { regex: '(', prefix: 'api' },
      timeouts: { connect: 'soon' },
      options: { connections: 0 },
      bogus: true,
    }],
  })
  t.same(more.map(([p]) => p).sort(), [
    '/routes/0/backends/1', // schema: not a string
    '/routes/0/backends/2', // compile: not an address
    '/routes/0/bogus',
    '/routes/0/match/prefix',
    '/routes/0/match/regex', // compile
    '/routes/0/options/connections', // the adapter
    '/routes/0/timeouts/connect',
  ])
  t.match(more.find(([p]) => p === '/routes/0/backends/2')?.[1], /invalid address "nope"/)
  t.match(more.find(([p]) => p === '/routes/0/match/regex')?.[1], /Invalid regular expression/)
  t.ok(unique(more), 'no issue twice')
})

t.test('array elements removed: later elements keep their file index, in the path and in the message', async (t) => {
  guardLeaks(t)
  const got = await pairs({ routes: [{ protocol: 'http', backends: [5, '127.0.0.1:1', 'nope', '127.0.0.1:1'] }] })
  t.same(got, [
    ['/routes/0/backends/0', 'expected string'],
    ['/routes/0/backends/2', 'invalid address "nope": expected host:port, [v6]:port or unix:/path'],
    ['/routes/0/backends/3', 'backend 127.0.0.1:1 is listed twice (here and at /routes/0/backends/1)'],
  ])
})

t.test('a route that cannot be compiled is left out; the routes after it keep their file index', async (t) => {
  guardLeaks(t)
  const got = await pairs({
    routes: [
      { backends: ['127.0.0.1:1'], match: { regex: '(' } }, // no protocol: nothing to compile it with
      { protocol: 5, backends: ['127.0.0.1:1'] },
      'not a route',
      { protocol: 'http', backends: ['127.0.0.1:2', '127.0.0.1:2'], match: { regex: '[' } },
    ],
  })
  t.same(got, [
    ['/routes/0/protocol', 'required'],
    ['/routes/1/protocol', 'expected string'],
    ['/routes/2', 'expected object'],
    ['/routes/3/backends/1', 'backend 127.0.0.1:2 is listed twice (here and at /routes/3/backends/0)'],
    ['/routes/3/match/regex', 'Invalid regular expression: /[/: Unterminated character class'],
  ])
})

t.test('no bogus issue from a removed field', async (t) => {
  guardLeaks(t)
  // Malformed or empty backends: the route still has backends in the file, so the "exactly one of
  // backends or spawn" rule must not fire; the unknown protocol still shows.
  for (const backends of [[], 'x', [5], [null, 7]]) {
    const got = await pairs({ routes: [{ protocol: 'htp', backends }] })
    t.notOk(got.some(([, m]) => ROOT_RULES.test(m)), `backends ${JSON.stringify(backends)}: no presence rule fired`)
    t.ok(got.some(([p, m]) => p === '/routes/0/protocol' && /unknown protocol/.test(m)), `backends ${JSON.stringify(backends)}: protocol checked`)
    t.ok(got.every(([p]) => p.startsWith('/routes/0/backends') || p === '/routes/0/protocol'), `backends ${JSON.stringify(backends)}: ${JSON.stringify(got)}`)
    t.ok(unique(got), 'no issue twice')
  }
  // A malformed spawn: no "no spawn named" and no presence rule, but the regex is checked.
  t.same(await pairs({ routes: [{ protocol: 'fastcgi', spawn: 5, docroot: '/srv', match: { regex: '(' } }] }), [
    ['/routes/0/spawn', 'expected string'],
    ['/routes/0/match/regex', 'Invalid regular expression: /(/: Unterminated group'],
  ])
  // Both set in the file, one malformed: "exactly one" is a real problem and is reported.
  const both = await pairs({ routes: [{ protocol: 'http', spawn: 5, backends: ['127.0.0.1:1'] }] })
  t.same(both.map(([p]) => p), ['/routes/0/spawn', '/routes/0'])
  t.match(both[1][1], /exactly one of `backends` or `spawn`/)
  // A malformed docroot of a FastCGI route: no "needs docroot or scriptFilename".
  t.same(await pairs({ routes: [{ protocol: 'fastcgi', backends: ['127.0.0.1:1'], docroot: 5, options: { maxConnections: 'x' } }] }).then((g) => g.map(([p]) => p)),
    ['/routes/0/docroot', '/routes/0/options/maxConnections'])
  // Without docroot at all, the rule is real and still fires next to a malformed balance.
  const noRoot = await pairs({ routes: [{ protocol: 'fastcgi', backends: ['127.0.0.1:1'], balance: 'lol' }] })
  t.same(noRoot.map(([p]) => p), ['/routes/0/balance', '/routes/0'])
  t.match(noRoot[1][1], /needs `docroot` or `scriptFilename`/)
  // xSendfile without its required allow: the whole block goes, the rest is compiled.
  t.same(await pairs({ routes: [{ protocol: 'htp', backends: ['127.0.0.1:1'], xSendfile: {} }] }), [
    ['/routes/0/xSendfile/allow', 'required'],
    ['/routes/0/protocol', 'unknown protocol "htp"'],
  ])
  // An authorizer with malformed backends: no "an authorizer needs exactly one of".
  const az = await pairs({ routes: [{ protocol: 'http', backends: ['127.0.0.1:1'], authorizer: { backends: [1] }, match: { regex: '(' } }] })
  t.same(az.map(([p]) => p), ['/routes/0/authorizer/backends/0', '/routes/0/match/regex'])
})

t.test('the cross-field rules run on a salvaged route too, each path once', async (t) => {
  guardLeaks(t)
  const spawns = { cgi: { socketType: 'pipe', binPath: '/bin/true' } }
  const got = await pairs({ spawns, routes: [{ protocol: 'http', spawn: 'cgi', balance: 'lol' }, { protocol: 'http', spawn: 'nope', balance: 'lol', match: { regex: '(' } }] })
  t.same(got, [
    ['/routes/0/balance', 'invalid value'],
    ['/routes/1/balance', 'invalid value'],
    ['/routes/0/spawn', 'spawn cgi is a pipe spawn (one process per request): only the cgi protocol can use it, not http'],
    ['/routes/1/spawn', 'no spawn named "nope"'],
    ['/routes/1/match/regex', 'Invalid regular expression: /(/: Unterminated group'],
  ])
})

t.test('the caller\'s config is not changed by the salvage', async (t) => {
  guardLeaks(t)
  const config = { routes: [{ protocol: 'http', backends: [5, '127.0.0.1:1'], xSendfile: {}, match: { prefix: 'x', regex: '(' }, options: { connections: 0 } }] }
  const before = structuredClone(config)
  await checkConfig(config)
  t.same(config, before)
})

t.test('a valid config still has no issue', async (t) => {
  guardLeaks(t)
  t.same(await pairs({ routes: [{ protocol: 'http', backends: ['127.0.0.1:1'], match: { prefix: '/a/', regex: '^/a/' } }] }), [])
})

t.test('proxycore check: both problems of one route in one run, with file:line:col', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-check-complete-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, 'listen: 127.0.0.1:0\nroutes:\n  - protocol: htp\n    backends: [127.0.0.1:1]\n    balance: lol\n')
  const r = await runCli(['check', file])
  t.equal(r.code, 2)
  const lines = r.stderr.trim().split('\n')
  t.same(lines.slice(0, -1).map((l) => /^proxycore\.yaml:(\d+:\d+): (\/\S+):/.exec(l.replace(dir + '/', ''))?.slice(1, 3) ?? l),
    [['5:14', '/routes/0/balance'], ['3:15', '/routes/0/protocol']])
  t.match(lines.at(-1), /2 problem\(s\)$/)
})
