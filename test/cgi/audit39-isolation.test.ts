/**
 * Audit 39: multi-user isolation, as an attacker who controls site A's scripts. Two real users (A
 * and B), one createProxy host (this process, root) with: A's CGI scripts started by the fork
 * server and directly, A's php-cgi (FastCGI socket spawn on a unix socket), and three php-cgi of
 * B's: on a unix socket (handoff fd0), on one it binds itself (handoff self, `-b`) and on a loopback
 * TCP port, with a secret in their `environment`. A Perl CGI script of A's
 * (test/spawn/fixtures/audit39/probe.pl) and a PHP script of A's (probe.php) report what they can
 * reach; the host has supplementary groups of its own and variables a program must never get
 * (LD_LIBRARY_PATH, PHPRC, PERL5OPT, a secret), so that a leak would show. Where A can connect to
 * one of B's php-cgi, the probe asks it for a PHP file A wrote: code run as B.
 * - php-cgi -b makes its self-bound socket 0777: in a B-owned 0755 directory A ran code as B
 *   through it. A user-switched handoff self socket must now lie where other users cannot search
 *   (ERR_SPAWN_SOCKET_DIR_UNSAFE otherwise, test/spawn/handoff-self-socket.test.ts): B's 0700 one.
 * - B's TCP port stays open to A (todo: a design gap, docs/guides/multi-user.md).
 * audit39-isolation-perl.test.ts runs it all again with the Perl fork server.
 * [ROOT] Skipped with the reason locally without root; a failure under CI=true.
 */
import t, { type Test } from 'tap'
import { chmodSync, lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { closeServer, get, listen } from '../helpers/servers.js'
import { tempDir } from '../helpers/tmp.js'
import { ownedDir, ownedFile, withTestUsers, type TestUser } from '../helpers/users.js'
import { havePeer, PHP_CGI } from '../fastcgi/helpers/peers.js'
import { createProxy, type CreateProxyOptions } from '../../src/index.js'

const forkServer = process.env.PROXYCORE_FORK_SERVER === 'perl' ? 'perl' : 'compiled'
// Other users for the Perl run: tap runs the two files at once.
const A: TestUser = forkServer === 'perl' ? { name: 'pcau39c', id: 2195 } : { name: 'pcau39a', id: 2193 }
const B: TestUser = forkServer === 'perl' ? { name: 'pcau39d', id: 2196 } : { name: 'pcau39b', id: 2194 }
const FIXTURES = fileURLToPath(new URL('../spawn/fixtures/audit39/', import.meta.url))
const SAFE_PATH = '/usr/local/bin:/usr/bin:/bin'
/** Supplementary groups the host gets for this test (adm, disk): none may reach A. */
const HOST_GROUPS = [4, 6]
/** Variables of the host's own environment a tenant's program must never see. */
const HOST_ENV: Record<string, string> = {
  LD_LIBRARY_PATH: '/nonexistent-audit39', PHPRC: '/nonexistent-audit39', PERL5OPT: '-w', PROXYCORE_AUDIT39_SECRET: 'host-secret',
}

const dir = ownedDir
/** A fixture of test/spawn/fixtures/audit39/ at `to`, with exactly this owner and mode. */
const install = (from: string, to: string, uid: number, mode: number): void => ownedFile(to, readFileSync(join(FIXTURES, from)), uid, mode)

/** Live processes: pid, ppid, real uid, comm (from /proc). */
function processes (): Array<{ pid: number, ppid: number, uid: number, comm: string }> {
  const out: Array<{ pid: number, ppid: number, uid: number, comm: string }> = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const status = readFileSync(`/proc/${name}/status`, 'utf8')
      const field = (k: string): string => new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(status)?.[1] ?? ''
      out.push({ pid: Number(name), ppid: Number(field('PPid')), uid: Number(field('Uid')), comm: field('Name') })
    } catch {}
  }
  return out
}

/** The probe's `<what> <subject> <result>` lines, by `<what> <subject>` (the result may have spaces). */
function findings (body: string): Map<string, string> {
  const m = new Map<string, string>()
  for (const line of body.split('\n')) {
    const [what, subject, ...result] = line.split(' ')
    if (what !== undefined && subject !== undefined) m.set(`${what} ${subject}`, result.join(' '))
  }
  return m
}

