/**
 * A script that starts a daemon in a session of its own (`setsid`, the usual daemonising step)
 * which inherits stdout, then exits. The spawn layer stops the script's process group when the
 * leader exits, but the daemon left that group: it holds the script's stdout open, so stdout
 * never reaches EOF while it lives. The response must end by the documented rule (the leader
 * exited and stdout stayed idle for a moment: whatever the script wrote has been read), not wait
 * for `timeouts.idle` to cut a response the script completed, and never drop what the script
 * wrote before it exited. The daemon itself is outside the group and outside our reach (as with
 * Apache and lighttpd): the test kills it.
 */
import t, { type Test } from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { alive, openFds, waitFor } from '../helpers/leaks.js'
import { assertNoLeaks, leakBaseline } from '../cgi-shared/leak-check.js'
import { cgiProxy, fetchRaw, tempDir, writeScripts } from './harness.js'

const baseline = leakBaseline()

/**
 * Start a daemon in its own session that holds fds 1 and 2, wait (bounded) until it has left the
 * script's group (it wrote its pid only after setsid), then exit 0.
 */
const daemon = (pidFile: string): string =>
  `setsid sh -c 'echo $$ > ${pidFile}.tmp && mv ${pidFile}.tmp ${pidFile} && exec sleep 300' &\n` +
  `i=0; while [ ! -s ${pidFile} ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done\nexit 0\n`

const BIG = 300_000

const SCRIPTS: Record<string, string> = {
  'eof.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nwritten before exit'\n" + daemon('eof.pid'),
  // More than a pipe or socket buffer holds: most of it is still to be read when the leader exits.
  'big.sh': `#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nhead -c ${BIG} /dev/zero\n` + daemon('big.pid'),
  // Writes until every buffer on the way is full (the client does not read), notes how much,
  // starts the daemon and exits: what is still in the pipe then is the script's.
  'fill.pl': '#!/usr/bin/perl\nuse strict; use warnings; use Fcntl;\n' +
    'syswrite(STDOUT, "Content-Type: application/octet-stream\\n\\n") or die;\n' +
    'fcntl(STDOUT, F_SETFL, fcntl(STDOUT, F_GETFL, 0) | O_NONBLOCK) or die;\n' +
    'my $buf = "\\0" x 65536; my $total = 0; my $full = 0;\n' +
    'while ($full < 150) { my $n = syswrite(STDOUT, $buf); if (defined $n) { $total += $n; $full = 0 } ' +
    'elsif ($!{EAGAIN}) { $full++; select(undef, undef, undef, 0.02) } else { die "write: $!" } }\n' +
    'open(my $f, ">", "fill.len.tmp") or die; print $f $total; close $f; rename("fill.len.tmp", "fill.len") or die;\n' +
    'exec("sh", "-c", q{' + daemon('fill.pid') + '}) or die;\n',
  // The daemon keeps only stderr: stdout ends as usual, the response is whole at once.
  'errheld.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nok'\necho 'before exit' >&2\nexec >/dev/null\n" + daemon('errheld.pid'),
  'short.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 100\\n\\nonly this'\n" + daemon('short.pid'),
  'nohead.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n'\n" + daemon('nohead.pid')
}

type Launcher = 'direct' | 'fork-server'
const LAUNCHERS: Launcher[] = ['direct', 'fork-server']
// Far above what the rule needs (about a second), far below what the timeouts would give.
const PROMPT_MS = 8_000

/**
 * The scripts in a fresh docroot behind a cgi route of `launcher` (`/c/<script>`), and a killer of
 * daemons at teardown: `kill(pidFile)` marks the daemon whose pid the file will hold (read at
 * teardown), `kill(pid)` one already known.
 */
