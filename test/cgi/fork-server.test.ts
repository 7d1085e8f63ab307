/**
 * The CGI fork server through the whole pipeline (createProxy → cgi adapter → SpawnManager pipe
 * spawn → the helper → real /bin/sh scripts; fork-server-perl.test.ts runs it all again with the
 * Perl helper). The default launcher is the fork server, so every other CGI test runs through it
 * too; these prove what is particular to it: the child is the helper's, not ours, with exactly
 * what Node's spawn() would have given it; exec failures keep their errno; the helper dying fails
 * only the exchanges in flight, with a code, and the next request restarts it; a stranger on its
 * socket gets nothing.
 */
import t from 'tap'
import { lstatSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { connect } from 'node:net'
import { randomBytes } from 'node:crypto'
import { dirname, join } from 'node:path'
import { get } from '../helpers/servers.js'
import { childrenOf, guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import { cgiProxy, fetchRaw, parseEnv, tempDir, writeScripts } from './harness.js'
import { SH_SCRIPTS } from './fixtures.js'

const gone = (pgid: number): boolean => processGroup(pgid).every((p) => p.state === 'Z')

/** The helper (it names itself; CGI programs are its children, not ours). */
function helperPid (): number | undefined {
  return childrenOf().find((p) => p.comm.startsWith('proxycore-fork') && p.state !== 'Z')?.pid
}

const PROBE = `#!/bin/sh
printf 'Content-Type: text/plain\\n\\n'
read pid comm state ppid pgrp sid rest < /proc/$$/stat
echo "ids=$pid $ppid $pgrp $sid"
echo "cwd=$(pwd)"
echo "umask=$(umask)"
echo "--fds--"
ls -l /proc/self/fd/
echo "--env--"
env
`

interface Probe { pid: number, ppid: number, pgrp: number, sid: number, cwd: string, umask: string, fds: string[], env: Record<string, string> }

function parseProbe (text: string): Probe {
  const [head, rest] = text.split('--fds--\n')
  const [fds, env] = rest.split('--env--\n')
  const [pid, ppid, pgrp, sid] = (/ids=(.*)/.exec(head)?.[1] ?? '').split(' ').map(Number)
  return {
    pid, ppid, pgrp, sid,
    cwd: /cwd=(.*)/.exec(head)?.[1] ?? '',
    umask: /umask=(.*)/.exec(head)?.[1] ?? '',
    fds: fds.split('\n').filter((l) => l.startsWith('l')).map((l) => l.replace(/^.*\d\d:\d\d /, '')),
    env: parseEnv(env),
  }
}

/** A proxy with the same scripts behind a fork-server spawn (`/fs/`) and a direct one (`/direct/`). */
async function twoLaunchers (t: Parameters<typeof tempDir>[0]) {
  const dir = tempDir(t)
  const cgiDir = join(dir, 'cgi')
  writeScripts(cgiDir, { ...SH_SCRIPTS, 'probe.sh': PROBE, 'hello.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n%s' \"$QUERY_STRING\"\n" })
  const p = await cgiProxy(t, { fs: {}, direct: { launcher: 'direct' } }, [
    { match: { prefix: '/fs/' }, protocol: 'cgi', spawn: 'fs', docroot: cgiDir, stripPrefix: true },
    { match: { prefix: '/direct/' }, protocol: 'cgi', spawn: 'direct', docroot: cgiDir, stripPrefix: true },
  ])
  return { ...p, dir, cgiDir }
}

t.test('a fork-server child gets what spawn() gives: exact env, cwd, umask, fds 0-2 only, own session and group', async (t) => {
  guardLeaks(t)
  const p = await twoLaunchers(t)
  t.equal(p.manager.pipeStarter('fs').launcher, 'fork-server', 'default launcher (a fork server is there)')
  t.equal(p.manager.pipeStarter('direct').launcher, 'direct')
  const viaFs = parseProbe((await get(`${p.url}/fs/probe.sh/x?q=1`)).body.toString())
  const viaDirect = parseProbe((await get(`${p.url}/direct/probe.sh/x?q=1`)).body.toString())
  const helper = helperPid()
  t.ok(helper !== undefined, 'the helper runs, as our child')
  t.equal(viaFs.ppid, helper, 'forked by the helper, not by the proxy')
  t.equal(viaDirect.ppid, process.pid, 'direct: forked by the proxy')
  for (const [name, r] of [['fork server', viaFs], ['direct', viaDirect]] as const) {
    t.equal(r.pgrp, r.pid, `${name}: own process group`)
    t.equal(r.sid, r.pid, `${name}: own session`)
    t.equal(r.cwd, p.cgiDir, `${name}: cwd is the script's directory`)
    // No request body: stdin is /dev/null, as lighttpd's mod_cgi gives it (one connection fewer).
    t.match(r.fds.slice(0, 3), [/^0 -> \/dev\/null$/, /^1 -> socket:/, /^2 -> socket:/], `${name}: no body, stdin is /dev/null; 1-2 are sockets (libuv: socketpairs)`)
  }
  // With a body, stdin is a socket the body is written to, on both launchers.
  for (const route of ['fs', 'direct']) {
    const posted = parseProbe((await get(`${p.url}/${route}/probe.sh`, { method: 'POST', body: 'a=1' })).body.toString())
    t.match(posted.fds.slice(0, 3), [/^0 -> socket:/, /^1 -> socket:/, /^2 -> socket:/], `${route}: a POST's stdin is a socket`)
  }
  // Direct, Node passes on whatever the proxy inherited without close-on-exec; the helper closes
  // such descriptors when it starts, so a fork-server child has exactly 0-2.
  t.same(viaFs.fds.map((l) => l.split(' ')[0]).sort(), ['0', '1', '2', '3'], `fork server: fds 0-2 and ls's own directory fd, nothing else: ${viaFs.fds.join(', ')}`)
  t.match(viaFs.fds.find((l) => l.startsWith('3 ')), /^3 -> \/proc\/\d+\/fd$/)
  const hostUmask = /Umask:\s*(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]
  t.equal(viaFs.umask, hostUmask, 'umask: the host\'s (no identity switch)')
  t.equal(viaDirect.umask, hostUmask)
  // Same request on both routes: only the route prefix, the spawn's name and the port differ.
  // (tap's process tracking adds its own variables to what child_process.spawn() starts.)
  const direct = Object.fromEntries(Object.entries(viaDirect.env)
    .filter(([k]) => !k.startsWith('_TAPJS_') && k !== 'NODE_OPTIONS' && k !== 'REMOTE_PORT')
    .map(([k, v]) => [k, k === 'PROXYCORE_SPAWN' ? 'fs' : v.replaceAll('/direct/', '/fs/')]))
  delete viaFs.env.REMOTE_PORT
  t.same(viaFs.env, direct, 'the same environment, variable for variable')
  t.equal(viaFs.env.PROXYCORE_SPAWN, 'fs')
  t.notOk(Object.keys(viaFs.env).some((k) => k.startsWith('PERL')), 'nothing of the helper leaks')
})

t.test('exec failures keep their errno: 502 ERR_CGI_SPAWN, and the helper stays up', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  const cgiDir = join(dir, 'cgi')
  const hello = "printf 'Content-Type: text/plain\\n\\nran\\n'\n"
  writeScripts(cgiDir, { 'ok.sh': `#!/bin/sh\n${hello}`, 'noshebang.sh': hello })
  writeScripts(cgiDir, { 'noexec.sh': `#!/bin/sh\n${hello}` }, 0o644)
  // A pipe spawn's absolute binPath must exist at load: it goes after, so requests meet ENOENT.
  const ghostInterpreter = join(dir, 'interpreter')
  writeFileSync(ghostInterpreter, '#!/bin/sh\n', { mode: 0o755 })
  const p = await cgiProxy(t, {
    cgi: {},
    direct: { launcher: 'direct' },
    ghost: { binPath: ghostInterpreter },
    nocwd: { binPath: join(cgiDir, 'ok.sh'), cwd: '/nonexistent/dir' },
  }, [
    { match: { prefix: '/cgi-bin/' }, protocol: 'cgi', spawn: 'cgi', docroot: cgiDir, stripPrefix: true },
    { match: { prefix: '/direct/' }, protocol: 'cgi', spawn: 'direct', docroot: cgiDir, stripPrefix: true },
    { match: { prefix: '/ghost/' }, protocol: 'cgi', spawn: 'ghost', docroot: cgiDir, stripPrefix: true },
    { match: { prefix: '/nocwd/' }, protocol: 'cgi', spawn: 'nocwd' },
  ])
  rmSync(ghostInterpreter)
  t.equal((await get(`${p.url}/cgi-bin/ok.sh`)).body.toString(), 'ran\n')
  const helper = helperPid()
  const logged = (code: string): boolean => p.lines.some((l) => l.obj.code === 'ERR_CGI_SPAWN' && l.msg.includes(code))
  for (const [path, errno] of [['/cgi-bin/noexec.sh', 'EACCES'], ['/ghost/ok.sh', 'ENOENT'], ['/nocwd/', 'ENOENT (chdir)']]) {
    const r = await get(p.url + path)
    t.equal(r.status, 502, `${path}: 502`)
    t.match(r.body.toString(), 'ERR_CGI_SPAWN')
    t.ok(await waitFor(() => logged(errno)), `${path}: logged with ${errno}`)
  }
  // execvp(3) semantics, as libuv's: a file without #! that exec refuses (ENOEXEC) runs under /bin/sh.
  t.equal((await get(`${p.url}/cgi-bin/noshebang.sh`)).body.toString(), 'ran\n', 'no shebang: /bin/sh runs it (fork server)')
  t.equal((await get(`${p.url}/direct/noshebang.sh`)).body.toString(), 'ran\n', 'no shebang: /bin/sh runs it (direct)')
  t.equal(helperPid(), helper, 'the same helper throughout')
})

t.test('a program killed mid-body: the response is cut, its group stopped', async (t) => {
  guardLeaks(t)
  const p = await twoLaunchers(t)
  const self = await fetchRaw(`${p.url}/fs/killself.sh`)
  t.equal(self.status, 200)
  t.notOk(self.complete, 'kill -9 $$ mid-body → no final chunk')
  // From outside: SIGKILL the leader (big.sh exec'd head) while the body streams.
  const { pid, complete } = await new Promise<{ pid: number, complete: boolean }>((resolve, reject) => {
    const req = request(`${p.url}/fs/big.sh`, { agent: false }, (res) => {
      const pid = Number(res.headers['x-pid'])
      let received = 0
      let killed = false
      res.on('data', (c: Buffer) => {
        received += c.length
        if (!killed && received >= 64 * 1024) { killed = true; process.kill(pid, 'SIGKILL') }
      })
      res.on('close', () => resolve({ pid, complete: res.complete }))
    })
    req.on('error', reject)
    req.end()
  })
  t.notOk(complete, 'SIGKILL from outside → the client response is cut')
  t.ok(await waitFor(() => gone(pid), 5000), 'its backgrounded sleep went with it')
})

t.test('the helper killed with requests in flight: coded 502s, cut bodies, no orphans; the next request restarts it', async (t) => {
  guardLeaks(t)
  const p = await twoLaunchers(t)
  writeScripts(p.cgiDir, { 'park.sh': '#!/bin/sh\nsleep 300 &\necho $$ > "parked.$$"\nwait\n' })
  t.equal((await get(`${p.url}/fs/hello.sh?warm`)).body.toString(), 'warm')
  const before = helperPid() as number
  t.ok(before > 0)
  const parked = Array.from({ length: 4 }, () => get(`${p.url}/fs/park.sh`))
  let headSeen!: () => void
  const head = new Promise<void>((resolve) => { headSeen = resolve })
  const midBody = new Promise<{ status: number, body: string, complete: boolean, pid: number }>((resolve, reject) => {
    const req = request(`${p.url}/fs/slowbody.sh`, { agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString(); headSeen() })
      res.on('close', () => resolve({ status: res.statusCode ?? 0, body, complete: res.complete, pid: Number(res.headers['x-pid']) }))
    })
    req.on('error', reject)
    req.end()
  })
  const pidFiles = (): string[] => readdirSync(p.cgiDir).filter((f) => f.startsWith('parked.'))
  t.ok(await waitFor(() => pidFiles().length === 4, 10_000), 'four scripts parked')
  await head
  const pids = pidFiles().map((f) => Number(f.slice('parked.'.length)))
  process.kill(before, 'SIGKILL')
  for (const r of await Promise.all(parked)) {
    t.equal(r.status, 502, 'in flight before the head: 502')
    t.match(r.body.toString(), 'ERR_CGI_FORK_SERVER')
  }
  const cut = await midBody
  t.same([cut.status, cut.body, cut.complete], [200, 'first', false], 'in the body: the response is cut')
  t.ok(await waitFor(() => [...pids, cut.pid].every(gone), 5000), 'the programs the helper left behind are killed, groups and all')
  t.ok(p.lines.some((l) => l.obj.code === 'ERR_CGI_FORK_SERVER' && /killed by SIGKILL/.test(l.msg)), 'logged: why')
  t.equal((await get(`${p.url}/fs/hello.sh?again`)).body.toString(), 'again', 'the next request works')
  const after = helperPid()
  t.ok(after !== undefined && after !== before, `a new helper (${before} → ${after})`)
})

