/**
 * fd0 over a unix socket: the child is spawned, then its socket is renamed from its private name
 * onto the configured path. When that last step fails (here: a directory appeared at the path in
 * the meantime, a race a real peer cannot be made to lose on cue), the child already runs; it must
 * be stopped and the start counted as failed, not left running outside the manager's reach.
 */
import t from 'tap'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { backendScript, tempDir } from './fixtures/manager.js'
import { SpawnedProcess } from '../../src/spawn/process.js'
import { resolveSpec } from '../../src/spawn/spec.js'
import { OutputSink } from '../../src/spawn/output.js'
import { PidFiles } from '../../src/spawn/pidfile.js'
import { realClock } from '../../src/spawn/backoff.js'
import { alive, waitFor } from '../helpers/leaks.js'
import type { ExitInfo } from '../../src/spawn/types.js'

leakTest(t, 'socket rename fails after the spawn: the child is stopped, the start failed', async (t, defer) => {
  const dir = tempDir(defer)
  const path = join(dir, 'app.sock')
  const spec = resolveSpec('pub', { binPath: [process.execPath, backendScript], socketName: path, stopTimeout: 1000 })
  const output = new OutputSink('pub', undefined, () => {})
  let spawnedPid: number | null = null
  const ends: Array<{ info: ExitInfo, expected: boolean, beforeReady: boolean }> = []
  const p = new SpawnedProcess({
    id: 'pub#0',
    slot: 0,
    spec,
    address: spec.addresses[0],
    clock: realClock,
    output,
    pidFiles: new PidFiles(undefined),
    // Planned after the socket is bound under its private name: make the final rename fail.
    plan: () => {
      mkdirSync(join(path, 'occupied'), { recursive: true })
      return { file: process.execPath, args: [backendScript], env: { PROXYCORE_SPAWN: 'pub' }, cwd: undefined }
    },
    hooks: {
      onSpawn: (q) => { spawnedPid = q.pid },
      onReady: () => {},
      onDown: () => {},
      onExit: (_q, info, expected, beforeReady) => { ends.push({ info, expected, beforeReady }) },
    },
  })
  defer(async () => {
    await p.stop()
    if (spawnedPid !== null && alive(spawnedPid)) { process.kill(-spawnedPid, 'SIGKILL'); await waitFor(() => !alive(spawnedPid as number), 5000) }
    await output.close()
  })
  await p.start()
  t.ok(await waitFor(() => ends.length > 0, 8000), 'the process reported its end')
  t.equal(ends.length, 1, 'once')
  t.equal((p.startError as { code?: string } | null)?.code, 'ERR_SPAWN_BIND', `start failed: ${p.startError?.message ?? ''}`)
  t.equal(ends[0]?.beforeReady, true, 'a failed start (counts for backoff and the start limit)')
  t.not(p.state, 'ready', 'never routable')
  if (spawnedPid !== null) t.notOk(alive(spawnedPid), 'the child that was spawned is not left running')
})