async function daemonSite (t: Test, launcher: Launcher, timeout: string): Promise<{ dir: string, p: Awaited<ReturnType<typeof cgiProxy>>, kill: (daemon: string | number) => void }> {
  const dir = tempDir(t)
  writeScripts(dir, SCRIPTS)
  const marked: Array<string | number> = []
  t.teardown(async () => {
    const pids = marked.map((d) => typeof d === 'number' ? d : existsSync(d) ? Number(readFileSync(d, 'utf8')) : null).filter((pid): pid is number => pid !== null)
    for (const pid of pids) { try { process.kill(pid, 'SIGKILL') } catch {} }
    await waitFor(() => pids.every((pid) => !alive(pid)), 10_000)
  })
  const p = await cgiProxy(t, { cgi: { launcher } }, [{
    match: { prefix: '/c/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir, stripPrefix: true,
    timeouts: { headers: timeout, idle: timeout }
  }])
  return { dir, p, kill: (daemon) => { marked.push(daemon) } }
}

for (const launcher of LAUNCHERS) {
  t.test(`${launcher}: a setsid daemon holding stdout does not hold the response after the script exited`, async (t) => {
    const { dir, p, kill } = await daemonSite(t, launcher, '15s')
    const daemonOf = async (name: string): Promise<number> => {
      const file = join(dir, `${name}.pid`)
      t.ok(await waitFor(() => existsSync(file), 10_000), `${name}: the daemon started`)
      const pid = Number(readFileSync(file, 'utf8'))
      kill(pid)
      return pid
    }

    let started = Date.now()
    const eof = await fetchRaw(`${p.url}/c/eof.sh`)
    const eofPid = await daemonOf('eof')
    t.same([eof.status, eof.body.toString(), eof.complete], [200, 'written before exit', true], 'eof.sh: whole body, clean end')
    t.ok(Date.now() - started < PROMPT_MS, `eof.sh: ended without waiting for timeouts.idle (${Date.now() - started} ms)`)
    t.ok(alive(eofPid), 'the daemon did hold stdout all along (it is still running)')

    started = Date.now()
    const big = await fetchRaw(`${p.url}/c/big.sh`)
    await daemonOf('big')
    t.equal(big.status, 200)
    t.equal(big.body.length, BIG, 'big.sh: every byte written before the exit reaches the client')
    t.ok(big.body.every((b) => b === 0), 'big.sh: the bytes are the script\'s')
    t.ok(big.complete, 'big.sh: clean end')
    t.ok(Date.now() - started < PROMPT_MS, `big.sh: prompt (${Date.now() - started} ms)`)

    started = Date.now()
    const short = await fetchRaw(`${p.url}/c/short.sh`)
    await daemonOf('short')
    t.equal(short.status, 200)
    t.notOk(short.complete, 'short.sh: 91 bytes short of its Content-Length: cut, never a clean end')
    t.ok(Date.now() - started < PROMPT_MS, `short.sh: cut promptly (${Date.now() - started} ms)`)

    started = Date.now()
    const nohead = await fetchRaw(`${p.url}/c/nohead.sh`)
    await daemonOf('nohead')
    t.equal(nohead.status, 502, 'nohead.sh: the script exited without finishing its head: 502, not a 504 later')
    t.match(nohead.body.toString(), /ERR_CGI_EXIT/)
    t.ok(Date.now() - started < PROMPT_MS, `nohead.sh: prompt (${Date.now() - started} ms)`)
    t.notOk(p.lines.some((l) => l.obj.code === 'ERR_BODY_TIMEOUT' || l.obj.code === 'ERR_HEADERS_TIMEOUT'), 'no timeout ended any of them')
  })
}

for (const launcher of LAUNCHERS) {
  t.test(`${launcher}: a client that stops reading past the exit loses none of what the script wrote`, async (t) => {
    const { dir, p, kill } = await daemonSite(t, launcher, '30s')
    const pidFile = join(dir, 'fill.pid')
    const lenFile = join(dir, 'fill.len')
    kill(pidFile)
    const got = await new Promise<{ length: number, complete: boolean, zeros: boolean }>((resolve, reject) => {
      const req = request(`${p.url}/c/fill.pl`, { agent: false }, (res) => {
        let length = 0
        let zeros = true
        res.pause()
        // Paused until the script has exited (its daemon's pid is written right before), and
        // for several exit graces after: everything still unread is the script's.
        void waitFor(() => existsSync(pidFile), 20_000).then(async () => {
          const until = Date.now() + 4000
          await waitFor(() => Date.now() >= until, 5000, 50)
          res.on('data', (c: Buffer) => { length += c.length; if (zeros && !c.every((b) => b === 0)) zeros = false })
          res.on('end', () => resolve({ length, complete: true, zeros }))
          res.on('close', () => resolve({ length, complete: res.complete, zeros }))
          res.resume()
        })
      })
      req.on('error', reject)
      req.end()
    })
    t.ok(existsSync(pidFile), 'the script exited while the client was not reading')
    const total = Number(readFileSync(lenFile, 'utf8'))
    t.ok(total > 0, `the script wrote ${total} bytes`)
    t.equal(got.length, total, 'every byte the script wrote before its exit')
    t.ok(got.zeros, 'and only those')
    t.ok(got.complete, 'clean end')
  })
}

for (const launcher of LAUNCHERS) {
  t.test(`${launcher}: the proxy does not keep a script's stderr open for a daemon that holds it`, async (t) => {
    const { dir, p, kill } = await daemonSite(t, launcher, '30s')
    const pidFile = join(dir, 'errheld.pid')
    kill(pidFile)
    // A first request starts whatever the launcher keeps (the fork server and its sockets).
    t.equal((await fetchRaw(`${p.url}/c/eof.sh`)).status, 200)
    const eofPid = Number(readFileSync(join(dir, 'eof.pid'), 'utf8'))
    process.kill(eofPid, 'SIGKILL')
    const quiet = (): string[] => [...openFds()].filter(([fd, target]) => before.get(fd) !== target).map(([fd, target]) => `${fd} -> ${target}`)
    let before = openFds()
    t.ok(await waitFor(() => { before = openFds(); return !alive(eofPid) && quiet().length === 0 }, 10_000), 'settled before the request')
    before = openFds()
    const r = await fetchRaw(`${p.url}/c/errheld.sh`)
    t.same([r.status, r.body.toString(), r.complete], [200, 'ok', true])
    t.ok(existsSync(pidFile), 'the daemon runs')
    const daemonPid = Number(readFileSync(pidFile, 'utf8'))
    let extra: string[] = []
    t.ok(await waitFor(() => { extra = quiet(); return extra.length === 0 }, 10_000), 'no descriptor of the exchange left open while the daemon lives', { extra })
    t.ok(alive(daemonPid), 'the daemon still holds its stderr')
    t.ok(p.lines.some((l) => l.msg.includes('before exit')), 'what the script wrote to stderr before its exit is logged')
  })
}

t.test('no leaks', (t) => assertNoLeaks(t, baseline, 10_000))