t.test('the helper socket: private directory, and a stranger\'s connection is dropped', async (t) => {
  guardLeaks(t)
  const p = await twoLaunchers(t)
  t.equal((await get(`${p.url}/fs/hello.sh?a`)).body.toString(), 'a')
  const helper = helperPid() as number
  // Its command line ends with the socket path: `proxycore-fork-server <socket path>` (the Perl
  // helper's $0, one string) or the compiled helper's argv.
  const path = readFileSync(`/proc/${helper}/cmdline`, 'utf8').replace(/\0+$/, '').split(/[\0 ]/).pop() as string
  t.match(path, /\/proxycore-fork-[^/]+\/stdio\.sock$/)
  const st = lstatSync(dirname(path))
  t.equal(st.mode & 0o777, 0o700, 'socket directory mode 0700')
  t.equal(st.uid, process.getuid?.(), 'owned by the proxy user')
  const dropped = (hello: Buffer, end: boolean): Promise<boolean> => new Promise((resolve) => {
    const s = connect(path)
    s.on('error', () => {})
    s.on('connect', () => { if (end) s.end(hello); else s.write(hello) })
    s.on('close', () => resolve(true))
    s.resume()
  })
  t.ok(await dropped(Buffer.concat([randomBytes(16), Buffer.from([1])]), false), 'a wrong token is closed (connection kept open by the stranger)')
  t.ok(await dropped(Buffer.concat([randomBytes(16), Buffer.from([7])]), false), 'a bad fd number is closed')
  t.ok(await dropped(Buffer.from('short'), true), 'a short hello is closed')
  t.equal((await get(`${p.url}/fs/hello.sh?b`)).body.toString(), 'b', 'and requests still work')
})

