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
import { chmodSync, chownSync, lchownSync, linkSync, mkdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { idFree, ownedFile, withTestUsers, type TestUser } from '../helpers/users.js'
import { root } from '../cli/run.js'
import { guideBlocks, must, project, run } from './snippets.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { havePeer, PHP_CGI, tempDir } from '../fastcgi/helpers/peers.js'
import { writeScripts } from '../cgi/harness.js'
import { SpawnManager } from '../../src/spawn/manager.js'
import type { Proxy } from '../../src/index.js'

type Tap = Parameters<typeof tempDir>[0]

const GUIDE_TEXT = readFileSync(join(root, 'docs/guides/multi-user.md'), 'utf8')
type Config = Parameters<typeof proxyServer>[1]

const SUPPLEMENTARY = 'www-data'

function gid (group: string): number | null {
  try { return Number(execFileSync('getent', ['group', group], { encoding: 'utf8' }).split(':')[2]) } catch { return null }
}

/**
 * Root only: a user with its own group (same free id, 60000-63999: no other test file creates
 * there, and other files' fixed ids in 2001-2199 are not free-looking ids this could take before
 * their file creates them) and `SUPPLEMENTARY` as a supplementary group, deleted at teardown.
 */
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
  let id = 60000 + (process.pid % 4000)
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

/**
 * "Checks at start()" applied per request to the CGI scripts of a user-switched pipe spawn, tried
 * the ways a site user would try to get around them: a setuid/setgid script, another user's script
 * hard-linked in, a script whose group is not the user's, a directory of the docroot owned by the
 * other user, a root-owned sticky (world-writable) directory, a symlink to the user's own script,
 * a symlink (file or directory) into the other site. Each is 403 with the guide's code and never
 * runs (the script would print RAN). [ROOT: two test users with free ids are created and deleted]
 */
t.test('suEXEC refusals per request, as a site user would try to get around them', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const users = twoUsers()
  if (!withTestUsers(t, 'suEXEC per-request refusals', users)) return
  const [A, B] = users
  const base = tempDir(t, 'pc-mu-refuse-')
  chmodSync(base, 0o755)
  const RAN = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nRAN %s\\n' \"$(id -u)\"\n"
  const dir = (path: string, uid: number, mode = 0o755, gid = uid): string => { mkdirSync(path); chownSync(path, uid, gid); chmodSync(path, mode); return path }
  const site = dir(join(base, 'alice'), A.id)
  const other = dir(join(base, 'bob'), B.id, 0o755)
  ownedFile(join(site, 'ok.cgi'), RAN, A.id, 0o755)
  ownedFile(join(site, 'suid.cgi'), RAN, A.id, 0o4755)
  ownedFile(join(site, 'sgid.cgi'), RAN, A.id, 0o2755)
  ownedFile(join(site, 'group.cgi'), RAN, A.id, 0o755, B.id)
  ownedFile(join(other, 'theirs.cgi'), RAN, B.id, 0o755)
  linkSync(join(other, 'theirs.cgi'), join(site, 'hardlink.cgi'))
  const sub = dir(join(site, 'sub'), B.id)
  ownedFile(join(sub, 'x.cgi'), RAN, A.id, 0o755)
  const sticky = dir(join(site, 'sticky'), 0, 0o1777)
  ownedFile(join(sticky, 'x.cgi'), RAN, A.id, 0o755)
  // Symlinks made by alice herself (owned by her): to her own script, to bob's script, to bob's directory.
  const link = (target: string, path: string): void => { symlinkSync(target, path); lchownSync(path, A.id, A.id) }
  link(join(site, 'ok.cgi'), join(site, 'mine.cgi'))
  link(join(other, 'theirs.cgi'), join(site, 'into-bob.cgi'))
  link(other, join(site, 'bobdir'))
  const lines: Array<{ obj: Record<string, unknown>, msg: string }> = []
  const logger = { debug: () => {}, info: () => {}, warn: (obj: object, msg?: string) => { lines.push({ obj: obj as Record<string, unknown>, msg: msg ?? '' }) }, error: (obj: object, msg?: string) => { lines.push({ obj: obj as Record<string, unknown>, msg: msg ?? '' }) } }
  const { url } = await proxyServer(t, {
    logger,
    identity: { allowedRoots: [base] },
    spawns: { cgi: { socketType: 'pipe', user: A.name, group: A.name, stopTimeout: '2s' } },
    routes: [{ match: { prefix: '/cgi/' }, protocol: 'cgi', spawn: 'cgi', docroot: site, stripPrefix: true, scriptExtensions: ['.cgi'] }],
  } as unknown as Config)
  const ok = await get(`${url}/cgi/ok.cgi`)
  t.equal(ok.body.toString(), `RAN ${A.id}\n`, 'a clean script of alice runs, as alice')
  const cases: Array<[string, string, string]> = [
    ['/cgi/suid.cgi', 'ERR_SUEXEC_SETID', 'a setuid script'],
    ['/cgi/sgid.cgi', 'ERR_SUEXEC_SETID', 'a setgid script'],
    ['/cgi/hardlink.cgi', 'ERR_SUEXEC_OWNER_MISMATCH', 'bob\'s script hard-linked into alice\'s docroot (a hard link is no symlink)'],
    ['/cgi/group.cgi', 'ERR_SUEXEC_OWNER_MISMATCH', 'alice\'s script with bob\'s group (suexec 21 compares uid and gid)'],
    ['/cgi/sub/x.cgi', 'ERR_SUEXEC_OWNER_MISMATCH', 'alice\'s script in a directory bob owns'],
    ['/cgi/sticky/x.cgi', 'ERR_SUEXEC_DIR_WRITABLE', 'alice\'s script in a root-owned sticky 1777 directory (sticky is accepted above the script, not as its own directory)'],
    ['/cgi/mine.cgi', 'ERR_SUEXEC_SYMLINK', 'a symlink to alice\'s own script (suexec 18)'],
    ['/cgi/into-bob.cgi', 'ERR_SCRIPT_FORBIDDEN', 'a symlink to bob\'s script'],
    ['/cgi/bobdir/theirs.cgi', 'ERR_SCRIPT_FORBIDDEN', 'a symlinked directory into bob\'s site'],
  ]
  for (const [path, code, what] of cases) {
    const r = await get(url + path)
    t.equal(r.status, 403, `${what}: 403`)
    t.match(r.body.toString(), code, `${what}: ${code}`)
    t.notMatch(r.body.toString(), /RAN/, `${what}: never run`)
  }
  const setid = lines.find((l) => l.obj.code === 'ERR_SUEXEC_SETID')
  t.equal(setid?.msg, `Program is setuid or setgid: ${join(site, 'suid.cgi')}: setuid or setgid`, 'each refusal is a log line with the code and the reason')
  // The guide's OWNER_MISMATCH row names the owner only; the group must be the user's too.
  t.match(GUIDE_TEXT, /`ERR_SUEXEC_OWNER_MISMATCH` \| program or its directory not owned by the target user and group \(or by root:root\)/, 'the guide says the group counts')
})

