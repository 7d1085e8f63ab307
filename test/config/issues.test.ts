/**
 * The detailed issues of an invalid config, word for word, on every path that validates: the route
 * schema inside `createProxy` (no spawns), the embedder schema (with spawns), the HTTP adapter's
 * options (through createProxy and called directly) and `checkConfig` (the operator file). Valid
 * configs are checked by generated code and TypeBox loads only to word these issues; the expected
 * values below were recorded from the TypeBox-only validator before that change.
 */
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { createProxy, httpAdapter, silentLogger, type CreateProxyOptions } from '../../src/index.js'
import { checkConfig } from '../../src/config/check.js'
import type { ConfigIssue } from '../../src/core/errors.js'

async function issuesOf (f: () => unknown): Promise<ConfigIssue[]> {
  try { await f() } catch (err) {
    const issues = (err as { issues?: ConfigIssue[] }).issues
    if (issues !== undefined) return issues
    throw err
  }
  throw new Error('no error')
}

const proxy = (c: Record<string, unknown>) => async () => {
  const p = await createProxy({ logger: silentLogger, ...c } as unknown as CreateProxyOptions)
  await p.close()
}

t.test('createProxy without spawns: every problem in the operator wording, as with spawns', async (t) => {
  guardLeaks(t)
  t.strictSame(await issuesOf(proxy({ maxResponseHeadSize: '12 parsecs', routes: [{ protocol: 'http', backends: '127.0.0.1:1', retries: -1, balance: 'random', bogus: 1, timeouts: { connect: 'soon' } }] })), [
    { path: '/routes/0/bogus', message: 'unknown key "bogus"', found: 'bogus', expected: 'one of name, match, protocol, backends, spawn, balance, disableTime, maxFails, retries, maxConcurrent, queue, queueTimeout, timeouts, maxBodySize, spoolLimit, requestBuffering, stripPrefix, hostHeader, xForwarded, forwarded, via, docroot, scriptFilename, scriptExtensions, index, symlinks, params, localRedirects, passAuthorization, options, xSendfile, authorizer' },
    { path: '/routes/0/backends', message: 'expected array', found: '127.0.0.1:1', expected: 'a list of a string' },
    { path: '/routes/0/balance', message: 'invalid value', found: 'random', expected: '"least-connection" | "round-robin" | "hash" | "sticky"' },
    { path: '/routes/0/retries', message: 'expected integer to be greater or equal to 0', found: -1, expected: 'an integer >= 0' },
    { path: '/routes/0/timeouts/connect', message: 'invalid value', found: 'soon', expected: 'a duration like "60s", or milliseconds' },
    { path: '/maxResponseHeadSize', message: 'invalid value', found: '12 parsecs', expected: 'a size like "256MiB", or bytes' },
  ])
  t.strictSame(await issuesOf(proxy({ routes: 'none' })), [{ path: '/routes', message: 'expected array', found: 'none', expected: 'a list of a mapping' }])
})

t.test('createProxy with spawns: the embedder schema, operator wording and did-you-mean', async (t) => {
  guardLeaks(t)
  t.strictSame(await issuesOf(proxy({
    procesStarters: {},
    listen: [],
    logLevel: 'loud',
    routes: [{ protocol: 'cgi', spawn: 'c', docroot: '/tmp', stripPrefx: true }],
    spawns: { c: { socketType: 'pipe', launcher: 'direct', bnPath: 'x', maxProcs: 0 }, d: { socketName: 1, binPath: 'x' } },
  })), [
    { path: '/procesStarters', message: 'unknown key "procesStarters" (did you mean "processStarters"?)', found: 'procesStarters', expected: 'processStarters' },
    { path: '/listen', message: 'invalid value', found: [], expected: 'a string | a list of a string' },
    { path: '/logLevel', message: 'invalid value', found: 'loud', expected: '"fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent"' },
    { path: '/spawns/c/bnPath', message: 'unknown key "bnPath" (did you mean "binPath"?)', found: 'bnPath', expected: 'binPath' },
    { path: '/spawns/c/maxProcs', message: 'expected integer to be greater or equal to 1', found: 0, expected: 'an integer >= 1' },
    { path: '/spawns/d/socketName', message: 'invalid value', found: 1, expected: 'a string | a list of a string' },
    { path: '/routes/0/stripPrefx', message: 'unknown key "stripPrefx" (did you mean "stripPrefix"?)', found: 'stripPrefx', expected: 'stripPrefix' },
  ])
})

