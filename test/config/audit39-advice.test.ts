/**
 * Shared-host advice (src/config/advice.ts): a valid config that leaves a tenant's backend open to
 * other tenants' code (a user-switched spawn on a TCP port; a status page with no allow list,
 * which then answers loopback, where every tenant's code runs) is told at its key: by `serve` at
 * warn, at start and at each reload, and by `check` as a warning line at its file:line:col (exit 0). The findings behind it: test/cgi/audit39-isolation.test.ts
 * and audit39-status-page.test.ts.
 * [ROOT] The gateway part creates a user: skipped with the reason locally, a failure under CI=true.
 */
import t from 'tap'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { sharedHostAdvice } from '../../src/config/advice.js'
import type { OperatorConfig } from '../../src/config/schema.js'
import { Gateway } from '../../src/gateway/server.js'
import { captureLogger } from '../cgi/harness.js'
import { ensureBuilt, runCli } from '../cli/run.js'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { withTestUsers } from '../helpers/users.js'

const U = { name: 'pcau39adv', id: 2188 }
const routes = [{ protocol: 'http', backends: ['127.0.0.1:9'] }]
const advice = (c: object): Array<{ path: string, message: string }> => sharedHostAdvice({ routes, ...c } as unknown as OperatorConfig)
const paths = (c: object): string[] => advice(c).map((a) => a.path)

t.test('a user-switched spawn on a TCP port is told at its socketName; a unix socket, or no user switch, is not', async (t) => {
  const [a] = advice({ spawns: { php: { binPath: '/usr/bin/php-cgi', socketName: '127.0.0.1:9000', user: 'alice', group: 'alice' } } })
  t.equal(a?.path, '/spawns/php/socketName')
  t.match(a?.message, /^127\.0\.0\.1:9000 is a TCP port: every local user, each tenant's code included, can connect to it .* as alice; give it a unix socket/)
  t.same(paths({ tenants: { b: { user: 'bob', group: 'bob' } }, spawns: { 'a/b': { binPath: 'x', socketName: ['unix:/run/b.sock', '[::1]:9001'], tenant: 'b' } } }), ['/spawns/a~1b/socketName'], "a tenant's user; one TCP address among unix ones; the key escaped")
  t.match(advice({ tenants: { b: { user: 'bob', group: 'bob' } }, spawns: { s: { binPath: 'x', socketName: ['unix:/run/b.sock', '[::1]:9001'], tenant: 'b' } } })[0]?.message, /^\[::1\]:9001 is a TCP port/, 'names the TCP address alone')
  t.same(paths({ spawns: { php: { binPath: 'x', socketName: '/run/alice/php.sock', user: 'alice', group: 'alice' } } }), [], 'a unix socket: nothing')
  t.same(paths({ spawns: { php: { binPath: 'x', socketName: './run/php.sock', user: 'alice', group: 'alice' } } }), [], 'a relative unix socket: nothing')
  t.same(paths({ spawns: { php: { binPath: 'x', socketName: '127.0.0.1:9000' } } }), [], 'no user switch (the host\'s own backend): nothing')
  t.same(paths({ spawns: { php: { binPath: 'x', socketName: '127.0.0.1:9000', user: 'root', group: 'root' } } }), [], 'run as root: nothing')
})

t.test('a status page without allow, on a config with user-switched spawns, is told at /status', async (t) => {
  const spawns = { cgi: { socketType: 'pipe', user: 'alice', group: 'alice' }, php: { binPath: 'x', socketName: '/run/b.sock', tenant: 'b' } }
  const tenants = { b: { user: 'bob', group: 'bob' } }
  const [a, more] = advice({ status: { path: '/server-status' }, spawns, tenants })
  t.equal(a?.path, '/status')
  t.match(a?.message, /^no allow list: the status page answers loopback, where the code of every spawn's user \(alice, bob\) runs too/)
  t.equal(more, undefined, 'a pipe spawn and a unix socket: nothing else')
  t.same(paths({ status: { path: '/server-status', allow: ['unix:'] }, spawns, tenants }), [], 'an allow list chosen: nothing')
  t.same(paths({ status: { path: '/server-status' }, spawns: { php: { binPath: 'x', socketName: '/run/b.sock' } } }), [], 'no user switch: nothing')
  t.same(paths({ spawns, tenants }), [], 'no status page: nothing')
})

t.test('serve logs the advice at warn, at start and at each reload', async (t) => {
  if (!withTestUsers(t, 'shared-host advice', [U])) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-advice-')
  chmodSync(dir, 0o755)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, [
    'listen: 127.0.0.1:0',
    'status: { path: /server-status }',
    'identity: { minUid: 1000, minGid: 1000 }',
    `tenants: { a: { user: ${U.name}, group: ${U.name} } }`,
    'spawns: { cgi: { tenant: a, socketType: pipe, stopTimeout: 2s } }',
    `routes: [{ match: { prefix: /cgi/ }, protocol: cgi, spawn: cgi, docroot: ${dir} }]`,
    '',
  ].join('\n'))
  const { logger, lines } = captureLogger()
  const gw = new Gateway({ configFile: file, log: logger })
  await gw.start()
  t.teardown(() => gw.close())
  const told = (): string[] => lines.filter((l) => l.level === 'warn' && l.obj.path === '/status').map((l) => l.msg)
  t.equal(told().length, 1, 'once at start')
  t.match(told()[0], new RegExp(`^no allow list: the status page answers loopback, where the code of every spawn's user \\(${U.name}\\) runs too`))
  t.equal(await gw.reload(), true, 'reloaded')
  t.equal(told().length, 2, 'again at the reload')
})

t.test('check prints each as a warning at its file:line:col, and still says ok (exit 0)', async (t) => {
  await ensureBuilt()
  guardLeaks(t)
  const dir = tempDir(t, 'pc-advice-check-')
  const file = join(dir, 'p.yaml')
  writeFileSync(file, [
    'listen: 127.0.0.1:0',
    'status: { path: /server-status }',
    'tenants:',
    '  a: { user: alice, group: alice }',
    'spawns:',
    '  php:',
    '    tenant: a',
    '    binPath: /usr/bin/php-cgi',
    '    socketName: 127.0.0.1:9123',
    'routes:',
    `  - { protocol: fastcgi, spawn: php, docroot: ${dir} }`,
    '',
  ].join('\n'))
  const r = await runCli(['check', file])
  t.equal(r.code, 0, 'a warning is no problem')
  t.match(r.stdout, /p\.yaml: ok \(1 route\(s\), 1 spawn\(s\), 1 file\(s\)\)/)
  const lines = r.stderr.trim().split('\n')
  t.equal(lines.length, 2, r.stderr)
  t.match(lines[0], /p\.yaml:9:17: \/spawns\/php\/socketName: warning: 127\.0\.0\.1:9123 is a TCP port: .* as alice; give it a unix socket/)
  t.match(lines[1], /p\.yaml:2:9: \/status: warning: no allow list: the status page answers loopback, where the code of every spawn's user \(alice\) runs too/)
})