/** The status/limits lines of a probe, tab-separated fields. */
function field (body: string, prefix: string): string {
  return (body.split('\n').find((l) => l.startsWith(prefix)) ?? '').slice(prefix.length).trim().replace(/\s+/g, ' ')
}

/** The socket inodes among `fds` (`<fd> socket:[N]` lines) that one of `pids` holds open too. */
function shared (fds: string[], pids: number[]): string[] {
  const theirs = new Set<string>()
  for (const pid of pids) {
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try { theirs.add(readlinkSync(`/proc/${pid}/fd/${fd}`)) } catch {}
      }
    } catch {}
  }
  return fds.map((l) => l.split(' ')[1] ?? '').filter((s) => s.startsWith('socket:') && theirs.has(s))
}

/** At teardown, before withTestUsers deletes them: SIGKILL whatever still runs as the users. */
function reapAtTeardown (t: Test): void {
  const left = (): number[] => processes().filter((p) => p.uid === A.id || p.uid === B.id).map((p) => p.pid)
  t.teardown(async () => {
    for (const pid of left()) { try { process.kill(pid, 'SIGKILL') } catch {} }
    await waitFor(() => left().length === 0, 10_000)
  })
}

/** What a tenant's process must show: its own ids four times, no groups, no capabilities, its limits, umask 022. */
function checkIdentity (t: Test, what: string, body: string, limits: boolean): void {
  t.equal(field(body, 'status Uid:'), `${A.id} ${A.id} ${A.id} ${A.id}`, `${what}: uid A (real, effective, saved, fs)`)
  t.equal(field(body, 'status Gid:'), `${A.id} ${A.id} ${A.id} ${A.id}`, `${what}: gid A`)
  t.equal(field(body, 'status Groups:'), '', `${what}: no supplementary groups (the host has ${HOST_GROUPS.join(', ')})`)
  t.equal(field(body, 'status CapEff:'), '0000000000000000', `${what}: no effective capabilities`)
  t.match(body, /^umask 0022$/m, `${what}: umask 022`)
  // Not promised by the docs (a set-uid program of the system, su or passwd, still runs as such).
  t.comment(`${what}: NoNewPrivs ${field(body, 'status NoNewPrivs:')}`)
  if (limits) {
    t.equal(field(body, 'limits Max open files'), '256 256 files', `${what}: the tenant's nofile, soft and hard (A cannot raise it)`)
    t.equal(field(body, 'limits Max processes'), '64 64 processes', `${what}: nproc`)
    t.equal(field(body, 'limits Max cpu time'), '60 60 seconds', `${what}: cpu`)
    t.equal(field(body, 'limits Max data size'), '536870912 536870912 bytes', `${what}: data`)
  }
  const names = body.split('\n').filter((l) => l.startsWith('env ')).map((l) => l.slice(4))
  // tap's process-info hook adds NODE_OPTIONS and _TAPJS_* to every child this process spawns, the
  // spawn's clean environment included (not the fork server's programs: it takes theirs from the
  // frame). PWD: the umask shell of a direct start (dash) exports the script's directory.
  const harness = (n: string): boolean => n === 'NODE_OPTIONS' || n.startsWith('_TAPJS_') || n === 'PWD'
  const leaked = names.filter((n) => n in HOST_ENV || n === 'B_SECRET' || n === 'HTTP_PROXY' || n === 'HTTP_X_EVIL' || n.startsWith('LD_') || (n !== 'PATH' && !harness(n) && n in process.env))
  t.same(leaked, [], `${what}: none of the host's variables, no HTTP_PROXY, nothing of B's (has: ${names.join(' ')})`)
}

