/**
 * Audit R2-D: a `command` health check against a backend that accepts connections but never
 * answers (proxycore bound the socket, handoff fd0; the program never calls accept(2), so the
 * kernel completes every connect). Each check hangs until its timeout; checks of one process must
 * never pile up (one in flight), the process is replaced after `failures` timeouts, and no check
 * runs once the manager is closed.
 */
import t from 'tap'
import { readdirSync, readFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, nextEvent, tempDir } from './fixtures/manager.js'
import { waitFor } from '../helpers/leaks.js'

const MARK = 'audit2-health-hang-check'

/** Live (non-zombie) processes whose argv carries `MARK`. */
function checksRunning (): number {
  let n = 0
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      if (!readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').includes(MARK)) continue
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z') n++
    } catch { /* gone */ }
  }
  return n
}

leakTest(t, 'a check that never gets an answer: one in flight, process replaced after `failures` timeouts, none after close()', async (t, defer) => {
  const dir = tempDir(defer)
  const log = join(dir, 'checks')
  // Sends a request and waits for any answer (a real client's check); $0 is the marker.
  const perl = `open(my $l, '>>', '${log}'); print $l "start\\n"; close $l; use IO::Socket::INET; my $s = IO::Socket::INET->new($ENV{SPAWN_ADDRESS}) or exit 1; print $s "GET / HTTP/1.0\\r\\n\\r\\n"; exit(defined(<$s>) ? 0 : 1)`
  const m = manager(defer)
  m.add('mute', {
    binPath: ['/bin/sleep', '300'],
    socketName: '127.0.0.1:0',
    stopTimeout: 2000,
    healthCheck: { type: 'command', command: ['/usr/bin/perl', '-e', perl, MARK], interval: 20, timeout: 300, failures: 3 },
    restart: { initialDelay: 10 },
  })
  await m.start()
  await ensure(m, 'mute')
  const first = m.status()[0].processes[0]
  const exited = nextEvent(m, 'exit', (e) => e.pid === first.pid, 20_000)
  let most = 0
  let gone = false
  void exited.then(() => { gone = true }, () => { gone = true })
  // Sample until the unhealthy process is gone (bounded by nextEvent's 20 s).
  t.ok(await waitFor(() => { most = Math.max(most, checksRunning()); return gone }, 20_000, 5), 'the process was given up')
  const e = await exited
  t.equal(e.expected, false, 'an unhealthy exit counts as a crash')
  t.equal(most, 1, `never more than one check in flight (most seen: ${most})`)
  const starts = readFileSync(log, 'utf8').split('\n').filter(Boolean).length
  t.ok(starts >= 3, `at least \`failures\` checks ran (${starts})`)
  await ensure(m, 'mute', 20_000)
  t.not(m.status()[0].processes[0].pid, first.pid, 'a replacement runs')
  t.ok(await waitFor(() => checksRunning() === 1, 10_000), 'the replacement is checked too')
  await m.close()
  t.equal(checksRunning(), 0, 'close() ended the running check')
  const after = readFileSync(log, 'utf8').length
  // Many intervals (20 ms): a leftover timer would start a check (and log it) by then.
  t.notOk(await waitFor(() => (existsSync(log) ? readFileSync(log, 'utf8').length : 0) !== after, 500, 20), 'no check started after close()')
})

leakTest(t, 'a flapping backend (every other check fails) is not replaced: failures must be consecutive', async (t, defer) => {
  const dir = tempDir(defer)
  const flag = join(dir, 'flag')
  const log = join(dir, 'checks')
  // Fails when the flag is there (and removes it), passes and sets it otherwise: 1, 0, 1, 0, …
  const script = `echo x >> ${log}; if [ -e ${flag} ]; then rm ${flag}; exit 1; fi; : > ${flag}; exit 0`
  const m = manager(defer)
  m.add('flap', {
    binPath: ['/bin/sleep', '300'],
    socketName: '127.0.0.1:0',
    healthCheck: { type: 'command', command: ['/bin/sh', '-c', script, MARK], interval: 10, timeout: 2000, failures: 2 },
  })
  const exits: number[] = []
  m.on('exit', (e) => { exits.push(e.pid) })
  await m.start()
  await ensure(m, 'flap')
  const pid = m.status()[0].processes[0].pid
  const checks = (): number => existsSync(log) ? readFileSync(log, 'utf8').length / 2 : 0
  t.ok(await waitFor(() => checks() >= 20, 30_000), `20 checks ran (${checks()})`)
  t.same(exits, [], 'never replaced')
  t.equal(m.status()[0].processes[0].pid, pid, 'the same process serves')
  await m.close()
})