/**
 * "A user-switched CGI route's scripts are checked per request, so its docroot must lie inside a
 * root as well (else every request is 403 ERR_SUEXEC_NOT_IN_ROOT)".
 */
t.test('a user-switched CGI docroot outside allowedRoots: every script is 403 ERR_SUEXEC_NOT_IN_ROOT', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const users = twoUsers()
  if (!withTestUsers(t, 'allowedRoots per request', users.slice(0, 1))) return
  const [A] = users
  const base = tempDir(t, 'pc-mu-roots-')
  chmodSync(base, 0o755)
  const inside = join(base, 'apps')
  const outside = join(base, 'apps-evil')
  for (const d of [inside, outside]) { mkdirSync(d); chownSync(d, A.id, A.id); chmodSync(d, 0o755) }
  const RAN = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nRAN\\n'\n"
  ownedFile(join(inside, 'x.cgi'), RAN, A.id, 0o755)
  ownedFile(join(outside, 'x.cgi'), RAN, A.id, 0o755)
  const { url } = await proxyServer(t, {
    identity: { allowedRoots: [inside] },
    spawns: { cgi: { socketType: 'pipe', user: A.name, group: A.name, stopTimeout: '2s' } },
    routes: [
      { match: { prefix: '/in/' }, protocol: 'cgi', spawn: 'cgi', docroot: inside, stripPrefix: true, scriptExtensions: ['.cgi'] },
      { match: { prefix: '/out/' }, protocol: 'cgi', spawn: 'cgi', docroot: outside, stripPrefix: true, scriptExtensions: ['.cgi'] },
    ],
  } as unknown as Config)
  t.equal((await get(`${url}/in/x.cgi`)).body.toString(), 'RAN\n', 'inside the root: runs')
  const out = await get(`${url}/out/x.cgi`)
  t.equal(out.status, 403, 'apps-evil is not inside apps (boundary-aware)')
  t.match(out.body.toString(), 'ERR_SUEXEC_NOT_IN_ROOT')
  t.notMatch(out.body.toString(), /RAN/)
})

/**
 * At teardown, before withTestUsers deletes them (userdel refuses a user with processes): SIGKILL
 * whatever still runs as `users` (only this test's programs run as these fresh ids), with a deadline.
 */
