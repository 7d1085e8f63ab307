/**
 * The proxy out of file descriptors (EMFILE), as nginx behaves: the connections it has are
 * answered (503 ERR_NO_DESCRIPTORS with Retry-After, never a 500 or a silent close), and once
 * descriptors free up it serves again with nothing leaked.
 *
 * The real CLI runs under `prlimit --nofile=N:N` with a CGI route (a shell script, whose chunked
 * body is spooled) and an http route (a node:http backend). The test fills the proxy's descriptor
 * table with idle client connections, one at a time, until one is shed (libuv at EMFILE accepts and
 * closes what is pending: the client gets no byte, and the proxy never saw it). On connections it
 * had accepted before, a chunked upload (spool file open: EMFILE) and a GET to the http backend
 * (socket(2) of the connect: EMFILE) must be answered 503 ERR_NO_DESCRIPTORS. Then the idle
 * connections go, and both routes answer 200 again; the proxy's descriptors come back to where
 * they were, no spool file is left, and it stops cleanly. Run with both CGI launchers; a CGI
 * program that cannot be started for want of descriptors is a 503 ERR_NO_DESCRIPTORS with either:
 * with the direct launcher spawn() fails with EMFILE; with the fork server the program's stdio
 * connections are shed by libuv unseen, and the fork server, finding the proxy at its descriptor
 * limit when they do not come, fails it with EMFILE (a loss that is not a shortage stays a 502
 * ERR_CGI_FORK_SERVER: test/spawn/fork-server-lost-stdio.test.ts). The fork server is not
 * restarted for it. emfile-shortage-perl.test.ts runs the fork-server case again with the Perl
 * fork server (PROXYCORE_FORK_SERVER=perl, passed on to the CLI); emfile-fork-server-cold*.test.ts
 * run it with no CGI request before the shortage (PROXYCORE_TEST_EMFILE_COLD=1), so that the fork
 * server is first started out of descriptors: its socket or its helper cannot be created, the
 * request gets 503 ERR_NO_DESCRIPTORS, and once descriptors free up it starts and serves;
 * emfile-fork-server-restart.test.ts kills the fork server's helper before the shortage
 * (PROXYCORE_TEST_EMFILE_KILL_HELPER=1): its restart fails with EMFILE, the same 503.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { Raw } from '../helpers/raw-client.js'
import { backend } from '../helpers/servers.js'
import { cli, ensureBuilt, jsonLines, root } from '../cli/run.js'

const LIMIT = 64
const BODY = 128 * 1024

const SCRIPT = `#!/bin/sh
n=$(wc -c)
printf 'Content-Type: text/plain\\r\\n\\r\\nlen=%s\\n' "$n"
`

function fdCount (pid: number): number {
  try { return readdirSync(`/proc/${pid}/fd`).length } catch { return -1 }
}

/** A chunked POST of `BODY` bytes in one chunk. */
function chunkedPost (path: string): string {
  return `POST ${path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n${BODY.toString(16)}\r\n${'x'.repeat(BODY)}\r\n0\r\n\r\n`
}

/** `pid`'s child processes. */
function childPids (pid: number): number[] {
  const out: number[] = []
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try { out.push(...readFileSync(`/proc/${pid}/task/${task}/children`, 'latin1').split(' ').filter((x) => x !== '').map(Number)) } catch {}
  }
  return out
}

/** The executables of `pid`'s child processes (the fork server's helper: perl or the compiled one). */
function childExes (pid: number): string[] {
  const out: string[] = []
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    let kids: string
    try { kids = readFileSync(`/proc/${pid}/task/${task}/children`, 'latin1') } catch { continue }
    for (const c of kids.split(' ').filter((x) => x !== '')) {
      try { out.push(readlinkSync(`/proc/${c}/exe`)) } catch {}
    }
  }
  return out
}

/** The fork server this run asks the CLI for (PROXYCORE_FORK_SERVER=perl: the Perl one). */
const perl = process.env.PROXYCORE_FORK_SERVER === 'perl'
/** No CGI request before the shortage: the fork server is first started out of descriptors. */
const cold = process.env.PROXYCORE_TEST_EMFILE_COLD === '1'
/** The helper is killed after the warm-up: it is restarted out of descriptors. */
const killHelper = process.env.PROXYCORE_TEST_EMFILE_KILL_HELPER === '1'
const launchers = perl || cold || killHelper ? ['fork-server'] as const : ['fork-server', 'direct'] as const
/** What the fork server holds: its listening socket and the helper's three pipes. */
const FORK_SERVER_FDS = 4

