/**
 * ACCEPTANCE PLAN (RELIABILITY.md): the seven case numbers its coverage map holds only inside a
 * range, with no case text: AC-13, AC-16, AC-27, AC-64, AC-77, AC-87, AC-90. Each is inferred from
 * its range, the research passage of that range, and what the neighbouring cases leave out, then
 * checked against real peers (fcgiwrap, php-fpm, uWSGI in SCGI mode, /bin/sh CGI scripts, the
 * proxycore host as a real process); raw TCP fakes only for what a real peer cannot show.
 *
 * AC-13 Orphans of a SIGKILLed host are cleaned by the next one (range AC-01–AC-17 "supervision
 *   … orphans"; AC-12 covers the group kill while the host lives. RELIABILITY §4.7 [VERIFIED]: "A
 *   FastCGI child whose fd 0 is the listening socket gets no EOF, so it is orphaned and keeps the
 *   TCP port or unix socket"; rule: pidfile with pid, start time, pgid, on start "kill its group
 *   … then unlink the stale unix socket", "Never crash on EADDRINUSE"; §4.5 [VERIFIED] fcgiwrap -c 2
 *   workers survive SIGTERM to their parent; FastCGI 1.0 §2.2 listening socket on fd 0; lighttpd
 *   gw_spawn_connection unlinks a refused, stale socket).
 * - Setup: a real host process (createProxy + http.createServer, no signal handler) with
 *   `runDir` and a socket spawn `fcgiwrap -c 2` on a unix socket; a CGI script.
 * - Fault: SIGKILL the host. The parent-death signal ends the fcgiwrap leader; its two workers
 *   are not signalled (a signal set for the leader is not inherited by its forks) and keep the
 *   listening socket.
 * - Input: a second host with the same config; GET the script.
 * - Expected: the second host is ready and answers 200; no member of the old group is left; the
 *   pid file names only the new leader. (systemd kills the whole cgroup; supervisord and PM2 lose
 *   track; proxycore's pid file is its cgroup.) Finding, fixed: the pid file's group was killed
 *   only while its leader lived, so the workers kept the socket and the new host ended in FAILED
 *   start-limit-hit "in use by a process this manager does not own".
 *
 * AC-16 A live listener at the spawn's address is never stolen (range AC-01–AC-17; RELIABILITY
 *   §4.5 lighttpd gw_spawn_connection: "connect() to the configured address first. If it succeeds:
 *   'socket is already used; won't spawn'", only a refused unix path is unlinked; §4.7 "Never crash
 *   on EADDRINUSE; report the backend as FAILED with a reason"; §4.8 start limit; AC-14 covers
 *   exec failures, AC-17 readiness, neither an address held by someone else).
 * - Setup: a foreign net.Server on the unix path and one on the TCP port a fcgiwrap spawn is
 *   configured for; restart `maxStarts: 3`.
 * - Expected: each spawn ends FAILED with the cause in its reason (in use / EADDRINUSE); GET is 503
 *   ERR_SPAWN_FAILED with Retry-After; the foreign socket file is not unlinked and still answers;
 *   no crash, no fcgiwrap started. Once the foreign listeners close, `clear()` brings the spawn up
 *   and GET is 200 (systemd reset-failed).
 *
 * AC-27 The target user must be able to reach the script (range AC-18–AC-28 suexec checks; §1.1
 *   check 12 "All later checks run as the target user", 13–14 chdir/getcwd, 18 `lstat(cmd)` →
 *   117 "cannot stat program"; the manual's "can chdir to the program's directory"; §1.4 "Checks
 *   run after setuid: No, but equivalent"; RFC 3875 §7.2 the working directory "SHOULD be set to
 *   the directory containing the script"). AC-22 covers owner/mode of the script and its
 *   directory, not a directory above that root may enter and the target user may not. [ROOT]
 * - Setup: users sxa; `<T>/gate` root-owned 0700 holding `www/x.sh` (sxa, 0755, directory sxa
 *   0755), and `<T>/www/sub/x.sh` reachable; a user-switched CGI route on each.
 * - Expected: the reachable script → 200, run as sxa, `pwd` = its directory. The unreachable one →
 *   403 ERR_SUEXEC_NOT_FOUND (suexec 117, "cannot be stat'ed as the target user"), a log line with
 *   the code and the directory, the script never runs. httpd+suexec answers 500 here ("Premature
 *   end of script headers" after the policy exit); a refusal with its reason is what AC-22 asks for
 *   the other checks. Finding, fixed: the checks passed (run as root) and exec failed, 502
 *   ERR_CGI_SPAWN "spawn … EACCES".
 *
 * AC-64 Hop-by-hop fields of a backend response never reach the client (range AC-63–AC-67
 *   "Smuggling / framing (backend)"; RFC 9110 §7.6.1 "Intermediaries MUST parse a received
 *   Connection header field before a message is forwarded and … remove any header or trailer
 *   field(s) … with the same name as the connection-option, and then remove the Connection header
 *   field itself", and SHOULD remove Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade;
 *   RFC 9112 §6.3, §9.6; RELIABILITY §2.7 (AC-61 does the request side), rule 3 "Node frames the
 *   response itself"; nginx proxy_connection_headers.t 'upgrade in 200').
 * - Setup: FAKE-HTTP answering (a) 200 with `Connection: keep-alive, X-Internal, Set-Cookie`,
 *   `X-Internal`, `Set-Cookie`, `Keep-Alive: timeout=5`, `Proxy-Connection`, `Upgrade: h2c`, `TE`,
 *   `X-Kept`; (b) `Connection: close` with a body to EOF; (c) `Transfer-Encoding: chunked`.
 * - Input: the three GETs and a fourth pipelined on one client connection.
 * - Expected: (a) none of X-Internal, Set-Cookie, Proxy-Connection, Upgrade, TE, nor the
 *   backend's Keep-Alive value; X-Kept kept. (b) the backend's close does not close the client
 *   connection: the body is re-framed (chunked) and the next response follows on it. (c) the
 *   client framing is proxycore's own, exactly one. All four answered on the one connection.
 *
 * AC-77 A client that aborts its upload never leaves a short body that looks complete (range
 *   AC-73–AC-83; RELIABILITY §2.11 row "CONTENT_LENGTH vs STDIN bytes": "never send fewer STDIN
 *   bytes than CONTENT_LENGTH except on client abort, and then abort the FCGI request"; FastCGI
 *   1.0 §6.2 the Responder "should compare the number of bytes received on FCGI_STDIN with
 *   CONTENT_LENGTH and abort the update if the two numbers are not equal", §5.4 without
 *   multiplexing "the Web server can abort a request by closing the request's transport
 *   connection"). AC-80 covers aborts after the body, AC-59 a stalled (not closed) upload.
 * - Setup: php-fpm with a script that logs strlen(php://input) and CONTENT_LENGTH; FAKE-FCGI that
 *   records every record.
 * - Input: POST `Content-Length: 1048576`, 98 304 bytes sent, then the client closes.
 * - Expected: (a) default `requestBuffering: true` (nginx fastcgi_request_buffering on): php-fpm
 *   is never contacted, the script never runs. (b) `requestBuffering: false`: the FastCGI
 *   connection is closed with no terminating empty FCGI_STDIN record (the fake never sees a
 *   complete request); php-fpm (which runs the script on the closed connection [measured]) shows
 *   fewer bytes than CONTENT_LENGTH, which the script can compare. Then a normal POST → 200.
 *
 * AC-87 Values the SCGI netstring cannot carry, and the empty ones it must (range AC-85–AC-89;
 *   RELIABILITY §2.12: names and values are NUL-terminated, "a value containing NUL cannot be
 *   encoded … a decoded PATH_INFO can (%00) → 400 before dispatch"; the 2008 spec's
 *   `value ::= notnull*` allows empty values and RFC 3875 §4.1.7 says QUERY_STRING MUST be set;
 *   SCGI spec "CONTENT_LENGTH … must always be present, even if its value is '0'"). AC-85 covers
 *   the wire format with a fake, AC-86 chunked bodies, AC-88/89 responses.
 * - Setup: uWSGI in SCGI mode (`--scgi-socket`) with the echo app.
 * - Input: `/a%00b`, raw `X-Nul: a<NUL>b`; `/x`, `/x?`, `/x?a=%00`, `/a%2500b`, `X-Empty:` (empty).
 * - Expected: the NUL cases → 400 with a stable code, uWSGI never contacted (backend requests
 *   unchanged). The others → 200 with QUERY_STRING present (empty, or raw `a=%00`), PATH_INFO
 *   decoded once (`/a%00b`), HTTP_X_EMPTY present and empty, CONTENT_LENGTH "0".
 *
 * AC-90 CGI pipes: no deadlock both ways, and an early answer without reading the body (section
 *   J's first case: its neighbours AC-89 (the SCGI server answers without reading a 50 MiB body)
 *   and AC-91 (large stderr); RELIABILITY §2.13 first row: "Deadlock when the script writes a lot
 *   of stdout before reading stdin … pump stdin, stdout and stderr concurrently with
 *   backpressure"; RFC 3875 §4.2 "However, it is not obliged to read any of the data", §3.1 "the
 *   server retains its responsibility to the client … even if the CGI script fails to conform").
 * - Setup: shell CGI `early.sh` (writes 1 MiB, then reads stdin through sha256sum) and
 *   `noread.sh` (answers 413 at once, never reads stdin, exits).
 * - Input: POST 1 MiB to early.sh; POST 50 MiB to noread.sh with request buffering on and off.
 * - Expected: early.sh → 200 with 1 MiB of output and the sha of the upload (no deadlock: pipe
 *   buffers are 64 KiB). noread.sh → the client gets the 413 and its body, EPIPE on the script's
 *   stdin is swallowed (no crash), no process left.
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createHttpServer } from 'node:http'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { alive, childrenOf, guardLeaks, processesIn, processGroup, waitFor } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { closeServer, eachRequestHead, get, listen, proxyServer, rawBackend, rawRequest } from '../helpers/servers.js'
import { idFree, ownedFile, withTestUsers } from '../helpers/users.js'
import { settled } from '../helpers/counters.js'
import { cgiProxy, writeScripts } from '../cgi/harness.js'
import { FCGIWRAP, PHP_FPM, havePeer, startPhpFpm, tempDir } from '../fastcgi/helpers/peers.js'
import { respond, startFake } from '../fastcgi/helpers/fake.js'
import { haveUwsgi, startUwsgi, ECHO_APP } from '../scgi/uwsgi-peer.js'
import { ensureBuilt } from '../cli/run.js'
import { collectStatus } from '../../src/status/model.js'
import { createProxy, type CreateProxyOptions, type Proxy } from '../../src/index.js'
import type { SpawnManager } from '../../src/spawn/manager.js'

type RouteConfig = CreateProxyOptions['routes'][number]
type Line = { level: string, obj: Record<string, unknown>, msg: string }

const MiB = 1024 * 1024
const REPO = fileURLToPath(new URL('../../', import.meta.url))
const HOST = fileURLToPath(new URL('../spawn/fixtures/parent-death-host.mjs', import.meta.url))

/** Requests the backends of route `i` were sent (what the status page counts). */
function backendRequests (proxy: Proxy, i = 0): number {
  return collectStatus(proxy as never).routes[i].backends.reduce((n, b) => n + b.requests, 0)
}

