/**
 * docs/guides/multi-user.md, "Step by step: PHP and CGI sites, one user each", walked as a new
 * operator: the guide's setup script and sites.yaml run as written (only the paths moved under a
 * temp dir, the listen port 0, the site users renamed to test users with free ids), then every
 * `curl`/`grep` of the guide and the claims of the paragraphs after it, against the real CLI
 * (`proxycore check --explain`, `proxycore serve`), real php-cgi and CGI shell scripts:
 * - each site's PHP and CGI run as its user (uid, gid, no supplementary groups), the other site's
 *   0600 file is "denied", the status page shows uid/gid per process, /proc/<pid>/limits has the
 *   tenant's limits (CGI scripts too);
 * - a group-writable script and one owned by the other user are 403 with their codes, each with
 *   the guide's warn log line; a root-owned script runs as the site user;
 * - a third site added by SIGHUP starts, the running ones keep their pids; a reload with a
 *   group-writable program is rejected whole, with the code in the log;
 * - SIGINT stops every php-cgi.
 * [ROOT: three test users with free ids >= 2000 are created and deleted here]
 */
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, type Got } from '../helpers/servers.js'
import { havePeer, PHP_CGI } from '../fastcgi/helpers/peers.js'
import { idFree, withTestUsers, type TestUser } from '../helpers/users.js'
import { cli, killAtTeardown, root, runCli, serve } from '../cli/run.js'
import { guideBlocks, must, userEnv } from './snippets.js'

const GUIDE_FILE = join(root, 'docs/guides/multi-user.md')
const GUIDE = readFileSync(GUIDE_FILE, 'utf8')
const block = guideBlocks(GUIDE_FILE)
const STEP = '## Step by step: PHP and CGI sites, one user each'

/** Ids used by other test files (test/spawn/identity, check-explain, reload-identity, ...). */
const TAKEN = new Set([2001, 2002, 2005, 2011, 2041])

function usable (id: number): boolean {
  return !TAKEN.has(id) && idFree(id)
}

/** `n` test users with free ids (same id for user and group), named pcmu<id>. */
function freeUsers (n: number): TestUser[] {
  const out: TestUser[] = []
  for (let id = 3000 + (process.pid % 20000); out.length < n && id < 60000; id++) {
    if (usable(id)) out.push({ name: `pcmu${id}`, id })
  }
  return out
}