for (const launcher of launchers) t.test(`${perl ? '[Perl fork server] ' : ''}${cold ? '[fork server first started out of descriptors] ' : ''}${killHelper ? '[fork server helper killed before the shortage] ' : ''}out of descriptors (CGI launcher ${launcher}): accepted requests get 503 ERR_NO_DESCRIPTORS, then the proxy serves again with nothing leaked`, async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  await ensureBuilt()
  const dir = mkdtempSync(join(tmpdir(), 'pc-emfile-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const docroot = join(dir, 'cgi-bin')
  const spoolDir = join(dir, 'tmp')
  mkdirSync(docroot)
  mkdirSync(spoolDir)
  writeFileSync(join(docroot, 'up.sh'), SCRIPT)
  chmodSync(join(docroot, 'up.sh'), 0o755)
  // `Connection: close`: the proxy keeps no idle backend socket whose timeout would free a descriptor mid-test.
  // Two backends: a connect that failed for want of a descriptor must not disable them (with a
  // single one nothing is ever disabled), or the route would answer 503 ERR_NO_BACKEND after the shortage.
  const answer = (req: IncomingMessage, res: ServerResponse): void => {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => { res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' }).end(`app ${n}\n`) })
  }
  const app1 = await backend(t, answer)
  const app2 = await backend(t, answer)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0
drainTimeout: 10s
spawns:
  cgi:
    socketType: pipe
    launcher: ${launcher}
    copyEnvironment: [PATH]
routes:
  - match: { prefix: /cgi-bin/ }
    protocol: cgi
    spawn: cgi
    docroot: ${JSON.stringify(docroot)}
    stripPrefix: true
  - match: { prefix: /app/ }
    protocol: http
    backends: ['${app1.address}', '${app2.address}']
`)

  const child = spawn('prlimit', [`--nofile=${LIMIT}:${LIMIT}`, process.execPath, cli, 'serve', file], {
    cwd: root, detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PROXYCORE_LOG_FORMAT: 'json', TMPDIR: spoolDir },
  })
  const pid = child.pid as number
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  let gone = false
  void exited.then(() => { gone = true })
  t.teardown(async () => {
    if (!gone) { try { process.kill(-pid, 'SIGKILL') } catch {} }
    await exited
  })
  const lines = jsonLines(child.stderr)
  t.ok(await waitFor(() => lines.some((l) => l.msg === 'serving') || gone, 30_000), 'the proxy started')
  const serving = lines.find((l) => l.msg === 'serving')
  if (serving === undefined) throw new Error(`no "serving": ${JSON.stringify(lines)}`)
  const url = (serving.addresses as string[])[0]
  const port = Number(new URL(url).port)

  const post = async (path: string): Promise<{ status: number, body: string }> => {
    const r = await fetch(`${url}${path}`, { method: 'POST', body: new Blob([Buffer.alloc(BODY, 'x')]).stream(), duplex: 'half' } as RequestInit)
    return { status: r.status, body: await r.text() }
  }
  const get = async (path: string): Promise<{ status: number, body: string }> => {
    const r = await fetch(`${url}${path}`)
    return { status: r.status, body: await r.text() }
  }
  // Warm up both routes (the CGI fork server and its sockets exist from here on).
  if (!cold) t.same(await post('/cgi-bin/up.sh'), { status: 200, body: `len=${BODY}\n` }, 'CGI upload before the shortage')
  t.same(await get('/app/x'), { status: 200, body: 'app 0\n' }, 'http route before the shortage')
  if (killHelper) {
    const helperPid = childPids(pid)
    t.equal(helperPid.length, 1, 'one fork server helper runs')
    process.kill(helperPid[0], 'SIGKILL')
    t.ok(await waitFor(() => childPids(pid).length === 0, 10_000), 'the helper is gone (reaped)')
  }
  const helpers = childExes(pid)
  const want = perl ? /\/perl[\d.]*$/ : /\/proxycore-fork-server$/
  if (cold || killHelper) t.same(helpers, [], 'no fork server runs yet')
  else if (launcher === 'fork-server') t.equal(helpers.filter((e) => want.test(e)).length, 1, `the ${perl ? 'Perl' : 'compiled'} fork server runs (${helpers.join(', ')})`)
  const baseline = fdCount(pid)
  t.ok(baseline > 0 && baseline < LIMIT - 8, `the proxy holds ${baseline} descriptors of ${LIMIT} at rest`)

  // Fill the table: each new connection is either accepted (one more descriptor) or shed.
  const idle: Raw[] = []
  t.teardown(() => { for (const r of idle) r.socket.destroy() })
  let shed: Raw | null = null
  for (let i = 0; i < LIMIT && shed === null; i++) {
    const before = fdCount(pid)
    const r = new Raw(port, '')
    idle.push(r)
    await waitFor(() => fdCount(pid) > before || r.closed, 10_000)
    if (r.closed) shed = r
  }
  if (shed === null) throw new Error('the proxy never ran out of descriptors')
  t.equal(shed.raw, '', 'the connection libuv could not accept got no byte (closed, never seen by the proxy)')
  idle.splice(idle.indexOf(shed), 1)
  t.ok(fdCount(pid) >= LIMIT, `every descriptor of the proxy is in use (${fdCount(pid)} open, limit ${LIMIT})`)
  t.ok(idle.length >= 3, `${idle.length} connections were accepted`)

  // A GET to the http backend: socket(2) of the connect fails with EMFILE.
  const a = idle[0]
  a.socket.write('GET /app/y HTTP/1.1\r\nHost: localhost\r\n\r\n')
  t.ok(await a.answered(), 'the GET was answered')
  t.equal(a.status(), 503, 'the GET: 503')
  t.match(a.raw, /\r\nretry-after: \d+\r\n/i, 'with Retry-After')
  t.equal(a.body(), '503 Service Unavailable\nERR_NO_DESCRIPTORS\n', 'the GET: ERR_NO_DESCRIPTORS')

  // A chunked upload to CGI: the spool's temp file cannot be opened.
  const b = idle[1]
  b.socket.write(chunkedPost('/cgi-bin/up.sh'))
  t.ok(await b.answered(), 'the upload was answered')
  t.equal(b.status(), 503, 'the upload: 503, not 500 ERR_INTERNAL')
  t.match(b.raw, /\r\nretry-after: \d+\r\n/i, 'with Retry-After')
  t.equal(b.body(), '503 Service Unavailable\nERR_NO_DESCRIPTORS\n', 'the upload: ERR_NO_DESCRIPTORS')

  // A CGI request with no body. With the fork server, the program's stdio connections to the proxy
  // cannot be accepted (libuv accepts and closes them at EMFILE); with the direct launcher,
  // child_process.spawn fails with EMFILE. Either way: 503 ERR_NO_DESCRIPTORS.
  const c = idle[2]
  c.socket.write('GET /cgi-bin/up.sh HTTP/1.1\r\nHost: localhost\r\n\r\n')
  t.ok(await c.answered(30_000), 'the CGI GET was answered')
  t.comment(`the CGI GET got ${c.status()} ${JSON.stringify(c.body())}`)
  t.equal(c.status(), 503, 'the CGI GET: 503, not 502 ERR_CGI_FORK_SERVER')
  t.match(c.raw, /\r\nretry-after: \d+\r\n/i, 'with Retry-After')
  t.equal(c.body(), '503 Service Unavailable\nERR_NO_DESCRIPTORS\n', 'the CGI GET: ERR_NO_DESCRIPTORS')
  t.notOk(lines.some((l) => l.code === 'ERR_CGI_FORK_SERVER'), 'no ERR_CGI_FORK_SERVER logged')
  t.ok(lines.some((l) => l.code === 'ERR_NO_DESCRIPTORS'), 'logged with its code')
  t.notOk(lines.some((l) => l.code === 'ERR_INTERNAL'), 'no ERR_INTERNAL logged')

  // Recovery: the idle connections go, descriptors free up, both routes serve again.
  for (const r of idle) r.socket.destroy()
  t.ok(await waitFor(() => fdCount(pid) <= baseline, 10_000), `the proxy's descriptors came back to ${baseline} (now ${fdCount(pid)})`)
  t.same(await post('/cgi-bin/up.sh'), { status: 200, body: `len=${BODY}\n` }, 'CGI upload after the shortage')
  if (cold || killHelper) {
    const now = childExes(pid)
    t.equal(now.length === 1 && want.test(now[0]), true, `one ${perl ? 'Perl' : 'compiled'} fork server runs now, started after the shortage (${now.join(', ')})`)
  } else if (launcher === 'fork-server') t.same(childExes(pid), helpers, 'the same fork server serves it (it was not restarted for the shortage)')
  for (const path of ['/app/z1', '/app/z2']) t.same(await get(path), { status: 200, body: 'app 0\n' }, `http route after the shortage: ${path} (neither backend was disabled)`)
  // The helper's three pipes (and, first started now, the listening socket) came after the baseline.
  const rest = cold ? baseline + FORK_SERVER_FDS : killHelper ? baseline + FORK_SERVER_FDS - 1 : baseline
  t.ok(await waitFor(() => fdCount(pid) <= rest, 10_000), `no descriptor leaked (${fdCount(pid)} of ${rest}${cold || killHelper ? ', the fork server\'s included' : ''})`)
  t.same(readdirSync(spoolDir).filter((n) => n.startsWith('proxycore-spool-')), [], 'no spool file left')
  t.notOk(gone, 'the proxy is still running')

  process.kill(pid, 'SIGTERM')
  t.equal(await exited, 0, 'and stops cleanly')
  t.same(readdirSync(spoolDir), [], 'nothing left in its TMPDIR')
})