function capture (lines: Line[]): CreateProxyOptions['logger'] {
  const log = (level: string) => (obj: object, msg?: string): void => { lines.push({ level, obj: obj as Record<string, unknown>, msg: msg ?? '' }) }
  return { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') }
}

/** createProxy behind a loopback server, closed at teardown. */
async function host (t: Test, config: CreateProxyOptions): Promise<{ proxy: Proxy, m: SpawnManager, url: string, lines: Line[] }> {
  const lines: Line[] = []
  const proxy = await createProxy({ logger: capture(lines), ...config })
  const server = createHttpServer(proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  return { proxy, m: proxy.spawns as SpawnManager, url: `http://127.0.0.1:${port}`, lines }
}

/** Send a POST head and `send` of `length` body bytes, wait until the proxy read them, then close. */
async function abortedUpload (port: number, path: string, length: number, send: number, read: () => boolean): Promise<void> {
  const s = connect({ host: '127.0.0.1', port })
  s.on('error', () => {})
  await new Promise((resolve) => s.once('connect', resolve))
  s.write(`POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: ${length}\r\n\r\n`)
  await new Promise((resolve) => s.write(Buffer.alloc(send, 'u'), resolve))
  await waitFor(read, 5000)
  s.destroy()
}

t.test('AC-13 orphans of a SIGKILLed host are cleaned by the next host (fcgiwrap -c 2 workers outlive their leader)', async (t) => {
  if (!havePeer(t, FCGIWRAP)) return
  guardLeaks(t, { timeoutMs: 10_000 })
  await ensureBuilt()
  const T = tempDir(t, 'pc-ac13-')
  writeScripts(join(T, 'cgi'), { 'x.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nworker %s' \"$PPID\"\n" })
  const sock = join(T, 'fw.sock')
  const config = { runDir: join(T, 'run'), spawns: { fw: { binPath: [FCGIWRAP, '-c', '2'], socketName: sock } }, routes: [{ protocol: 'fastcgi', spawn: 'fw', docroot: join(T, 'cgi') }] }
  const seen = new Set<number>()
  const hosts: Array<{ child: ReturnType<typeof spawn>, closed: Promise<void> }> = []
  // Whatever happens: no host, and no process of any group a host started, outlives the test.
  t.teardown(async () => {
    for (const h of hosts) if (h.child.exitCode === null && h.child.signalCode === null) h.child.kill('SIGKILL')
    await Promise.all(hosts.map(async (h) => await h.closed))
    for (const pid of seen) for (const p of processGroup(pid)) { try { process.kill(p.pid, 'SIGKILL') } catch {} }
    await waitFor(() => [...seen].every((pid) => processGroup(pid).every((p) => p.state === 'Z')), 10_000)
  })
  const start = async (): Promise<{ port: number, pid: number, child: ReturnType<typeof spawn>, closed: Promise<void>, err: () => string }> => {
    const env = { ...process.env }
    delete env.NODE_OPTIONS
    const child = spawn(process.execPath, [HOST, JSON.stringify({ config, ready: { fw: 1 } })], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout?.on('data', (c: Buffer) => { out += c.toString() })
    child.stderr?.on('data', (c: Buffer) => { if (err.length < 20_000) err += c.toString() })
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()))
    hosts.push({ child, closed })
    await waitFor(() => /^READY /m.test(out) || child.exitCode !== null, 30_000, 20)
    const line = /^READY (.*)$/m.exec(out)
    if (line === null) return { port: 0, pid: 0, child, closed, err: () => err }
    const info = JSON.parse(line[1]) as { port: number, processes: Array<{ pid: number }> }
    const pid = info.processes[0].pid
    seen.add(pid)
    return { port: info.port, pid, child, closed, err: () => err }
  }

  const h1 = await start()
  t.ok(h1.pid > 0, `the first host is ready ${h1.err().slice(-500)}`)
  if (h1.pid === 0) return
  t.equal((await get(`http://127.0.0.1:${h1.port}/x.sh`)).status, 200, 'the first host serves')
  const workersOf = (pid: number): number[] => processGroup(pid).filter((p) => p.pid !== pid && p.state !== 'Z').map((p) => p.pid)
  t.ok(await waitFor(() => workersOf(h1.pid).length === 2, 10_000), 'fcgiwrap -c 2: a leader and two workers in one group')
  const workers = workersOf(h1.pid)
  h1.child.kill('SIGKILL')
  await h1.closed
  t.ok(await waitFor(() => !alive(h1.pid), 10_000), 'the leader goes with the host (parent-death signal)')
  // What the next host meets [measured]: fcgiwrap's workers are not signalled and keep the socket.
  t.comment(`AC-13 after the host's SIGKILL: ${workers.filter(alive).length} of 2 workers left, socket file ${existsSync(sock) ? 'present' : 'gone'}`)

  const h2 = await start()
  t.ok(h2.pid > 0, `AC-13 the second host is ready on the same socket (was: start-limit-hit, in use) ${h2.pid > 0 ? '' : h2.err().slice(-800)}`)
  if (h2.pid === 0) return
  const r = await get(`http://127.0.0.1:${h2.port}/x.sh`)
  t.equal(r.status, 200, 'AC-13 the second host serves')
  t.notOk(workers.some((w) => r.body.toString() === `worker ${w}`), `AC-13 answered by a new worker (${r.body.toString()})`)
  t.ok(await waitFor(() => processGroup(h1.pid).every((p) => p.state === 'Z'), 10_000), 'AC-13 no member of the old group is left')
  t.same(readdirSync(join(T, 'run')), [`fw.${h2.pid}.pid`], 'AC-13 the pid file names only the new leader')
  // The second host goes the same way; the teardown reaps what it leaves.
  h2.child.kill('SIGKILL')
  await h2.closed
})

t.test('AC-16 a live listener at the spawn\'s address is never stolen: FAILED with the cause, 503, recovered by clear()', async (t) => {
  if (!havePeer(t, FCGIWRAP)) return
  guardLeaks(t, { timeoutMs: 10_000 })
  const T = tempDir(t, 'pc-ac16-')
  writeScripts(join(T, 'cgi'), { 'x.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nok'\n" })
  const sock = join(T, 'fw.sock')
  const foreigners: Server[] = []
  const foreign = async (at: string | number): Promise<Server> => {
    const s = createServer((c: Socket) => { c.on('error', () => {}); c.end('FOREIGN') })
    foreigners.push(s)
    await new Promise<void>((resolve) => typeof at === 'string' ? s.listen(at, resolve) : s.listen(at, '127.0.0.1', resolve))
    return s
  }
  const onUnix = await foreign(sock)
  // Closed below for the spawn to bind: a port no listen(0) elsewhere can take meanwhile.
  const onTcp = await foreign(await freePort())
  const port = (onTcp.address() as { port: number }).port
  t.teardown(async () => { await Promise.all(foreigners.filter((s) => s.listening).map(async (s) => await closeServer(s))) })
  const restart = { initialDelay: 20, maxDelay: 40, maxStarts: 3, window: 60_000 }
  const h = await host(t, {
    spawns: {
      unix: { binPath: [FCGIWRAP, '-c', '1'], socketName: sock, restart },
      tcp: { binPath: [FCGIWRAP, '-c', '1'], socketName: `127.0.0.1:${port}`, restart },
    },
    routes: [
      { match: { prefix: '/unix/' }, protocol: 'fastcgi', spawn: 'unix', docroot: join(T, 'cgi'), stripPrefix: true },
      { match: { prefix: '/tcp/' }, protocol: 'fastcgi', spawn: 'tcp', docroot: join(T, 'cgi'), stripPrefix: true },
    ],
  } as CreateProxyOptions)
  t.ok(await waitFor(() => h.m.status().every((s) => s.state === 'failed'), 15_000, 20), `AC-16 both spawns FAILED: ${h.m.status().map((s) => `${s.name}=${s.state}`).join(' ')}`)
  const reason = (name: string): string => h.m.status().find((s) => s.name === name)?.reason ?? ''
  t.match(reason('unix'), /start-limit-hit.*in use by a process this manager does not own/, `AC-16 unix: the cause in the reason (${reason('unix')})`)
  t.match(reason('tcp'), /start-limit-hit.*EADDRINUSE/, `AC-16 tcp: the cause in the reason (${reason('tcp')})`)
  for (const route of ['unix', 'tcp']) {
    const r = await get(`${h.url}/${route}/x.sh`)
    t.equal(r.status, 503, `AC-16 ${route}: GET 503`)
    t.match(r.body.toString(), /ERR_SPAWN_FAILED/, `AC-16 ${route}: ERR_SPAWN_FAILED`)
    t.ok(Number(r.headers['retry-after']) >= 1, `AC-16 ${route}: Retry-After ${String(r.headers['retry-after'])}`)
  }
  t.same(childrenOf().filter((c) => c.comm === 'fcgiwrap'), [], 'AC-16 no fcgiwrap was started')
  t.ok(existsSync(sock), 'AC-16 the foreign socket file is not unlinked')
  const answer = await new Promise<string>((resolve) => {
    const c = connect(sock)
    let d = ''
    c.on('data', (x: Buffer) => { d += x.toString() })
    c.on('close', () => resolve(d))
    c.on('error', (e) => resolve(String(e)))
  })
  t.equal(answer, 'FOREIGN', 'AC-16 the foreign listener still answers')
  t.notOk(h.lines.some((l) => /\n\s+at /.test(l.msg)), 'no stack trace in the log')

  await closeServer(onUnix)
  await closeServer(onTcp)
  for (const name of ['unix', 'tcp']) h.m.clear(name)
  for (const route of ['unix', 'tcp']) {
    t.ok(await waitFor(async () => (await get(`${h.url}/${route}/x.sh`)).status === 200, 15_000, 50), `AC-16 ${route}: 200 once the address is free and the spawn is cleared`)
  }
})

t.test('AC-27 a script the target user cannot reach is refused with its reason, never a failed exec [ROOT]', async (t) => {
  const users = (() => { for (let id = 2900 + (process.pid % 90); id < 3000; id++) if (idFree(id)) return [{ name: `pcar${id}`, id }]; return [] })()
  if (!withTestUsers(t, 'AC-27', users)) return
  const [A] = users
  guardLeaks(t, { timeoutMs: 10_000 })
  const T = mkdtempSync(join(tmpdir(), 'pc-ac27-'))
  chmodSync(T, 0o755)
  t.teardown(() => rmSync(T, { recursive: true, force: true }))
  const dir = (path: string, uid: number, mode: number): string => { mkdirSync(path); chownSync(path, uid, uid); chmodSync(path, mode); return path }
  const hidden = dir(join(dir(join(T, 'gate'), 0, 0o700), 'www'), A.id, 0o755)
  const open = dir(join(T, 'www'), A.id, 0o755)
  const marks = dir(join(T, 'marks'), A.id, 0o755)
  const body = (name: string): string => `#!/bin/sh\n: > ${join(marks, name)}\nprintf 'Content-Type: text/plain\\n\\n%s %s\\n' "$(id -u)" "$(pwd)"\n`
  ownedFile(join(hidden, 'x.sh'), body('hidden'), A.id, 0o755)
  ownedFile(join(dir(join(open, 'sub'), A.id, 0o755), 'x.sh'), body('open'), A.id, 0o755)
  const h = await host(t, {
    identity: { allowedRoots: [hidden, open] },
    spawns: { cgi: { socketType: 'pipe', user: A.name, group: A.name, stopTimeout: 2000 } },
    routes: [
      { match: { prefix: '/h/' }, protocol: 'cgi', spawn: 'cgi', docroot: hidden, stripPrefix: true },
      { match: { prefix: '/o/' }, protocol: 'cgi', spawn: 'cgi', docroot: open, stripPrefix: true },
    ],
  } as unknown as CreateProxyOptions)
  const ok = await get(`${h.url}/o/sub/x.sh`)
  t.equal(ok.status, 200, 'AC-27 the reachable script: 200')
  t.equal(ok.body.toString(), `${A.id} ${join(open, 'sub')}\n`, 'AC-27 run as sxa, in the script\'s directory (RFC 3875 §7.2)')
  const r = await get(`${h.url}/h/x.sh`)
  t.equal(r.status, 403, `AC-27 behind a 0700 root directory: 403 (was 502 ERR_CGI_SPAWN, spawn EACCES) — ${r.body.toString().trim().split('\n').pop() ?? ''}`)
  t.match(r.body.toString(), /ERR_SUEXEC_NOT_FOUND/, 'AC-27 the suexec 117 code')
  const line = h.lines.find((l) => l.obj.code === 'ERR_SUEXEC_NOT_FOUND')
  t.match(line?.msg ?? '', join(T, 'gate'), `AC-27 the log line names the directory: ${line?.msg ?? '(none)'}`)
  t.notOk(existsSync(join(marks, 'hidden')), 'AC-27 the script never ran')
})

t.test('AC-64 hop-by-hop fields of a backend response never reach the client', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const be = await rawBackend(t, (sock) => {
    eachRequestHead(sock, (_method, path) => {
      if (path === '/hop') {
        sock.write('HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal, Set-Cookie\r\nX-Internal: secret\r\nSet-Cookie: sid=1\r\n' +
          'Keep-Alive: timeout=99\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTE: trailers\r\nX-Kept: yes\r\nContent-Length: 3\r\n\r\nhop')
      } else if (path === '/close') {
        sock.end('HTTP/1.1 200 OK\r\nConnection: close\r\nX-Kept: yes\r\n\r\nclosed-by-eof')
      } else if (path === '/chunked') {
        sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n')
      } else {
        sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\n\r\n${path}`)
      }
    })
  })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] } as RouteConfig] })
  const out = await rawRequest(port, ['/hop', '/close', '/chunked'].map((p) => `GET ${p} HTTP/1.1\r\nHost: a\r\n\r\n`).join('') + 'GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  const parts = out.split(/(?=HTTP\/1\.1 \d{3} )/)
  t.equal(parts.length, 4, `AC-64 four answers on one client connection: ${parts.map((p) => p.split('\r\n')[0]).join(' | ')}`)
  const head = (i: number): string => (parts[i] ?? '').slice(0, (parts[i] ?? '').indexOf('\r\n\r\n') + 2).toLowerCase()
  const body = (i: number): string => (parts[i] ?? '').slice((parts[i] ?? '').indexOf('\r\n\r\n') + 4)
  for (const name of ['x-internal', 'set-cookie', 'proxy-connection', 'upgrade', 'te']) {
    t.notMatch(head(0), new RegExp(`\\r\\n${name}:`), `AC-64 (a) no ${name} in the answer`)
  }
  t.notMatch(head(0), /timeout=99/, 'AC-64 (a) not the backend\'s Keep-Alive')
  t.notMatch(head(0), /connection:[^\r]*x-internal/, 'AC-64 (a) not the backend\'s Connection')
  t.match(head(0), /\r\nx-kept: yes\r\n/, 'AC-64 (a) an end-to-end field is kept')
  t.equal(body(0), 'hop')
  t.notMatch(head(1), /connection: close/, 'AC-64 (b) the backend\'s close does not close the client connection')
  t.match(head(1), /\r\ntransfer-encoding: chunked\r\n/, 'AC-64 (b) a body to EOF is re-framed for the client')
  t.equal(body(1), 'd\r\nclosed-by-eof\r\n0\r\n\r\n', 'AC-64 (b) whole')
  t.equal(head(2).match(/transfer-encoding/g)?.length, 1, 'AC-64 (c) one Transfer-Encoding, proxycore\'s own')
  t.equal(body(2), '4\r\nabcd\r\n0\r\n\r\n', 'AC-64 (c) the chunked body, framed once')
  t.equal(body(3), '/last', 'AC-64 the pipelined request after them gets its own answer')
})

t.test('AC-77 a client that aborts its upload never leaves a short body that looks complete', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const SENT = 96 * 1024

  t.test('AC-77 FAKE-FCGI, requestBuffering false: the connection is closed, no terminating FCGI_STDIN', async (t) => {
    const dir = tempDir(t, 'pc-ac77-')
    writeFileSync(join(dir, 'x.php'), '')
    const fake = await startFake(t, dir, { onRequest: (req) => respond(req) })
    let stdinBytes = 0
    fake.server.on('connection', (s: Socket) => s.on('data', (d: Buffer) => { stdinBytes += d.length }))
    const { port, url, proxy } = await proxyServer(t, { routes: [{ protocol: 'fastcgi', backends: [fake.endpoint.id], docroot: dir, requestBuffering: false, options: { discovery: false } } as RouteConfig] })
    await abortedUpload(port, '/x.php', MiB, SENT, () => stdinBytes >= SENT)
    const open = (): Promise<number> => new Promise((resolve) => fake.server.getConnections((_e, n) => resolve(n)))
    t.ok(await waitFor(async () => fake.accepted === 1 && await open() === 0, 5000), 'AC-77 the FastCGI connection was opened, then closed')
    t.equal(fake.requests.length, 0, 'AC-77 no complete request: no empty FCGI_STDIN after the short body')
    t.ok(await settled(proxy), 'the exchange ended')
    t.equal((await get(`${url}/x.php`, { method: 'POST', body: 'abc' })).status, 200, 'a normal POST afterwards')
    t.equal(fake.requests.at(-1)?.stdin.toString(), 'abc')
  })

  t.test('AC-77 php-fpm: buffered, the script never runs; streamed, it sees fewer bytes than CONTENT_LENGTH', async (t) => {
    if (!havePeer(t, PHP_FPM)) return
    const www = tempDir(t, 'pc-ac77f-')
    const log = join(www, 'log')
    writeFileSync(join(www, 'up.php'), `<?php $in = file_get_contents('php://input'); file_put_contents(${JSON.stringify(log)}, strlen($in) . ' ' . $_SERVER['CONTENT_LENGTH'] . "\\n", FILE_APPEND); echo strlen($in);`)
    const fpm = await startPhpFpm(t, www, 1)
    const { port, proxy } = await proxyServer(t, {
      routes: [
        { match: { prefix: '/buffered/' }, protocol: 'fastcgi', backends: [`unix:${fpm.socketPath}`], docroot: www, stripPrefix: true } as RouteConfig,
        { match: { prefix: '/streamed/' }, protocol: 'fastcgi', backends: [`unix:${fpm.socketPath}`], docroot: www, stripPrefix: true, requestBuffering: false } as RouteConfig,
      ],
    })
    const read = (): boolean => collectStatus(proxy as never).routes.some((r) => r.requests > 0)
    await abortedUpload(port, '/buffered/up.php', MiB, SENT, read)
    t.ok(await settled(proxy), 'the buffered exchange ended')
    t.equal(backendRequests(proxy, 0), 0, 'AC-77 buffered (default): php-fpm was never contacted')
    t.notOk(existsSync(log), 'AC-77 buffered: the script never ran')
    await abortedUpload(port, '/streamed/up.php', MiB, SENT, () => backendRequests(proxy, 1) > 0)
    t.ok(await waitFor(() => existsSync(log), 10_000), 'php-fpm ran the streamed request on the closed connection [measured]')
    const [got, cl] = readFileSync(log, 'utf8').trim().split(' ').map(Number)
    t.equal(cl, MiB, 'CONTENT_LENGTH as the client declared it')
    t.ok(got < cl, `AC-77 streamed: the script sees ${got} < ${cl} bytes, which it can compare (FastCGI §6.2), never a padded body`)
  })
})

t.test('AC-87 SCGI (uWSGI): NUL never reaches the netstring, empty values always do', async (t) => {
  if (!haveUwsgi(t)) return
  guardLeaks(t, { timeoutMs: 10_000 })
  const peer = await startUwsgi('scgi')
  t.teardown(async () => await peer.stop())
  const { port, url, proxy } = await proxyServer(t, { routes: [{ protocol: 'scgi', backends: [`unix:${peer.socketPath}`], scriptFilename: ECHO_APP } as RouteConfig] })
  const env = async (path: string, headers: Record<string, string> = {}): Promise<Record<string, string>> => {
    const r = await get(url + path, { headers })
    t.equal(r.status, 200, `${path}: 200`)
    return (JSON.parse(r.body.toString()) as { env: Record<string, string> }).env
  }
  const base = await env('/x', { 'X-Empty': '' })
  t.equal(base.QUERY_STRING, '', 'AC-87 /x: QUERY_STRING present and empty (RFC 3875 §4.1.7 MUST)')
  t.equal(base.HTTP_X_EMPTY, '', 'AC-87 an empty header value is sent, empty')
  t.equal(base.CONTENT_LENGTH, '0', 'AC-87 CONTENT_LENGTH "0" on a GET')
  t.equal((await env('/x?')).QUERY_STRING, '', 'AC-87 /x?: QUERY_STRING empty')
  t.equal((await env('/x?a=%00')).QUERY_STRING, 'a=%00', 'AC-87 the query stays raw: %00 is three bytes, never a NUL')
  t.equal((await env('/a%2500b')).PATH_INFO, '/a%00b', 'AC-87 %2500 is decoded once, to the text %00')
  const before = backendRequests(proxy)
  const nul = await get(`${url}/a%00b`)
  t.equal(nul.status, 400, 'AC-87 %00 in the path: 400')
  t.match(nul.body.toString(), /ERR_BAD_REQUEST/, 'AC-87 a stable code')
  const raw = await rawRequest(port, 'GET /x HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\nConnection: close\r\n\r\n')
  t.match(raw, /^HTTP\/1\.1 400 /, 'AC-87 NUL in a header value: 400')
  t.equal(backendRequests(proxy), before, 'AC-87 uWSGI was not contacted for either')
})

t.test('AC-90 CGI pipes: no deadlock both ways, and an early answer without reading the body', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = tempDir(t, 'pc-ac90-')
  writeScripts(join(dir, 'cgi'), {
    'early.sh': "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nhead -c 1048576 /dev/zero | tr '\\0' 'a'\nsha256sum | cut -c1-64\n",
    'noread.sh': "#!/bin/sh\nprintf 'Status: 413 Too Big\\nContent-Type: text/plain\\n\\nno thanks\\n'\n",
  })
  const p = await cgiProxy(t, { sh: {} }, [
    { protocol: 'cgi', spawn: 'sh', docroot: join(dir, 'cgi'), match: { prefix: '/b/' }, stripPrefix: true } as RouteConfig,
    { protocol: 'cgi', spawn: 'sh', docroot: join(dir, 'cgi'), match: { prefix: '/s/' }, stripPrefix: true, requestBuffering: false } as RouteConfig,
  ])
  const up = Buffer.alloc(MiB, 'b')
  for (const route of ['b', 's']) {
    const r = await get(`${p.url}/${route}/early.sh`, { method: 'POST', body: up })
    t.equal(r.status, 200, `AC-90 /${route}/ early.sh: 200`)
    t.equal(r.body.length, MiB + 65, `AC-90 /${route}/ 1 MiB of output, then the sha line`)
    t.equal(r.body.subarray(MiB).toString().trim(), createHash('sha256').update(up).digest('hex'), `AC-90 /${route}/ the script read the whole upload`)
  }
  const big = Buffer.alloc(50 * MiB, 'c')
  for (const route of ['b', 's']) {
    const r = await get(`${p.url}/${route}/noread.sh`, { method: 'POST', body: big }).catch((err: Error) => ({ status: 0, body: Buffer.from(err.message) }))
    t.equal(r.status, 413, `AC-90 /${route}/ noread.sh: the script's 413 reaches the client`)
    t.equal(r.body.toString(), 'no thanks\n', `AC-90 /${route}/ with its body`)
  }
  t.notOk(p.lines.some((l) => /\n\s+at /.test(l.msg)), 'no stack trace in the log')
  // CGI scripts run in their own directory (RFC 3875 §7.2): none is left there.
  t.ok(await waitFor(() => processesIn(join(dir, 'cgi')).length === 0, 10_000), `no CGI process left: ${processesIn(join(dir, 'cgi')).join(' ')}`)
})
