/**
 * close() called while start() is still in progress (validating, cleaning the runDir, binding,
 * exec'd but not ready yet, a dependent still waiting): every process the manager spawned ends by
 * the time close() resolves, nothing is spawned after, and start() settles. Probed at several
 * moments of a slow start, each marked by an event (a shell that sleeps before it execs the node
 * backend, `handoff: self`, so "starting" lasts): at once, at db's first spawn, once db is ready
 * (app still waiting or just spawning), at app's first spawn. Found sound (audit 34), kept as a
 * regression test.
 */
import t from 'tap'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { backendScript, manager, nextEvent, tempDir } from './fixtures/manager.js'
import { processesIn, waitFor } from '../helpers/leaks.js'

const moments = ['at once', 'db spawned', 'db ready', 'app spawned'] as const

for (const moment of moments) {
  leakTest(t, `close() during start(), ${moment}: every spawned process ends, none spawns after`, async (t, defer) => {
    const dir = tempDir(defer)
    const sh = join(dir, 'slow.sh')
    writeFileSync(sh, `#!/bin/sh\nsleep 0.3\nexec ${process.execPath} ${backendScript} serve\n`)
    chmodSync(sh, 0o755)
    const m = manager(defer, { runDir: join(dir, 'run') })
    m.add('db', { binPath: sh, socketName: join(dir, 'db.sock'), handoff: 'self', minProcs: 2, maxProcs: 2, cwd: dir, stopTimeout: 2000 })
    m.add('app', { binPath: sh, socketName: join(dir, 'app.sock'), handoff: 'self', minProcs: 2, maxProcs: 2, cwd: dir, dependsOn: ['db'], stopTimeout: 2000 })
    const spawned: number[] = []
    let closed = false
    let lateSpawns = 0
    m.on('spawn', (e) => { spawned.push(e.pid); if (closed) lateSpawns++ })
    const point = moment === 'db spawned'
      ? nextEvent(m, 'spawn', (e) => e.spawn === 'db')
      : moment === 'db ready'
        ? nextEvent(m, 'ready', (e) => e.spawn === 'db')
        : moment === 'app spawned' ? nextEvent(m, 'spawn', (e) => e.spawn === 'app') : null
    const started = m.start().then(() => null, (err: Error) => err)
    await point
    await m.close()
    closed = true
    t.same(processesIn(dir), [], `nothing runs once close() resolved (${spawned.length} spawned)`)
    t.equal(await started, null, 'start() settled without an error')
    t.same(m.status().map((s) => s.state), ['stopped', 'stopped'])
    // Anything start() still had queued would spawn now: give it the time of a start.
    await waitFor(() => lateSpawns > 0 || processesIn(dir).length > 0, 800)
    t.equal(lateSpawns, 0, 'no spawn after close()')
    t.same(processesIn(dir), [], 'still nothing runs')
  })
}