t.test('200 concurrent requests through createProxy: every one answered, each with its own output', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const p = await twoLaunchers(t)
  const results = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => get(`${p.url}/fs/hello.sh?n${i}`)))
  const failures = results.flatMap((r, i) => r.status === 'rejected'
    ? [`#${i}: ${String(r.reason)}`]
    : r.value.status !== 200 || r.value.body.toString() !== `n${i}` ? [`#${i}: ${r.value.status} ${r.value.body.toString().slice(0, 60)}`] : [])
  t.same(failures, [], '0 failures, no crossed streams')
  t.ok(await waitFor(() => p.manager.status().find((s) => s.name === 'fs')?.pipeChildren === 0, 5000), 'every child reaped')
})

t.test('launcher: direct still starts with Node\'s spawn()', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(join(dir, 'cgi'), { 'probe.sh': PROBE })
  const p = await cgiProxy(t, { cgi: { launcher: 'direct' } }, [
    { match: { prefix: '/cgi-bin/' }, protocol: 'cgi', spawn: 'cgi', docroot: join(dir, 'cgi'), stripPrefix: true },
  ])
  const r = parseProbe((await get(`${p.url}/cgi-bin/probe.sh`)).body.toString())
  t.equal(r.ppid, process.pid, 'our own child')
  t.equal(helperPid(), undefined, 'no helper was started')
})