/** Pids of the processes running as `uid` (real uid). */
function pidsOf (uid: number): number[] {
  try {
    return execFileSync('pgrep', ['-U', String(uid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number)
  } catch { return [] }
}

/** `/proc/<pid>/status` lines Uid, Gid, Groups, whitespace squeezed. */
function idLines (pid: number): string[] {
  return readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').filter((l) => /^(Uid|Gid|Groups):/.test(l)).map((l) => l.replace(/\s+/g, ' ').trim())
}

/** The guide's `grep -E 'Max (cpu|data|open|processes)'` of /proc/<pid>/limits, squeezed. */
function limitLines (text: string): string[] {
  return text.split('\n').filter((l) => /Max (cpu|data|open|processes)/.test(l)).map((l) => l.replace(/\s+/g, ' ').trim())
}

const LIMITS = ['Max cpu time 600 600 seconds', 'Max data size 536870912 536870912 bytes', 'Max processes 64 64 processes', 'Max open files 1024 1024 files']

t.test('the step-by-step sites, as written, for alice and bob', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  if (!havePeer(t, PHP_CGI) || !havePeer(t, '/usr/bin/prlimit')) return
  const [A, B, C] = freeUsers(3)
  if (!withTestUsers(t, 'the multi-user sites walk', [A, B, C])) return
  // Before the users go: nothing may still run as them (userdel refuses a user with processes).
  t.teardown(async () => {
    for (const u of [A, B, C]) for (const pid of pidsOf(u.id)) { try { process.kill(pid, 'SIGKILL') } catch {} }
    await waitFor(() => [A, B, C].every((u) => pidsOf(u.id).length === 0), 10_000)
  })
  const base = mkdtempSync(join(tmpdir(), 'pc-mu-sites-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  chmodSync(base, 0o755)
  const names: Record<string, TestUser> = { alice: A, bob: B }
  const local = (text: string): string => text
    .replace(/\/(srv\/sites|etc\/proxycore|run\/proxycore)/g, `${base}/$1`)
    .replace(/\b(alice|bob)\b/g, (n) => names[n].name)
    .replace(/\b500([12])\b/g, (_, d: string) => String(d === '1' ? A.id : B.id))
  const sites = `${base}/srv/sites`

  // The setup script, users excepted (withTestUsers made them).
  const setup = block(STEP, 'sh')
  t.match(setup, /^groupadd -g 5001 alice && useradd -M -N -g 5001 -u 5001 -s \/usr\/sbin\/nologin alice$/m, 'the guide creates the users with groupadd + useradd')
  const script = local(setup.split('\n').filter((l) => !/^groupadd /.test(l)).join('\n'))
  const printed = execFileSync('sh', ['-ec', script], { encoding: 'utf8' }).trim()
  t.equal(printed, realpathSync(PHP_CGI), 'readlink -f /usr/bin/php-cgi prints the real file')
  t.match(setup, /# \/usr\/bin\/php-cgi8\.2 on Debian 12/)
  for (const u of [A, B]) {
    t.equal(readFileSync(`${sites}/${u.name}/secret.txt`, 'utf8'), `${u.name}'s secret\n`)
  }

  // sites.yaml, as written: only paths, names and the port changed (and the real php-cgi file).
  let yaml = block('`/etc/proxycore/sites.yaml`', 'yaml')
  yaml = must(yaml, 'listen: 127.0.0.1:8080', 'listen: 127.0.0.1:0')
  yaml = local(yaml).replace(/\/usr\/bin\/php-cgi8\.2/g, realpathSync(PHP_CGI))
  const file = `${base}/etc/proxycore/sites.yaml`
  writeFileSync(file, yaml)

  const checked = await runCli(['check', file, '--explain'])
  t.equal(checked.code, 0, checked.stderr)
  t.equal(checked.stdout, `${file}: ok (4 route(s), 4 spawn(s), 1 file(s))\n`, 'check --explain: the guide\'s "ok (4 route(s), 4 spawn(s), 1 file(s))"')

  // "A route without match.extension that has a docroot must set scriptExtensions": nothing enforces
  // it, `check --explain` passes without (the guide says so).
  const loose = `${base}/etc/proxycore/loose.yaml`
  writeFileSync(loose, must(yaml, 'index: [index.php], scriptExtensions: [.php] }', 'index: [index.php] }'))
  const looseCheck = await runCli(['check', loose, '--explain'])
  t.equal(looseCheck.code, 0, 'a PHP route without scriptExtensions passes check --explain')
  t.match(GUIDE, 'Nothing enforces this: `check` passes without it.')

  // "It needs the same privileges as serve (as non-root every user-switched spawn reports
  // ERR_IDENTITY_NOT_ROOT)": the same command as nobody.
  const nobody = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, cli, 'check', file, '--explain'], { cwd: root, encoding: 'utf8', env: userEnv, timeout: 60_000 })
  t.equal(nobody.status, 2, 'as nobody: exit 2')
  t.same(nobody.stderr.split('\n').filter((l) => l.startsWith('/spawns/')).map((l) => l.split(' ').slice(0, 2).join(' ')).sort(),
    [`/spawns/cgi-${A.name}:`, `/spawns/cgi-${B.name}:`, `/spawns/php-${A.name}:`, `/spawns/php-${B.name}:`].sort().map((p) => `${p} ERR_IDENTITY_NOT_ROOT`),
    'as nobody: each of the 4 user-switched spawns reports ERR_IDENTITY_NOT_ROOT')

  const s = await serve(file)
  killAtTeardown(t, s, () => [])
  const ask = async (host: string, path: string): Promise<Got> => await get(s.url + path, { headers: { host } })
  const alice = `${A.name}.localhost`
  const bob = `${B.name}.localhost`

  // The guide's curls, with what it says they print.
  const curls = block('node dist/cli/main.js serve /etc/proxycore/sites.yaml\n```', 'sh')
  t.match(curls, "curl -H 'Host: alice.localhost' http://127.0.0.1:8080/                 # uid 5001")
  const php = await ask(alice, '/')
  t.equal(php.status, 200, php.body.toString())
  t.equal(php.body.toString(), `uid ${A.id}\n`, 'alice\'s PHP runs as alice (uid 5001)')
  t.equal((await ask(bob, '/')).body.toString(), `uid ${B.id}\n`, 'bob\'s PHP runs as bob')
  t.match(curls, '# uid=5001(alice) gid=5001(alice) groups=5001(alice)')
  const id = await ask(alice, '/cgi/id.cgi')
  t.equal(id.status, 200, id.body.toString())
  t.equal(id.body.toString(), `uid=${A.id}(${A.name}) gid=${A.id}(${A.name}) groups=${A.id}(${A.name})\n`, 'the CGI script: alice, no other group')
  t.equal((await ask(bob, '/cgi/id.cgi')).body.toString(), `uid=${B.id}(${B.name}) gid=${B.id}(${B.name}) groups=${B.id}(${B.name})\n`)
  t.match(curls, "'http://127.0.0.1:8080/?read=/srv/sites/bob/secret.txt'     # uid 5001, denied")
  t.equal((await ask(alice, `/?read=${sites}/${B.name}/secret.txt`)).body.toString(), `uid ${A.id}\ndenied\n`, 'alice cannot read bob\'s secret')
  t.equal((await ask(alice, `/?read=${sites}/${A.name}/secret.txt`)).body.toString(), `uid ${A.id}\nread\n`, 'but her own (so "denied" above is the permission, not the probe)')
  t.equal((await ask(bob, `/?read=${sites}/${A.name}/secret.txt`)).body.toString(), `uid ${B.id}\ndenied\n`, 'nor bob alice\'s')

  // scriptExtensions at work: an upload with PHP code in it is refused, not run.
  writeFileSync(`${sites}/${A.name}/www/upload.jpg`, '<?php echo "PWNED";\n')
  const upload = await ask(alice, '/upload.jpg')
  t.equal(upload.status, 403, 'upload.jpg is not run as PHP (scriptExtensions: [.php])')
  t.notMatch(upload.body.toString(), /PWNED/)
  // "PHP scripts run by a php-cgi socket spawn (FastCGI) are not checked per request": a
  // group-writable index.php still runs.
  chmodSync(`${sites}/${A.name}/www/index.php`, 0o664)
  t.equal((await ask(alice, '/')).body.toString(), `uid ${A.id}\n`, 'a group-writable PHP script of a socket spawn runs (no per-request suEXEC check)')
  chmodSync(`${sites}/${A.name}/www/index.php`, 0o644)

  // The status page: uid/gid of every process.
  const status = JSON.parse((await get(`${s.url}/server-status?format=json`)).body.toString()) as { spawns: Array<{ name: string, state: string, processes: Array<{ pid: number | null, uid: number | null, gid: number | null }> }> }
  for (const [name, u] of [[`php-${A.name}`, A], [`php-${B.name}`, B]] as const) {
    const sp = status.spawns.find((x) => x.name === name)
    t.ok(sp !== undefined && sp.processes.length > 0, `${name} is on the status page with its processes`)
    t.same(sp?.processes.map((p) => [p.uid, p.gid]), sp?.processes.map(() => [u.id, u.id]), `${name}: every process shows uid:gid ${u.id}:${u.id}`)
  }
  t.match(GUIDE, 'The status query lists one process per php-cgi spawn, the master, with its uid and gid (its\n`PHP_FCGI_CHILDREN` workers are not listed), and none for the CGI spawns')
  for (const u of [A, B]) {
    t.equal(status.spawns.find((x) => x.name === `php-${u.name}`)?.processes.length, 1, `php-${u.name}: one process listed (the master), not its 2 workers`)
    t.equal(pidsOf(u.id).filter((pid) => /^php-cgi/.test(readFileSync(`/proc/${pid}/comm`, 'utf8'))).length, 3, `${u.name} runs 3 php-cgi (master + PHP_FCGI_CHILDREN 2)`)
    t.same(status.spawns.find((x) => x.name === `cgi-${u.name}`)?.processes, [], `cgi-${u.name}: no processes listed`)
  }
  t.comment(`status: ${JSON.stringify(status.spawns.map((x) => ({ name: x.name, state: x.state, processes: x.processes.map((p) => ({ pid: p.pid, uid: p.uid, gid: p.gid })) })))}`)

  // grep Uid/Gid/Groups and the limits of the oldest php-cgi of alice, as the guide does.
  t.match(curls, "grep -E '^(Uid|Gid|Groups)' /proc/$(pgrep -u alice -o php-cgi)/status   # 5001 four times, no Groups")
  const master = Number(execFileSync('pgrep', ['-u', A.name, '-o', 'php-cgi'], { encoding: 'utf8' }).trim())
  t.same(idLines(master), [`Uid: ${A.id} ${A.id} ${A.id} ${A.id}`, `Gid: ${A.id} ${A.id} ${A.id} ${A.id}`, 'Groups:'], 'php-cgi: 5001 four times, an empty Groups line')
  // "only fds 0-2 (and the listening socket)": fd 0 is the listening socket (handoff fd0).
  // Beyond 0-2, php-cgi's own semaphore file (/tmp/.ZendSem.*, opened by PHP itself) and, as the
  // guide says, /dev/null under the number of an fd this test process (so the proxy) inherited
  // without CLOEXEC from whatever started it (seen: tap's pipe at fd 251), never that fd itself.
  const target = (pid: number | 'self', fd: number): string => { try { return readlinkSync(`/proc/${pid}/fd/${fd}`) } catch { return '?' } }
  const extra = readdirSync(`/proc/${master}/fd`).map(Number).filter((fd) => fd > 2)
    .filter((fd) => !/^\/tmp\/\.ZendSem\./.test(target(master, fd)) && !(target(master, fd) === '/dev/null' && target('self', fd) !== '?'))
  t.same(extra.map((fd) => `${fd} -> ${target(master, fd)}`), [], 'php-cgi got nothing from proxycore but fds 0-2')
  t.match(readlinkSync(`/proc/${master}/fd/0`), /^socket:/, 'fd 0 is the listening socket')
  // "its unix socket chowned to the target user and the host's group, mode 0660"
  const sock = statSync(`${base}/run/proxycore/php-${A.name}.sock`)
  t.ok(sock.isSocket(), 'the socket is at socketName')
  t.same([sock.uid, sock.gid, sock.mode & 0o777], [A.id, process.getgid?.(), 0o660], 'owned by alice and the host\'s group, mode 0660')
  t.same(limitLines(readFileSync(`/proc/${master}/limits`, 'utf8')), LIMITS, 'the tenant\'s limits: cpu 10m = 600 s, data 512MiB, nofile 1024, processes 64')
  // A CGI script of the tenant's pipe spawn gets the same limits (one prlimit per script).
  writeFileSync(`${sites}/${A.name}/cgi/limits.cgi`, '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n"\ncat /proc/self/limits\n')
  chownSync(`${sites}/${A.name}/cgi/limits.cgi`, A.id, A.id)
  chmodSync(`${sites}/${A.name}/cgi/limits.cgi`, 0o755)
  const cgiLimits = await ask(alice, '/cgi/limits.cgi')
  t.equal(cgiLimits.status, 200, 'limits.cgi runs')
  t.same(limitLines(cgiLimits.body.toString()), LIMITS, 'a CGI script of the tenant runs under the same limits')

  // The refusals, each a 403 with its code and a warn log line.
  const idCgi = `${sites}/${A.name}/cgi/id.cgi`
  const refusals = curls.slice(curls.indexOf('chmod g+w'))
  const sh = (line: string): void => { execFileSync('sh', ['-ec', local(line)]) }
  const lines = refusals.split('\n')
  sh(lines[0].replace(/#.*/, ''))
  t.equal(statSync(idCgi).mode & 0o7777, 0o775, 'chmod g+w as the guide writes it')
  const gw = await ask(alice, '/cgi/id.cgi')
  t.equal(gw.status, 403, '# 403')
  t.match(gw.body.toString(), /Forbidden/)
  t.match(gw.body.toString(), 'ERR_SUEXEC_FILE_WRITABLE')
  t.match(GUIDE, 'e.g. `Program is writable by\ngroup or others: /srv/sites/alice/cgi/id.cgi: writable by group or others`')
  // The log line comes on proxycore's stderr, maybe after the response: wait for it (deadline).
  const logLine = async (code: string): Promise<Record<string, unknown> | undefined> => {
    await waitFor(() => s.logs().some((l) => l.code === code), 10_000)
    return s.logs().find((l) => l.code === code)
  }
  const gwLine = await logLine('ERR_SUEXEC_FILE_WRITABLE')
  t.equal(gwLine?.msg, `Program is writable by group or others: ${idCgi}: writable by group or others`, 'the warn line the guide quotes')
  t.equal(gwLine?.level, 40, 'at warn')
  sh(lines[2])
  t.equal((await ask(alice, '/cgi/id.cgi')).status, 200, 'chmod g-w: it runs again')
  t.match(lines[3], /^install -m 0755 -o bob -g bob /)
  // (the renaming of bob to the test user renames the file too: bob.cgi is <bob's name>.cgi)
  sh(lines[3])
  const bobCgi = `${sites}/${A.name}/cgi/${B.name}.cgi`
  t.ok(existsSync(bobCgi), 'install -o bob made bob.cgi')
  const theirs = await ask(alice, `/cgi/${B.name}.cgi`)
  t.equal(theirs.status, 403)
  t.match(theirs.body.toString(), 'ERR_SUEXEC_OWNER_MISMATCH')
  const ownLine = await logLine('ERR_SUEXEC_OWNER_MISMATCH')
  t.equal(ownLine?.msg, `Program or its directory is not owned by the target user: ${bobCgi}: owned by ${B.id}:${B.id}, not ${A.id}:${A.id} or root`, 'the warn line the guide quotes')
  t.equal(ownLine?.level, 40)
  sh(lines[5])
  t.notOk(existsSync(bobCgi), 'rm bob.cgi')
  // "A script owned by root (not writable by others) is accepted and runs as alice."
  execFileSync('install', ['-m', '0755', '-o', 'root', '-g', 'root', idCgi, `${sites}/${A.name}/cgi/root.cgi`])
  t.equal((await ask(alice, '/cgi/root.cgi')).body.toString(), `uid=${A.id}(${A.name}) gid=${A.id}(${A.name}) groups=${A.id}(${A.name})\n`, 'a root-owned script runs as alice')

  // A third site by editing the file and SIGHUP: its processes start, the others keep their pids.
  const alicePids = spawnPids(status, `php-${A.name}`)
  const bobPids = spawnPids(status, `php-${B.name}`)
  const cdir = `${sites}/${C.name}`
  execFileSync('install', ['-d', '-m', '0700', '-o', C.name, '-g', C.name, cdir, `${cdir}/www`])
  execFileSync('sh', ['-ec', `printf '<?php echo "uid ", posix_getuid(), "\\\\n";\\n' | install -m 0644 -o ${C.name} -g ${C.name} /dev/stdin ${cdir}/www/index.php`])
  const third = yaml
    .replace(/^tenants:\n/m, `tenants:\n  ${C.name}: { user: ${C.name}, group: ${C.name}, limits: { data: 512MiB, cpu: 10m, nofile: 1024, processes: 64 } }\n`)
    .replace(/^spawns:\n/m, `spawns:\n  php-${C.name}: { tenant: ${C.name}, binPath: ${realpathSync(PHP_CGI)}, socketName: ${base}/run/proxycore/php-${C.name}.sock, cwd: ${cdir}, environment: { PHP_FCGI_CHILDREN: "2" } }\n`)
    .replace(/^routes:\n/m, `routes:\n  - { name: ${C.name}-php, match: { host: ${C.name}.localhost }, protocol: fastcgi, spawn: php-${C.name}, docroot: ${cdir}/www, index: [index.php], scriptExtensions: [.php] }\n`)
  writeFileSync(file, third)
  const mark = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reloaded', mark)
  t.equal((await ask(`${C.name}.localhost`, '/')).body.toString(), `uid ${C.id}\n`, 'the third site answers, as its user')
  const after = JSON.parse((await get(`${s.url}/server-status?format=json`)).body.toString()) as typeof status
  t.same(spawnPids(after, `php-${A.name}`), alicePids, 'alice\'s php-cgi kept its pids')
  t.same(spawnPids(after, `php-${B.name}`), bobPids, 'bob\'s php-cgi kept its pids')

  // A reload whose new spawn would be refused (a group-writable program) is rejected as a whole.
  const bad = `${cdir}/app`
  writeFileSync(bad, '#!/bin/sh\nexec sleep 1000\n')
  chownSync(bad, C.id, C.id)
  chmodSync(bad, 0o775)
  writeFileSync(file, third.replace(/^spawns:\n/m, `spawns:\n  app-${C.name}: { tenant: ${C.name}, binPath: ${bad}, socketName: 127.0.0.1:0 }\n`))
  const mark2 = s.logs().length
  s.child.kill('SIGHUP')
  const rejected = await s.waitLog('reload rejected; the previous config keeps serving', mark2)
  t.match(JSON.stringify(rejected), 'ERR_SUEXEC_FILE_WRITABLE', 'the log names the code')
  t.equal((await ask(`${C.name}.localhost`, '/')).body.toString(), `uid ${C.id}\n`, 'the running config stays')
  const still = JSON.parse((await get(`${s.url}/server-status?format=json`)).body.toString()) as typeof status
  t.notOk(still.spawns.some((x) => x.name === `app-${C.name}`), 'the refused spawn is not there')
  t.same(spawnPids(still, `php-${A.name}`), alicePids, 'nothing of alice was touched')

  // "A tenant whose backend keeps crashing goes FAILED (its routes answer 503 ERR_SPAWN_FAILED);
  // the other tenants are not touched": the third site's php-cgi is killed each time it is back.
  const statusNow = async (): Promise<typeof status> => JSON.parse((await get(`${s.url}/server-status?format=json`)).body.toString()) as typeof status
  const carol = async (): Promise<{ state: string, pid: number | null }> => {
    const sp = (await statusNow()).spawns.find((x) => x.name === `php-${C.name}`)
    return { state: sp?.state ?? '?', pid: sp?.processes.find((p) => p.pid !== null)?.pid ?? null }
  }
  let kills = 0
  const killed = new Set<number>()
  const failed = await waitFor(async () => {
    const c = await carol()
    if (c.state === 'failed') return true
    if (c.pid !== null && !killed.has(c.pid)) { killed.add(c.pid); kills++; try { process.kill(c.pid, 'SIGKILL') } catch {} }
    return false
  }, 60_000, 20)
  t.ok(failed, `the third site's spawn goes FAILED after ${kills} crashes`)
  const down = await ask(`${C.name}.localhost`, '/')
  t.equal(down.status, 503, 'its route answers 503')
  t.match(down.body.toString(), 'ERR_SPAWN_FAILED')
  t.equal((await ask(alice, '/')).body.toString(), `uid ${A.id}\n`, 'alice\'s site still answers')
  const last = await statusNow()
  t.same(spawnPids(last, `php-${A.name}`), alicePids, 'alice\'s php-cgi untouched (same pids)')
  t.same(spawnPids(last, `php-${B.name}`), bobPids, 'bob\'s php-cgi untouched (same pids)')

  // "stop proxycore (Ctrl-C: it stops every php-cgi)".
  let exited = false
  void s.exited.then(() => { exited = true })
  s.child.kill('SIGINT')
  t.ok(await waitFor(() => exited, 20_000), 'SIGINT: proxycore exits')
  t.ok(await waitFor(() => [A, B, C].every((u) => pidsOf(u.id).length === 0), 10_000), 'no process of alice, bob or the third site is left')
})

function spawnPids (status: { spawns: Array<{ name: string, processes: Array<{ pid: number | null }> }> }, name: string): number[] {
  return (status.spawns.find((x) => x.name === name)?.processes ?? []).map((p) => p.pid ?? -1).sort((a, b) => a - b)
}