t.test('HTTP adapter options: through createProxy and called directly', async (t) => {
  guardLeaks(t)
  const route = (options: unknown): Record<string, unknown> => ({ protocol: 'http', backends: ['127.0.0.1:1'], options })
  t.strictSame(await issuesOf(proxy({ routes: [route({ connections: 0, keepAliveTimeout: '4 parsecs', extra: 1 }), route('fast')] })), [
    { path: '/routes/0/options/extra', message: 'Unexpected property', found: 1, expected: 'object' },
    { path: '/routes/0/options/connections', message: 'Expected integer to be greater or equal to 1', found: 0, expected: 'integer' },
    { path: '/routes/0/options/keepAliveTimeout', message: 'Expected union value', found: '4 parsecs', expected: 'a valid value' },
    { path: '/routes/1/options', message: 'Expected object', found: 'fast', expected: 'object' },
  ])
  t.strictSame(await issuesOf(() => httpAdapter.parseOptions({ connections: 1.5, keepAliveTimeout: -1 }, '/o')), [
    { path: '/o/connections', message: 'Expected integer', found: 1.5, expected: 'integer' },
    { path: '/o/keepAliveTimeout', message: 'Expected union value', found: -1, expected: 'a valid value' },
  ])
  t.strictSame(await issuesOf(() => httpAdapter.parseOptions(undefined, '/o')), [{ path: '/o', message: 'Expected object', found: undefined, expected: 'object' }])
  t.strictSame(httpAdapter.parseOptions({}, '/o'), { connections: 128, keepAliveTimeout: 4000 }, 'defaults')
  // undici takes no 0 (before, every request failed as a 502 blamed on the backend).
  for (const zero of [0, '0s']) {
    t.strictSame(await issuesOf(() => httpAdapter.parseOptions({ keepAliveTimeout: zero }, '/o')), [
      { path: '/o/keepAliveTimeout', message: 'must be above 0 (an idle connection is kept at least this long)', found: zero, expected: 'a duration above 0, e.g. 1s' },
    ], `keepAliveTimeout ${JSON.stringify(zero)}`)
  }
  t.strictSame(httpAdapter.parseOptions({ connections: 7, keepAliveTimeout: '1.5s' }, '/o'), { connections: 7, keepAliveTimeout: 1500 })
})

t.test('checkConfig: the operator schema, then adapter options of the well-formed routes', async (t) => {
  guardLeaks(t)
  t.strictSame(await checkConfig({
    routes: [{ protocol: 'http', backends: ['127.0.0.1:1'], options: { connections: 'many' } }],
    status: { path: 'x', allw: [] },
    tenants: { t: { user: 'u' } },
    identity: { minUid: 0 },
  }), [
    { path: '/status/allw', message: 'unknown key "allw" (did you mean "allow"?)', found: 'allw', expected: 'allow' },
    { path: '/status/path', message: 'expected string to match \'^/\'', found: 'x', expected: 'a string matching ^/' },
    { path: '/tenants/t/group', message: 'required', expected: 'a string | an integer >= 0' },
    { path: '/identity/minUid', message: 'expected integer to be greater or equal to 1', found: 0, expected: 'an integer >= 1' },
    { path: '/routes/0/options/connections', message: 'Expected integer', found: 'many', expected: 'integer' },
  ])
  t.strictSame(await checkConfig(null), [{ path: '', message: 'expected object', found: null, expected: 'a mapping' }])
  t.strictSame(await checkConfig([]), [{ path: '', message: 'expected object', found: [], expected: 'a mapping' }])
})