t.test('root: a user-switched script through the fork server has no supplementary groups and umask 022', async (t) => {
  if (process.getuid?.() !== 0) { t.plan(0, 'needs root'); return }
  guardLeaks(t)
  const dir = tempDir(t)
  const { chmodSync } = await import('node:fs')
  chmodSync(dir, 0o755)
  writeScripts(join(dir, 'cgi'), { 'id.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nprintf '%s %s %s\\n' \"$(id -u)\" \"$(id -g)\" \"$(umask)\"\ngrep -E '^Groups:' /proc/self/status\n" })
  const p = await cgiProxy(t, { fs: { user: 'nobody', group: 'nogroup' }, direct: { user: 'nobody', group: 'nogroup', launcher: 'direct' } }, [
    { match: { prefix: '/fs/' }, protocol: 'cgi', spawn: 'fs', docroot: join(dir, 'cgi'), stripPrefix: true },
    { match: { prefix: '/direct/' }, protocol: 'cgi', spawn: 'direct', docroot: join(dir, 'cgi'), stripPrefix: true },
  ])
  const fs = (await get(`${p.url}/fs/id.sh`)).body.toString()
  t.match(fs, /^65534 65534 0022\nGroups:\s*\n$/, 'uid/gid switched by the helper, setgroups(0), umask set natively')
  t.equal(fs, (await get(`${p.url}/direct/id.sh`)).body.toString(), 'the same as Node\'s spawn() (+ the umask shell)')
})