t.test(`tenant A's code cannot reach B, the proxy or root (${forkServer} fork server)`, async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  if (!withTestUsers(t, 'isolation audit', [A, B])) return
  guardLeaks(t, { timeoutMs: 15_000 })
  reapAtTeardown(t)
  const groupsBefore = process.getgroups?.() ?? []
  process.setgroups?.(HOST_GROUPS)
  t.teardown(() => { process.setgroups?.(groupsBefore) })
  for (const [k, v] of Object.entries(HOST_ENV)) {
    process.env[k] = v
    t.teardown(() => { delete process.env[k] })
  }

  const T = tempDir(t, 'pc-audit39-')
  chmodSync(T, 0o755)
  const a = dir(join(T, 'a'), A.id)
  const cgiA = dir(join(a, 'cgi'), A.id)
  const wwwA = dir(join(a, 'www'), A.id)
  const wwwB = dir(join(T, 'b'), B.id, 0o700)
  // root-owned, 0755, as runDir /run/proxycore: the sockets' own owner and mode decide.
  const run = dir(join(T, 'run'), 0)
  install('probe.pl', join(cgiA, 'probe.pl'), A.id, 0o755)
  install('probe.php', join(wwwA, 'probe.php'), A.id, 0o644)
  install('probe.php', join(wwwB, 'probe.php'), B.id, 0o644)
  const php = realpathSync(PHP_CGI)
  const sockA = join(run, 'php-a.sock')
  const sockB = join(run, 'php-b.sock')
  // handoff self: php-cgi binds this itself, in a directory of B's only B (and root) can enter.
  const selfB = join(dir(join(run, 'b'), B.id, 0o700), 'php-b-self.sock')
  const tcpB = await freePort()
  // Two workers: the proxy keeps its connection to one open between requests (FastCGI keep-alive).
  const phpEnv = { PHP_FCGI_CHILDREN: '2' }

  const config = {
    identity: { minUid: 1000, minGid: 1000 },
    tenants: {
      a: { user: A.name, group: A.name, limits: { nofile: 256, processes: 64, cpu: '60s', data: '512MiB' } },
      b: { user: B.name, group: B.name },
    },
    spawns: {
      'cgi-a': { tenant: 'a', socketType: 'pipe', launcher: 'fork-server', stopTimeout: 2000 },
      'cgi-a-direct': { tenant: 'a', socketType: 'pipe', launcher: 'direct', stopTimeout: 2000 },
      'php-a': { tenant: 'a', binPath: php, socketName: sockA, cwd: wwwA, environment: phpEnv, stopTimeout: 2000 },
      'php-b': { tenant: 'b', binPath: php, socketName: sockB, cwd: wwwB, environment: { ...phpEnv, B_SECRET: 'audit39-b-secret' }, stopTimeout: 2000 },
      'php-b-self': { tenant: 'b', binPath: [php, '-b', selfB], socketName: selfB, handoff: 'self', cwd: wwwB, environment: phpEnv, stopTimeout: 2000 },
      'php-b-tcp': { tenant: 'b', binPath: php, socketName: `127.0.0.1:${tcpB}`, cwd: wwwB, environment: { ...phpEnv, B_SECRET: 'audit39-b-secret' }, stopTimeout: 2000 },
    },
    routes: [
      { match: { prefix: '/fs/' }, protocol: 'cgi', spawn: 'cgi-a', docroot: cgiA, stripPrefix: true, scriptExtensions: ['.pl'] },
      { match: { prefix: '/direct/' }, protocol: 'cgi', spawn: 'cgi-a-direct', docroot: cgiA, stripPrefix: true, scriptExtensions: ['.pl'] },
      { match: { prefix: '/php-a/' }, protocol: 'fastcgi', spawn: 'php-a', docroot: wwwA, stripPrefix: true, scriptExtensions: ['.php'] },
      { match: { prefix: '/php-b/' }, protocol: 'fastcgi', spawn: 'php-b', docroot: wwwB, stripPrefix: true, scriptExtensions: ['.php'] },
      { match: { prefix: '/php-b-self/' }, protocol: 'fastcgi', spawn: 'php-b-self', docroot: wwwB, stripPrefix: true, scriptExtensions: ['.php'] },
      { match: { prefix: '/php-b-tcp/' }, protocol: 'fastcgi', spawn: 'php-b-tcp', docroot: wwwB, stripPrefix: true, scriptExtensions: ['.php'] },
    ],
  } as unknown as CreateProxyOptions
  const said: string[] = []
  const log = (obj: object, msg?: string): void => { said.push(`${msg ?? ''} ${JSON.stringify(obj)}`) }
  const proxy = await createProxy({ logger: { debug: () => {}, info: () => {}, warn: log, error: log }, ...config })
  t.teardown(() => { if (said.length > 0) t.comment(`warnings: ${said.join(' | ').slice(0, 4000)}`) })
  const server: Server = createServer(proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(2000) })
  const url = `http://127.0.0.1:${port}`

  // Everything up: each php-cgi answers, and the fork server runs (it starts with its first program).
  for (const path of ['/php-a/probe.php', '/php-b/probe.php', '/php-b-self/probe.php', '/php-b-tcp/probe.php', '/fs/probe.pl']) {
    const r = await get(url + path)
    t.equal(r.status, 200, `${path} answers (${r.body.toString().slice(0, 200)})`)
  }
  const st = lstatSync(selfB)
  t.same([st.uid, (st.mode & 0o777).toString(8)], [B.id, '777'], "B's self-bound socket: B's, 0777 as php-cgi made it (its directory keeps A out)")
  const ps = processes()
  const phpA = ps.filter((p) => p.uid === A.id && p.comm.startsWith('php-cgi')).map((p) => p.pid)
  const phpB = ps.filter((p) => p.uid === B.id && p.comm.startsWith('php-cgi')).map((p) => p.pid)
  const helper = ps.filter((p) => p.ppid === process.pid && (p.comm === 'perl' || p.comm.startsWith('proxycore-fork'))).map((p) => p.pid)
  t.ok(phpA.length >= 1 && phpB.length >= 3, `A's and B's php-cgi processes found (A ${phpA.join(',')}, B ${phpB.join(',')})`)
  t.equal(helper.length, 1, `the ${forkServer} fork server found (${helper.join(',')})`)
  t.ok(phpB.some((pid) => readFileSync(`/proc/${pid}/environ`, 'latin1').includes('\0B_SECRET=audit39-b-secret\0')), "B's php-cgi has the secret in its environment (root reads it)")

  const targets = [process.pid, ...helper, ...phpB]
  const query = `pids=${[...targets, phpA[0]].join(',')}&unix=${sockB},${selfB},${sockA}&tcp=${tcpB}&exploit=${tcpB},${selfB}`
  for (const route of ['fs', 'direct']) {
    const what = route === 'fs' ? `CGI via the ${forkServer} fork server` : 'CGI started directly'
    // A chunked body (no length): the proxy spools it to a temp file while the script runs.
    const r = await get(`${url}/${route}/probe.pl?${query}`, {
      method: 'POST', body: Buffer.alloc(1 << 20, 'x'),
      headers: { 'transfer-encoding': 'chunked', proxy: 'http://evil.example:1', 'x_evil': '1' },
    })
    const body = r.body.toString()
    t.equal(r.status, 200, `${what}: the probe ran`)
    t.match(body, /^done$/m, `${what}: the probe finished (${body.slice(-300)})`)
    const f = findings(body)
    checkIdentity(t, what, body, true)
    t.match(body, new RegExp(`^path ${SAFE_PATH}$`, 'm'), `${what}: the safe PATH`)

    // 2. Descriptors: 0-2 only (the fork server's are connections to its socket; direct: socketpairs).
    const fds = body.split('\n').filter((l) => l.startsWith('fd ')).map((l) => l.slice(3))
    // A direct start gets /dev/null in place of a descriptor the host inherited without
    // close-on-exec (tap's own here; audit-inherited-fds.test.ts): nothing of the host's.
    const extra = fds.filter((l) => !/^[012] /.test(l))
    t.same(fds.filter((l) => /^[012] /.test(l)).map((l) => l.split(' ')[0]), ['0', '1', '2'], `${what}: fds 0-2 (${fds.join(', ')})`)
    t.same(extra.filter((l) => route === 'fs' || !l.endsWith(' /dev/null')), [], `${what}: nothing more (${route === 'fs' ? 'the fork server closes every other' : 'but /dev/null'})`)
    t.same(fds.filter((l) => /^[012] /.test(l) && !/ socket:\[\d+\]$/.test(l)), [], `${what}: 0-2 each a socket (no file, no spool file, no log)`)
    t.same(shared(fds, [process.pid, ...helper, ...phpB]), [], `${what}: none of them is a socket the proxy, the fork server or B holds`)

    // 4. Other processes: the proxy (root), the fork server (root, its stdin is its control pipe), B's php-cgi.
    for (const pid of targets) {
      const who = pid === process.pid ? 'the proxy' : helper.includes(pid) ? 'the fork server' : "B's php-cgi"
      t.equal(f.get(`kill ${pid}`), 'EPERM', `${what}: kill -0 ${who} refused`)
      t.equal(f.get(`environ ${pid}`), 'EACCES', `${what}: /proc/<pid>/environ of ${who} unreadable`)
      t.equal(f.get(`fdlist ${pid}`), 'EACCES', `${what}: /proc/<pid>/fd of ${who} unlistable`)
      t.equal(f.get(`fd0 ${pid}`), 'EACCES', `${what}: /proc/<pid>/fd/0 of ${who} cannot be opened (the fork server's control pipe)`)
      t.equal(f.get(`mem ${pid}`), 'EACCES', `${what}: /proc/<pid>/mem of ${who} unreadable`)
      t.equal(f.get(`cmdline ${pid}`), 'ok', `${what}: the cmdline of ${who} is public, as for every process (no secret is passed in argv)`)
    }
    t.equal(f.get(`kill ${phpA[0]}`), 'ok', `${what}: control: A may signal its own php-cgi`)
    t.equal(f.get(`environ ${phpA[0]}`), 'ok', `${what}: control: and read its environment`)

    // 1. The fork server's stdio socket lies in a 0700 root directory: A cannot connect.
    const forkSocks = [...f].filter(([k]) => k.startsWith('forksock '))
    t.ok(forkSocks.length >= 1, `${what}: /proc/net/unix names the fork server's socket`)
    t.same(forkSocks.filter(([, v]) => v !== 'EACCES'), [], `${what}: A cannot connect to any fork server's socket`)

    // 3. Unix sockets: B's is B's and the host group's, mode 0660; A's own is the control.
    t.equal(f.get(`unix ${sockB}`), 'EACCES', `${what}: A cannot connect to B's unix socket`)
    // handoff self: the program makes the socket, and php-cgi -b chmods it 0777 (PHP's fcgi_listen);
    // its directory, B's 0700, is what keeps A out.
    t.equal(f.get(`unix ${selfB}`), 'EACCES', `${what}: nor to the one B's php-cgi bound itself (handoff self)`)
    t.equal(f.get(`exploit ${selfB}`), 'EACCES', `${what}: so A cannot run code as B through it`)
    t.equal(f.get(`unix ${sockA}`), 'ok', `${what}: control: A can connect to its own php-cgi's socket (owned by A)`)

    // 7. Spool files: unlinked at once, 0600 root.
    t.equal(f.get('spool readable'), '0', `${what}: no spooled request body A can open`)

    // 3 (TCP). A loopback port is open to every local user: B's php-cgi runs A's file as B.
    t.equal(f.get(`tcp ${tcpB}`), 'ok', `${what}: A can connect to B's TCP FastCGI port (any local user can)`)
    t.not(f.get(`exploit ${tcpB}`), `EXPLOIT uid=${B.id}`, `${what}: A cannot run code as B through B's TCP FastCGI port`,
      { todo: 'design gap: a TCP socketName of a user-switched FastCGI spawn is open to every local user (docs/guides/multi-user.md "Who can connect to a backend")' })
  }

  // A's php-cgi (FastCGI socket spawn): descriptors, ids, limits, environment.
  const r = await get(`${url}/php-a/probe.php`, { headers: { proxy: 'http://evil.example:1' } })
  const body = r.body.toString()
  t.match(body, /^done$/m, `A's php-cgi: the probe finished (${body.slice(-300)})`)
  checkIdentity(t, "A's php-cgi", body, true)
  const fds = body.split('\n').filter((l) => l.startsWith('fd ')).map((l) => l.slice(3))
  t.ok(fds.some((l) => l.startsWith('0 socket:')), `A's php-cgi: its listening socket as fd 0 (${fds.join(', ')})`)
  // Its own files aside (the script, PHP's deleted /tmp/.ZendSem.* lock, '?' for scandir's closed
  // handle), only sockets, pipes and /dev/null.
  const own = (l: string): boolean => l.includes(` ${a}/`) || / \/tmp\/\.ZendSem\.\S+ \(deleted\)$/.test(l) || / \?$/.test(l)
  t.same(fds.filter((l) => !own(l) && !/ (socket|pipe):\[\d+\]$/.test(l) && !/ \/dev\/null$/.test(l)), [], `A's php-cgi: nothing of the host's or B's (${fds.join(', ')})`)
  t.same(shared(fds, [process.pid, ...helper, ...phpB]), [], "A's php-cgi: none of them is a socket the proxy, the fork server or B holds")
})
