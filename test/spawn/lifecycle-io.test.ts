/** Orphan cleanup after a host crash, per-request pipe children, and output capture. */
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { once } from 'node:events'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, nodeBackend, tempDir } from './fixtures/manager.js'
import { processStartTime } from '../../src/spawn/pidfile.js'
import { alive, processGroup, waitFor } from '../helpers/leaks.js'

leakTest(t, 'runDir: an orphan of a previous host (pid file + marker) is killed as a group before start', async (t, defer) => {
  const dir = tempDir(defer)
  const runDir = join(dir, 'run')
  // The state a kill -9'd host leaves: a backend still running in its own group, and its pid file.
  const orphan = spawn('sh', ['-c', 'sleep 300 & wait'], { detached: true, stdio: 'ignore', env: { PROXYCORE_SPAWN: 'web' } })
  const orphanExit = once(orphan, 'exit')
  await once(orphan, 'spawn')
  const pid = orphan.pid as number
  t.ok(await waitFor(() => processGroup(pid).length === 2, 5000))
  const m = manager(defer, { runDir })
  writeFileSync(join(runDir, `web.${pid}.pid`), JSON.stringify({ spawn: 'web', pid, pgid: pid, startTime: processStartTime(pid), address: '127.0.0.1:1' }))
  // A pid file whose process lacks the marker is only a stale file: that process is left alone.
  const bystander = spawn('sleep', ['300'], { stdio: 'ignore', env: {} })
  defer(async () => { bystander.kill('SIGKILL'); await once(bystander, 'exit') })
  await once(bystander, 'spawn')
  writeFileSync(join(runDir, `web.${bystander.pid}.pid`), JSON.stringify({ spawn: 'web', pid: bystander.pid, pgid: bystander.pid, startTime: processStartTime(bystander.pid as number), address: '127.0.0.1:1' }))
  m.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0' })
  await m.start()
  await orphanExit
  t.same(processGroup(pid).filter((p) => p.state !== 'Z'), [], 'orphan group killed')
  t.ok(alive(bystander.pid as number), 'unmarked process untouched')
  await ensure(m, 'web')
  const own = m.status()[0].processes[0].pid
  t.same(readdirSync(runDir), [`web.${own}.pid`], 'stale files removed; the new process has its pid file')
  await m.close()
  t.same(readdirSync(runDir), [], 'pid file removed on stop')
})

leakTest(t, 'pipeStarter: clean env, own group, kill() reaches backgrounded grandchildren', async (t, defer) => {
  process.env.SECRET_TOKEN = 's3cr3t'
  defer(() => { delete process.env.SECRET_TOKEN })
  const m = manager(defer)
  m.add('cgi', { socketType: 'pipe', binPath: '/bin/sh', environment: { FIXED: '1' }, stopTimeout: 200 })
  const starter = m.pipeStarter('cgi')
  const child = starter.start({ argv: ['-c', 'sleep 300 & echo "$FIXED:${SECRET_TOKEN:-none}"; wait'], env: { REQUEST_METHOD: 'GET' }, cwd: '/' })
  const exited = once(child, 'exit')
  const [line] = await once(child.stdout as NodeJS.ReadableStream, 'data') as [Buffer]
  t.equal(String(line).trim(), '1:none', 'environment built from scratch')
  const pid = child.pid as number
  t.ok(await waitFor(() => processGroup(pid).length === 2, 5000), 'sh + sleep in their own group')
  t.equal(m.status()[0].pipeChildren, 1)
  starter.kill(child)
  await exited
  t.ok(await waitFor(() => processGroup(pid).every((p) => p.state === 'Z'), 5000), 'whole group gone')
  t.ok(await waitFor(() => m.status()[0].pipeChildren === 0, 5000))
})

leakTest(t, 'output: stderr events, size-rotated files, and a flood neither blocks the child nor queues unbounded', async (t, defer) => {
  const dir = tempDir(defer)
  const m = manager(defer, { log: { dir, maxSize: 1024 * 1024, keep: 2, maxBuffered: 256 * 1024 } })
  let evBytes = 0
  m.on('stderr', (e) => { evBytes += e.chunk.length })
  m.add('flood', { binPath: nodeBackend('flood'), socketName: '127.0.0.1:0', handoff: 'self' })
  const rss0 = process.memoryUsage().rss
  await m.start()
  await ensure(m, 'flood') // listens only after writing 32 MiB to stderr: it was never blocked
  const total = 512 * 64 * 1024 + 'flood-done\n'.length
  t.ok(await waitFor(() => evBytes >= total, 10_000), `all ${total} bytes seen as events`)
  t.ok(process.memoryUsage().rss - rss0 < 64 * 1024 * 1024, 'host memory did not grow by the flood size')
  await m.close()
  const files = readdirSync(dir).filter((f) => f.startsWith('flood.log')).sort()
  t.same(files, ['flood.log', 'flood.log.1', 'flood.log.2'], 'rotated, keep 2')
  for (const f of files) t.ok(statSync(join(dir, f)).size <= 1024 * 1024, `${f} within maxSize`)
  const written = files.reduce((n, f) => n + statSync(join(dir, f)).size, 0)
  t.comment(`dropped ${m.status()[0].droppedOutputBytes} bytes, wrote ${written} (last 3 files)`)
  t.ok(existsSync(join(dir, 'flood.log')))
})
