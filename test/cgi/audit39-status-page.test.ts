/**
 * Audit 39: the status page on a shared host. Its default allow list is loopback, and every
 * tenant's code runs on the same host: a CGI script of site A's (probe.pl, run as A by `proxycore
 * serve`'s gateway, with docs/guides/multi-user.md's `status: { path: /server-status }`) fetches
 * it from 127.0.0.1 and finds what B's php-cgi wrote to its stderr (the page keeps each spawn's
 * last stderr lines), besides every tenant's spawns, pids and uids. Kept as todo: a design gap of
 * the status defaults (docs/guides/multi-user.md "The status page"), not of the spawn layer.
 * [ROOT] Skipped with the reason locally without root; a failure under CI=true.
 */
import t from 'tap'
import { chmodSync, chownSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { tempDir } from '../helpers/tmp.js'
import { ownedDir, ownedFile, withTestUsers, type TestUser } from '../helpers/users.js'
import { havePeer, PHP_CGI } from '../fastcgi/helpers/peers.js'
import { Gateway } from '../../src/gateway/server.js'
import { silentLogger } from '../../src/index.js'

const A: TestUser = { name: 'pcau39e', id: 2186 }
const B: TestUser = { name: 'pcau39f', id: 2187 }
const FIXTURES = fileURLToPath(new URL('../spawn/fixtures/audit39/', import.meta.url))

const dir = ownedDir
/** A fixture of test/spawn/fixtures/audit39/ at `to`, with exactly this owner and mode. */
const install = (from: string, to: string, uid: number, mode: number): void => ownedFile(to, readFileSync(join(FIXTURES, from)), uid, mode)

/** Pids of live processes whose real uid is one of the test users. */
function theirs (): number[] {
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).filter((n) => {
    try { return [A.id, B.id].includes(Number(/^Uid:\s*(\d+)/m.exec(readFileSync(`/proc/${n}/status`, 'utf8'))?.[1])) } catch { return false }
  }).map(Number)
}

t.test('a tenant\'s script reads the status page from loopback, and another tenant\'s stderr there', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  if (!withTestUsers(t, 'status page audit', [A, B])) return
  guardLeaks(t, { timeoutMs: 15_000 })
  t.teardown(async () => {
    for (const pid of theirs()) { try { process.kill(pid, 'SIGKILL') } catch {} }
    await waitFor(() => theirs().length === 0, 10_000)
  })
  const T = tempDir(t, 'pc-audit39-status-')
  chmodSync(T, 0o755)
  const cgiA = dir(join(T, 'a', 'cgi'), A.id)
  chownSync(join(T, 'a'), A.id, A.id)
  const wwwB = dir(join(T, 'b'), B.id, 0o700)
  const run = dir(join(T, 'run'), 0)
  install('probe.pl', join(cgiA, 'probe.pl'), A.id, 0o755)
  install('stderr.php', join(wwwB, 'stderr.php'), B.id, 0o644)
  const file = join(T, 'proxycore.yaml')
  writeFileSync(file, [
    'listen: 127.0.0.1:0',
    `runDir: ${run}`,
    'status: { path: /server-status }',
    'identity: { minUid: 1000, minGid: 1000 }',
    'tenants:',
    `  a: { user: ${A.name}, group: ${A.name} }`,
    `  b: { user: ${B.name}, group: ${B.name} }`,
    'spawns:',
    '  cgi-a: { tenant: a, socketType: pipe, stopTimeout: 2s }',
    `  php-b: { tenant: b, binPath: ${realpathSync(PHP_CGI)}, socketName: ${join(run, 'php-b.sock')}, cwd: ${wwwB}, environment: { PHP_FCGI_CHILDREN: "2" }, stopTimeout: 2s }`,
    'routes:',
    `  - { match: { prefix: /cgi/ }, protocol: cgi, spawn: cgi-a, docroot: ${cgiA}, stripPrefix: true, scriptExtensions: [.pl] }`,
    `  - { match: { prefix: /b/ }, protocol: fastcgi, spawn: php-b, docroot: ${wwwB}, stripPrefix: true, scriptExtensions: [.php] }`,
    '',
  ].join('\n'))
  const gw = new Gateway({ configFile: file, log: silentLogger })
  await gw.start()
  t.teardown(() => gw.close())
  const port = Number(new URL(gw.addresses[0] ?? '').port)
  const url = `http://127.0.0.1:${port}`

  t.equal((await get(`${url}/b/stderr.php`)).status, 200, "B's script wrote a line to its php-cgi's stderr")
  t.ok(await waitFor(async () => (await get(`${url}/server-status?format=json`)).body.toString().includes('audit39-B-stderr-line'), 10_000), 'the status page keeps it (root, from loopback, sees it)')
  const r = await get(`${url}/cgi/probe.pl?status=${port}`)
  const body = r.body.toString()
  t.match(body, /^done$/m, `A's probe ran (${body.slice(-200)})`)
  t.match(body, new RegExp(`^status Uid:\\s+${A.id}\\s`, 'm'), 'as A')
  const todo = 'design gap: status allows loopback by default, and every tenant\'s code runs on loopback (docs/guides/multi-user.md "The status page")'
  t.match(body, new RegExp(`^statuspage ${port} 403$`, 'm'), 'A cannot read the status page', { todo })
  t.match(body, new RegExp(`^statusleak ${port} no$`, 'm'), "A cannot read B's stderr there", { todo })
})
