/**
 * docs/guides/multi-user.md, "What the child gets" and the limits, against real processes:
 * - `groups: user` on a socket spawn (php-cgi over FastCGI) and on a pipe spawn (a CGI script
 *   printing `id -G`) gives the child the target user's supplementary groups from the group
 *   database; without it (`groups: none`, the default) the child has none. [ROOT: a test user with
 *   a free uid >= 2000 and www-data as a supplementary group is created and deleted here]
 * - `limits.cpu` in a config is a duration: `cpu: 60s` is "Max cpu time 60", a bare `cpu: 60` is
 *   60 ms, rounded up to 1 s ("Max cpu time 1"); in the SpawnManager API `cpu: 60` is 60 seconds.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { chmodSync, readFileSync, realpathSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { havePeer, PHP_CGI, tempDir } from '../fastcgi/helpers/peers.js'
import { writeScripts } from '../cgi/harness.js'
import { SpawnManager } from '../../src/spawn/manager.js'
import type { Proxy } from '../../src/index.js'

type Tap = Parameters<typeof tempDir>[0]
type Config = Parameters<typeof proxyServer>[1]

const SUPPLEMENTARY = 'www-data'

function gid (group: string): number | null {
  try { return Number(execFileSync('getent', ['group', group], { encoding: 'utf8' }).split(':')[2]) } catch { return null }
}

function idFree (id: number): boolean {
  for (const db of ['passwd', 'group']) {
    try { execFileSync('getent', [db, String(id)], { stdio: 'ignore' }); return false } catch {}
  }
  return true
}

/** Root only: a user with its own group (same free id >= 2000) and `SUPPLEMENTARY` as a supplementary group, deleted at teardown. */
function testUser (t: Tap): { name: string, id: number, extra: number } | null {
  if (process.getuid?.() !== 0) {
    if (process.env.CI === 'true') t.fail('needs root in CI')
    else t.plan(0, 'needs root')
    return null
  }
  const extra = gid(SUPPLEMENTARY)
  if (extra === null) {
    if (process.env.CI === 'true') t.fail(`group ${SUPPLEMENTARY} is missing`)
    else t.plan(0, `group ${SUPPLEMENTARY} is missing`)
    return null
  }
  let id = 2000 + (process.pid % 5000)
  while (!idFree(id)) id++
  const name = `pcdoc${id}`
  execFileSync('groupadd', ['-g', String(id), name])
  t.teardown(() => { try { execFileSync('userdel', [name], { stdio: 'ignore' }) } catch {} try { execFileSync('groupdel', [name], { stdio: 'ignore' }) } catch {} })
  execFileSync('useradd', ['-M', '-N', '-u', String(id), '-g', String(id), '-G', SUPPLEMENTARY, '-s', '/usr/sbin/nologin', name])
  return { name, id, extra }
}

/** Sorted numeric ids from a whitespace-separated list. */
const ids = (s: string): number[] => s.trim().split(/\s+/).filter(Boolean).map(Number).sort((a, b) => a - b)

const GROUPS_PHP = '<?php header("Content-Type: text/plain"); preg_match("/^Groups:(.*)$/m", file_get_contents("/proc/self/status"), $m); echo posix_getuid(), " ", posix_getgid(), "|", trim($m[1]), "\\n";\n'
const GROUPS_CGI = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nprintf '%s %s|' \"$(id -u)\" \"$(id -g)\"\nsed -n 's/^Groups:[[:space:]]*//p' /proc/self/status\n"

/** A docroot with the PHP and CGI probes, root-owned, 0755 (passes the suEXEC checks). */
function site (t: Tap): { www: string, cgi: string } {
  const dir = tempDir(t, 'pc-doc-mu-')
  chmodSync(dir, 0o755)
  const www = join(dir, 'www')
  const cgi = join(dir, 'cgi')
  writeScripts(www, { 'groups.php': GROUPS_PHP }, 0o644)
  writeScripts(cgi, { 'groups.cgi': GROUPS_CGI })
  return { www, cgi }
}

