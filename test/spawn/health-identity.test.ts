/**
 * Command health checks run as the backend does (systemd runs ExecStartPre= as User=): same
 * uid/gid, no supplementary groups, clean environment with the safe PATH, same limits; in their
 * own process group, which a timeout kills whole. Before, a user-switched spawn's health command
 * ran as the host's root (audit D). The identity part needs root to create a user: skipped with
 * the reason locally, a failure under CI=true.
 */
import t from 'tap'
import { chownSync, existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { alive, waitFor } from '../helpers/leaks.js'
import { ensure, manager, nodeBackend, tempDir, userSafeBackend } from './fixtures/manager.js'
import { withTestUsers } from '../helpers/users.js'

const U = { name: 'pchealth', id: 2011 }

leakTest(t, 'a health command that hangs is killed with its whole process group at the timeout', async (t, defer) => {
  const dir = tempDir(defer)
  const m = manager(defer)
  const pids = join(dir, 'pids')
  // The backgrounded sleep would outlive a kill of the shell alone (it is reparented, not ours).
  m.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0', healthCheck: { type: 'command', command: ['/bin/sh', '-c', `sleep 300 & echo $! >> ${pids}; wait`], interval: 50, timeout: 200, failures: 100 } })
  await m.start()
  await ensure(m, 'web')
  t.ok(await waitFor(() => existsSync(pids) && readFileSync(pids, 'utf8').split('\n').length >= 3, 10_000), 'two probes ran (the first timed out)')
  const first = Number(readFileSync(pids, 'utf8').split('\n')[0])
  t.ok(await waitFor(() => !alive(first), 5000), "the timed-out probe's background child was killed with its group")
  await m.close()
})

if (withTestUsers(t, 'health identity test', [U])) {
  leakTest(t, 'the health command of a user-switched spawn runs as its user, with its limits', async (t, defer) => {
    const { dir, script } = userSafeBackend(defer)
    const out = join(dir, 'out')
    mkdirSync(out)
    chownSync(out, U.id, U.id)
    const report = join(out, 'health')
    const m = manager(defer, { tenants: { h: { user: U.name, group: U.name, limits: { nofile: 321 } } } })
    m.add('app', {
      tenant: 'h',
      binPath: [process.execPath, script],
      socketName: join(dir, 'app.sock'),
      healthCheck: { type: 'command', command: ['/bin/sh', '-c', `echo "$(id -u) $(id -g) [$(id -G)] $(ulimit -n) $PATH $SPAWN_PID" > ${report}.tmp && mv ${report}.tmp ${report}`], interval: 50 },
    })
    await m.start()
    await ensure(m, 'app')
    t.ok(await waitFor(() => existsSync(report), 10_000), 'the health command ran')
    const pid = m.status()[0].processes[0].pid
    t.equal(readFileSync(report, 'utf8').trim(), `${U.id} ${U.id} [${U.id}] 321 /usr/local/bin:/usr/bin:/bin ${pid}`, 'uid, gid, only its own group, the tenant limit, safe PATH')
    await m.close()
  })
}
