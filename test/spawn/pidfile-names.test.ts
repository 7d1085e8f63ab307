/**
 * Pid files are matched by exact name, `<spawn>.<digits>.pid`: spawn names may contain dots, and
 * spawn `a` must never take (and delete without killing) the files of spawn `a.b`, whose orphans
 * would then survive and hold its address (audit D, pid-file prefix clash).
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { once } from 'node:events'
import { leakTest } from './fixtures/guard.js'
import { tempDir } from './fixtures/manager.js'
import { PidFiles, isPidFileOf, processStartTime } from '../../src/spawn/pidfile.js'
import { realClock } from '../../src/spawn/backoff.js'
import { alive, waitFor } from '../helpers/leaks.js'

t.test('isPidFileOf parses the whole name', async (t) => {
  t.ok(isPidFileOf('a.123.pid', 'a'))
  t.ok(isPidFileOf('a.b.123.pid', 'a.b'))
  t.notOk(isPidFileOf('a.b.123.pid', 'a'), 'another spawn whose name starts with `a.`')
  t.notOk(isPidFileOf('a.b.c.123.pid', 'a.b'))
  t.notOk(isPidFileOf('a..pid', 'a'), 'no pid')
  t.notOk(isPidFileOf('a.12x.pid', 'a'))
  t.notOk(isPidFileOf('a.123.pid.tmp', 'a'))
  t.notOk(isPidFileOf('ab.123.pid', 'a'))
})

leakTest(t, "cleanOrphans(a) leaves a.b's pid file and orphan alone; cleanOrphans(a.b) kills it", async (t, defer) => {
  const runDir = join(tempDir(defer), 'run')
  const files = new PidFiles(runDir)
  const orphan = spawn('sleep', ['300'], { detached: true, stdio: 'ignore', env: { PROXYCORE_SPAWN: 'a.b' } })
  const orphanExit = once(orphan, 'exit')
  defer(async () => { if (orphan.exitCode === null && orphan.signalCode === null) { orphan.kill('SIGKILL'); await orphanExit } })
  await once(orphan, 'spawn')
  const pid = orphan.pid as number
  const name = `a.b.${pid}.pid`
  writeFileSync(join(runDir, name), JSON.stringify({ spawn: 'a.b', pid, pgid: pid, startTime: processStartTime(pid), address: '127.0.0.1:1' }))
  t.same(await files.cleanOrphans('a', realClock, 2000), [], 'spawn a kills nothing')
  t.ok(existsSync(join(runDir, name)), "a.b's pid file is still there")
  t.ok(alive(pid), "a.b's orphan untouched by a")
  t.same(await files.cleanOrphans('a.b', realClock, 2000), [pid], 'spawn a.b kills its own orphan')
  await orphanExit
  t.same(readdirSync(runDir), [], 'and removes its file')
})

leakTest(t, 'the pgid a pid file names is not trusted: only the verified orphan\'s own group is killed', async (t, defer) => {
  const runDir = join(tempDir(defer), 'run')
  const files = new PidFiles(runDir)
  const start = (env: Record<string, string>) => {
    const child = spawn('sleep', ['300'], { detached: true, stdio: 'ignore', env })
    const exit = once(child, 'exit')
    defer(async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exit } })
    return { child, exit }
  }
  const orphan = start({ PROXYCORE_SPAWN: 'app' })
  const bystander = start({})
  await Promise.all([once(orphan.child, 'spawn'), once(bystander.child, 'spawn')])
  const pid = orphan.child.pid as number
  const other = bystander.child.pid as number
  // A pid file written by someone who could write runDir: a real orphan, someone else's group.
  writeFileSync(join(runDir, `app.${pid}.pid`), JSON.stringify({ spawn: 'app', pid, pgid: other, startTime: processStartTime(pid), address: '127.0.0.1:1' }))
  t.same(await files.cleanOrphans('app', realClock, 2000), [pid], 'the orphan is reported killed')
  t.ok(await waitFor(() => !alive(pid), 5000), 'and is gone')
  t.ok(alive(other), 'the group the file named is not')
})
