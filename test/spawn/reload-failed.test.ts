/**
 * A SIGHUP reload restarts a spawn left in FAILED, even when its config did not change: the reload
 * is how an operator says the fault is fixed (the docs told them so, and before, the spawn stayed
 * FAILED and every request got 503 until a restart of proxycore).
 */
import t from 'tap'
import { copyFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { backendScript, tempDir } from './fixtures/manager.js'
import { waitFor } from '../helpers/leaks.js'
import { SpawnSet } from '../../src/gateway/spawn-set.js'
import type { SpawnLayerConfig } from '../../src/config/spawns.js'
import { silentLogger } from '../../src/logger.js'

leakTest(t, 'a reload restarts a kept spawn that is FAILED; a running one is left alone', async (t, defer) => {
  const dir = tempDir(defer)
  const missing = join(dir, 'app.mjs')
  const config: SpawnLayerConfig = {
    spawns: {
      app: { binPath: [process.execPath, missing], socketName: '127.0.0.1:0', restart: { initialDelay: '10ms', maxStarts: 1, window: '30s' } },
      other: { binPath: [process.execPath, backendScript], socketName: '127.0.0.1:0' },
    },
  }
  const { set } = await SpawnSet.empty(silentLogger).next(config)
  defer(() => set.close())
  const state = (s: SpawnSet, name: string): string | undefined => s.status().find((x) => x.name === name)?.state
  t.ok(await waitFor(() => state(set, 'app') === 'failed', 10_000), 'app FAILED: its program is missing')
  await set.sources().other.ensure(AbortSignal.timeout(10_000))
  const otherPid = set.status().find((x) => x.name === 'other')?.processes[0].pid

  copyFileSync(backendScript, missing)
  const again = await set.next(config)
  t.same(again.retired, [], 'nothing changed: both components kept')
  await again.set.sources().app.ensure(AbortSignal.timeout(10_000))
  t.equal(state(again.set, 'app'), 'running', 'the FAILED spawn started again')
  t.equal(again.set.status().find((x) => x.name === 'other')?.processes[0].pid, otherPid, 'the running one kept its process')
})
