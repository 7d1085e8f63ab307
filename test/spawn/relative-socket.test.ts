/**
 * A relative unix socketName (the embedder's API; the config makes it absolute from the config
 * file's directory) names a path from the host's working directory, where the manager binds and
 * probes it. With `handoff: self` the program got it relative as SOCKET and bound it from its own
 * cwd (by default the binary's directory): a socket in another directory, never ready, FAILED.
 */
import t from 'tap'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, nodeBackend, tempDir } from './fixtures/manager.js'
import { get } from './fixtures/http.js'

for (const handoff of ['self', 'fd0'] as const) {
  leakTest(t, `handoff ${handoff}: a relative unix socketName is the host's path, for the program too`, async (t, defer) => {
    const host = tempDir(defer)
    const child = tempDir(defer)
    const before = process.cwd()
    process.chdir(host)
    defer(() => process.chdir(before))
    const m = manager(defer)
    m.add('rel', { binPath: nodeBackend(), socketName: './s.sock', handoff, cwd: child, startTimeout: 10_000, restart: { maxStarts: 0 } })
    await m.start()
    await ensure(m, 'rel')
    const [ep] = m.source('rel').list()
    t.equal(ep.address, `unix:${join(host, 's.sock')}`, 'listed with its absolute path')
    t.equal((await get(ep.address)).body, String(m.status()[0].processes[0].pid), 'served there by the spawned program')
    t.same(readdirSync(child), [], 'nothing bound in the program\'s working directory')
  })
}