function config (user: string, www: string, cgi: string, groups: 'user' | 'none' | undefined): Config {
  const g = groups === undefined ? {} : { groups }
  return {
    spawns: {
      php: { binPath: realpathSync(PHP_CGI), socketName: '127.0.0.1:0', user, group: user, environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s', ...g },
      cgi: { socketType: 'pipe', user, group: user, stopTimeout: '2s', ...g },
    },
    routes: [
      { match: { prefix: '/cgi/' }, protocol: 'cgi', spawn: 'cgi', docroot: cgi, stripPrefix: true, scriptExtensions: ['.cgi'] },
      { match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: www },
    ],
  } as Config
}

t.test('groups: user gives socket and pipe spawns the user\'s supplementary groups', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const u = testUser(t)
  if (u === null) return
  const { www, cgi } = site(t)
  const { url } = await proxyServer(t, config(u.name, www, cgi, 'user'))
  const php = await get(`${url}/groups.php`)
  t.equal(php.status, 200, php.body.toString())
  const [phpIds, phpGroups] = php.body.toString().split('|')
  t.equal(phpIds, `${u.id} ${u.id}`, 'php-cgi runs as the user')
  t.same(ids(phpGroups), ids(`${u.id} ${u.extra}`), `php-cgi (socket spawn) has the user's groups, ${SUPPLEMENTARY} included`)
  const sh = await get(`${url}/cgi/groups.cgi`)
  t.equal(sh.status, 200, sh.body.toString())
  const [cgiIds, cgiGroups] = sh.body.toString().split('|')
  t.equal(cgiIds, `${u.id} ${u.id}`, 'the CGI script runs as the user')
  t.same(ids(cgiGroups), ids(`${u.id} ${u.extra}`), `the CGI script (pipe spawn) has the user's groups, ${SUPPLEMENTARY} included`)
})

for (const groups of ['none', undefined] as const) {
  t.test(`groups: ${groups ?? '(unset, default none)'} leaves socket and pipe spawns without supplementary groups`, async (t) => {
    guardLeaks(t, { timeoutMs: 10_000 })
    if (!havePeer(t, PHP_CGI)) return
    const u = testUser(t)
    if (u === null) return
    const { www, cgi } = site(t)
    const { url } = await proxyServer(t, config(u.name, www, cgi, groups))
    const php = await get(`${url}/groups.php`)
    t.equal(php.status, 200, php.body.toString())
    t.equal(php.body.toString(), `${u.id} ${u.id}|\n`, 'php-cgi: the user\'s uid/gid, empty Groups:')
    const sh = await get(`${url}/cgi/groups.cgi`)
    t.equal(sh.status, 200, sh.body.toString())
    t.equal(sh.body.toString(), `${u.id} ${u.id}|\n`, 'the CGI script: the user\'s uid/gid, empty Groups:')
  })
}

/** "Max cpu time" soft and hard of a process, from /proc/<pid>/limits. */
function maxCpu (pid: number): string {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max cpu time'))
  return (line ?? '').replace(/\s+/g, ' ').trim()
}

function readyPid (statuses: ReturnType<NonNullable<Proxy['spawns']>['status']>, name: string): number {
  const pid = statuses.find((s) => s.name === name)?.processes.find((p) => p.pid !== null)?.pid
  if (typeof pid !== 'number') throw new Error(`no pid for spawn ${name}`)
  return pid
}

t.test('limits.cpu in a config is a duration: 60s -> Max cpu time 60, 60 (ms) -> 1', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI) || !havePeer(t, '/usr/bin/prlimit')) return
  const { www } = site(t)
  const spawn = (cpu: string | number) => ({ binPath: PHP_CGI, socketName: '127.0.0.1:0', environment: { PHP_FCGI_CHILDREN: '0' }, stopTimeout: '2s', limits: { cpu } })
  const { url, proxy } = await proxyServer(t, {
    spawns: { s60: spawn('60s'), bare: spawn(60) },
    routes: [
      { match: { prefix: '/a/', extension: '.php' }, protocol: 'fastcgi', spawn: 's60', docroot: www, stripPrefix: true },
      { match: { prefix: '/b/', extension: '.php' }, protocol: 'fastcgi', spawn: 'bare', docroot: www, stripPrefix: true },
    ],
  } as Config)
  // Both answer (a request each), then the limits of the processes that served them.
  t.equal((await get(`${url}/a/groups.php`)).status, 200)
  t.equal((await get(`${url}/b/groups.php`)).status, 200)
  const statuses = proxy.spawns!.status()
  t.equal(maxCpu(readyPid(statuses, 's60')), 'Max cpu time 60 60 seconds', 'cpu: 60s -> RLIMIT_CPU 60 s')
  t.equal(maxCpu(readyPid(statuses, 'bare')), 'Max cpu time 1 1 seconds', 'cpu: 60 (a bare number: 60 ms) -> rounded up to 1 s, as the guide warns')
})

t.test('limits.cpu in the SpawnManager API is seconds: cpu: 60 -> Max cpu time 60', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI) || !havePeer(t, '/usr/bin/prlimit')) return
  const manager = new SpawnManager()
  t.teardown(() => manager.close())
  manager.add('php', { binPath: PHP_CGI, socketName: '127.0.0.1:0', environment: { PHP_FCGI_CHILDREN: '0' }, stopTimeout: 2000, minProcs: 1, limits: { cpu: 60 } })
  await manager.start()
  const up = await waitFor(() => manager.status().some((s) => s.name === 'php' && s.processes.some((p) => p.pid !== null && p.state === 'ready')), 20_000)
  t.ok(up, 'the process is ready')
  t.equal(maxCpu(readyPid(manager.status(), 'php')), 'Max cpu time 60 60 seconds', 'API cpu: 60 -> RLIMIT_CPU 60 s')
})
