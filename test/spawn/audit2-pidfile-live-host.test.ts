/**
 * Audit R2-D: orphan cleanup (runDir) must only kill processes whose host is gone. A reload
 * starts the changed spawn's new manager (same name, same runDir) while the old generation still
 * serves (make-before-break); a second instance sharing runDir starts while the first runs. Their
 * processes are alive, carry the marker and match their pid files' start times, yet they are not
 * orphans: killing them takes down the serving generation (or the other instance) at once.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { once } from 'node:events'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, nodeBackend, tempDir } from './fixtures/manager.js'
import { PidFiles, processStartTime } from '../../src/spawn/pidfile.js'
import { realClock } from '../../src/spawn/backoff.js'
import { alive } from '../helpers/leaks.js'

leakTest(t, 'a second manager on the same runDir (a reload) leaves the running generation alone', async (t, defer) => {
  const runDir = join(tempDir(defer), 'run')
  const old = manager(defer, { runDir })
  old.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0', restart: { initialDelay: 5000 } })
  const oldExits: number[] = []
  old.on('exit', (e) => { oldExits.push(e.pid) })
  await old.start()
  await ensure(old, 'web')
  const oldPid = old.status()[0].processes[0].pid as number
  t.same(readdirSync(runDir), [`web.${oldPid}.pid`], 'the old generation has its pid file')

  const next = manager(defer, { runDir })
  next.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0' })
  await next.start()
  await ensure(next, 'web')
  const newPid = next.status()[0].processes[0].pid as number
  t.not(newPid, oldPid, 'the new generation runs its own process')
  t.ok(alive(oldPid), 'the old generation\'s process still runs')
  t.same(oldExits, [], 'and never exited')
  t.same(old.status()[0].processes.map((p) => p.pid), [oldPid], 'the old manager still has it')
  t.same(readdirSync(runDir).sort(), [`web.${newPid}.pid`, `web.${oldPid}.pid`].sort(), 'both pid files kept')
  await old.close()
  t.same(readdirSync(runDir), [`web.${newPid}.pid`], 'the old one removes only its own file')
})

leakTest(t, 'cleanOrphans: a marked process whose recorded host still runs is not killed; one whose host is gone is', async (t, defer) => {
  const runDir = join(tempDir(defer), 'run')
  const files = new PidFiles(runDir)
  const start = (cmd: string, args: string[], env: Record<string, string>) => {
    const child = spawn(cmd, args, { detached: true, stdio: 'ignore', env })
    const exit = once(child, 'exit')
    defer(async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exit } })
    return { child, exit }
  }
  // Another instance's host (any live process stands in for it) and its backend.
  const host = start('sleep', ['300'], {})
  const backend = start('sleep', ['300'], { PROXYCORE_SPAWN: 'web' })
  // A crashed host's backend: its host is gone (a process that already exited).
  const deadHost = start('sleep', ['300'], {})
  const orphan = start('sleep', ['300'], { PROXYCORE_SPAWN: 'web' })
  await Promise.all([once(host.child, 'spawn'), once(backend.child, 'spawn'), once(orphan.child, 'spawn'), once(deadHost.child, 'spawn')])
  const deadHostPid = deadHost.child.pid as number
  const deadHostStart = processStartTime(deadHostPid)
  t.ok(deadHostStart !== null, 'the host-to-be-gone ran')
  deadHost.child.kill('SIGKILL')
  await deadHost.exit
  t.equal(processStartTime(deadHostPid), null, 'and is gone (reaped)')
  const record = (pid: number, hostPid: number, hostStartTime: string | null): void => {
    writeFileSync(join(runDir, `web.${pid}.pid`), JSON.stringify({ spawn: 'web', pid, pgid: pid, startTime: processStartTime(pid), address: '127.0.0.1:1', hostPid, hostStartTime }))
  }
  const hostPid = host.child.pid as number
  const live = backend.child.pid as number
  const dead = orphan.child.pid as number
  record(live, hostPid, processStartTime(hostPid))
  record(dead, deadHostPid, deadHostStart)
  t.same(await files.cleanOrphans('web', realClock, 2000), [dead], 'only the dead host\'s backend is killed')
  await orphan.exit
  t.ok(alive(live), 'the live instance\'s backend still runs')
  t.same(readdirSync(runDir), [`web.${live}.pid`], 'and its pid file is kept')
})