t.test('checkConfig: map keys outside their pattern are issues at the key, every one, with the value still checked', async (t) => {
  guardLeaks(t)
  const names = 'a spawn name may contain only ASCII letters, digits, "_", "." and "-"'
  const rule = 'ASCII letters, digits, "_", "." and "-"'
  t.strictSame(await checkConfig({
    spawns: {
      'bad name': { socketName: 1, binPath: 'x' },
      ok: { binPath: 'x', socketName: '/tmp/pc-issues-ok.sock', environment: { PATH: '/bin', 'A\nB': 1 } },
      'a/b~c': { binPath: 'x', socketName: '/tmp/pc-issues-ab.sock' },
      'ü': 5,
    },
    tenants: { 'x\ny': { user: 'u', group: 'g' } },
    routes: [
      { protocol: 'http', spawn: 'bad name' },
      { protocol: 'http', backends: ['127.0.0.1:1'], params: { 'A\nB': 'x' } },
    ],
  }), [
    { path: '/spawns/ok/environment/A\nB', message: 'bad environment variable name "A\\nB": an environment variable name must be a single line without "=" or a NUL byte', found: 'A\nB', expected: 'a single line without "=" or NUL' },
    { path: '/spawns/ok/environment/A\nB', message: 'expected string', found: 1, expected: 'a string without a NUL byte' },
    { path: '/spawns/bad name', message: `bad spawn name "bad name": ${names}`, found: 'bad name', expected: rule },
    { path: '/spawns/bad name/socketName', message: 'invalid value', found: 1, expected: 'a string | a list of a string' },
    { path: '/spawns/a~1b~0c', message: `bad spawn name "a/b~c": ${names}`, found: 'a/b~c', expected: rule },
    { path: '/spawns/ü', message: `bad spawn name "ü": ${names}`, found: 'ü', expected: rule },
    { path: '/spawns/ü', message: 'expected object', found: 5, expected: 'a mapping' },
    { path: '/tenants/x\ny', message: 'bad tenant name "x\\ny": a tenant name must be a single line', found: 'x\ny', expected: 'a single line' },
    { path: '/routes/1/params/A\nB', message: 'bad CGI variable name "A\\nB": a CGI variable name must be a single line without "=" or a NUL byte', found: 'A\nB', expected: 'a single line without "=" or NUL' },
  ])
})

t.test('checkConfig: a spawn or tenant named like an Object.prototype member is still unknown', async (t) => {
  guardLeaks(t)
  t.strictSame(await checkConfig({
    spawns: { app: { binPath: 'x', socketName: '/tmp/pc-issues-proto.sock', tenant: 'toString', dependsOn: ['hasOwnProperty'] } },
    tenants: { t: { user: 'u', group: 'g' } },
    routes: [{ protocol: 'http', spawn: 'constructor' }],
  }), [
    { path: '/spawns/app/tenant', message: 'no tenant named "toString"', found: 'toString', expected: 't' },
    { path: '/spawns/app/dependsOn/0', message: 'no spawn named "hasOwnProperty"', found: 'hasOwnProperty', expected: 'app' },
    { path: '/routes/0/spawn', message: 'no spawn named "constructor"', found: 'constructor', expected: 'app' },
  ])
})

t.test('a backend listed twice in a route or an authorizer is an issue at the repeat', async (t) => {
  guardLeaks(t)
  t.strictSame(await issuesOf(proxy({ routes: [{ protocol: 'http', backends: ['127.0.0.1:9000', '127.0.0.1:9001', ' 127.0.0.1:9000'] }] })), [
    { path: '/routes/0/backends/2', message: 'backend 127.0.0.1:9000 is listed twice (here and at /routes/0/backends/0)', found: ' 127.0.0.1:9000', expected: 'each address once' },
  ])
  const issues = await checkConfig({
    listen: '127.0.0.1:0',
    routes: [{ protocol: 'http', backends: ['unix:/run/a.sock'], authorizer: { backends: ['[::1]:9000', '[::1]:9000'] } }],
  })
  t.strictSame(issues.map((i) => [i.path, i.message]), [['/routes/0/authorizer/backends/1', 'backend [::1]:9000 is listed twice (here and at /routes/0/authorizer/backends/0)']])
  // The same address in two routes is two pools: allowed.
  const p = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: ['127.0.0.1:9000'] }, { protocol: 'http', backends: ['127.0.0.1:9000'] }] } as unknown as CreateProxyOptions)
  await p.close()
})