function reapAtTeardown (t: Tap, users: readonly TestUser[]): void {
  const pids = (): number[] => users.flatMap((u) => {
    try { return execFileSync('pgrep', ['-U', String(u.id)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number) } catch { return [] }
  })
  t.teardown(async () => {
    for (const pid of pids()) { try { process.kill(pid, 'SIGKILL') } catch {} }
    await waitFor(() => pids().length === 0, 10_000)
  })
}

/** Two free ids (same id for user and group), not those other test files use. */
function twoUsers (): TestUser[] {
  const taken = new Set([2001, 2002, 2005, 2011, 2041])
  const out: TestUser[] = []
  for (let id = 40000 + (process.pid % 15000); out.length < 2 && id < 60000; id++) {
    if (!taken.has(id) && idFree(id)) out.push({ name: `pcmc${id}`, id })
  }
  return out
}

/**
 * The guide's opening snippet, as written (from a scratch project importing 'proxycore'), with
 * /srv/apps and /run/proxycore moved to a temp dir, the directory layout its comment prescribes
 * (/run/proxycore/alice/ owned by alice, 0700) and a small Python program that binds $SOCKET:
 * it starts as alice, the socket it bound is alice's, and the tenant's API limits are in
 * /proc/<pid>/limits (data 2**30 bytes, cpu 60 seconds, nofile 1024, processes 64).
 */
t.test('the opening SpawnManager snippet, as written: a tenant with limits, handoff self', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, '/usr/bin/prlimit') || !havePeer(t, '/usr/bin/python3')) return
  const users = twoUsers()
  if (!withTestUsers(t, 'the opening snippet', users.slice(0, 1))) return
  const [A] = users
  reapAtTeardown(t, [A])
  const dir = project(t)
  chmodSync(dir, 0o755)
  const mk = (path: string, uid: number, mode: number): void => { mkdirSync(path, { recursive: true }); chownSync(path, uid, uid); chmodSync(path, mode) }
  mk(join(dir, 'srv', 'apps'), 0, 0o755)
  mk(join(dir, 'srv', 'apps', 'alice'), A.id, 0o755)
  mk(join(dir, 'run', 'proxycore'), 0, 0o755)
  mk(join(dir, 'run', 'proxycore', 'alice'), A.id, 0o700)
  ownedFile(join(dir, 'srv', 'apps', 'alice', 'app'), `#!/usr/bin/python3
import os, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(os.environ['SOCKET'])
s.listen(16)
while True:
    c, _ = s.accept()
    c.close()
`, A.id, 0o755)
  const guide = guideBlocks(join(root, 'docs/guides/multi-user.md'))
  let snippet = guide('# Running each backend as its own user', 'ts')
  snippet = must(snippet, "['/srv/apps']", JSON.stringify([join(dir, 'srv', 'apps')]))
  snippet = must(snippet, "'/srv/apps/alice/app'", JSON.stringify(join(dir, 'srv', 'apps', 'alice', 'app')))
  snippet = must(snippet, "'/run/proxycore/alice/app.sock'", JSON.stringify(join(dir, 'run', 'proxycore', 'alice', 'app.sock')))
  snippet = must(snippet, "user: 'alice', group: 'alice'", `user: '${A.name}', group: '${A.name}'`)
  const script = `import { SpawnManager } from 'proxycore'
${snippet}
await spawns.start()
const { readFileSync, statSync } = await import('node:fs')
let p
for (const end = Date.now() + 20_000; Date.now() < end && p === undefined; await new Promise((resolve) => setTimeout(resolve, 20))) {
  p = spawns.status()[0].processes.find((x) => x.state === 'ready' && x.pid !== null)
}
console.log('RESULT ' + JSON.stringify({ limits: readFileSync('/proc/' + p.pid + '/limits', 'utf8'), status: readFileSync('/proc/' + p.pid + '/status', 'utf8'), sockUid: statSync(${JSON.stringify(join(dir, 'run', 'proxycore', 'alice', 'app.sock'))}).uid }))
await spawns.close()
console.log('CLOSED')
`
  writeFileSync(join(dir, 'snippet.mjs'), script)
  const r = run(t, dir, ['snippet.mjs'])
  const exit = await r.exited
  t.same(exit, { code: 0, signal: null }, 'the snippet runs to its end', { out: r.out() })
  const res = JSON.parse(/^RESULT (.*)$/m.exec(r.out())?.[1] ?? '{"limits":"","status":""}') as { limits: string, status: string, sockUid: number }
  const lim = (re: RegExp): string => (re.exec(res.limits)?.[0] ?? '').replace(/\s+/g, ' ').trim()
  t.equal(lim(/^Max data size.*$/m), 'Max data size 1073741824 1073741824 bytes', 'data: 2 ** 30')
  t.equal(lim(/^Max cpu time.*$/m), 'Max cpu time 60 60 seconds', 'cpu: 60 (seconds in the API)')
  t.equal(lim(/^Max open files.*$/m), 'Max open files 1024 1024 files')
  t.equal(lim(/^Max processes.*$/m), 'Max processes 64 64 processes')
  t.match(res.status, new RegExp(`^Uid:\\s+${A.id}\\s+${A.id}\\s+${A.id}\\s+${A.id}$`, 'm'), 'runs as alice')
  t.match(res.status, /^Groups:\s*$/m, 'no supplementary groups')
  t.equal(res.sockUid, A.id, 'the socket the program bound is alice\'s')
  t.match(r.out(), /^CLOSED$/m)
})
