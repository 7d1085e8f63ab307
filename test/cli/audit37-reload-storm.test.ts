/**
 * SIGHUP reload with spawned pools on the real CLI (docs/guides/operators.md, Reload): ten SIGHUPs
 * in a tight loop while requests flow end in the last file's state, with no request failed and no
 * backend left over; a reload restarts a FAILED spawn, whether the file changed or only its program
 * was fixed.
 */
import t from 'tap'
import { renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { appDir, processesNaming, serveKilled, sighupReload } from './run.js'
import { backendProgram, pidTag, spawnsYaml as yaml, statusSpawns, traffic } from './reload-kit.js'

const BACKEND = backendProgram(1000)

t.test('ten SIGHUPs in a tight loop while requests flow: one final state, nothing leaked, nothing lost', async (t) => {
  guardLeaks(t, { timeoutMs: 30_000 })
  const { file, app } = appDir(t, BACKEND, 'pc-audit37-storm-')
  writeFileSync(file, yaml(app, [{ name: 'a', tag: 'v0' }, { name: 'b', tag: 'k' }]))
  const { s, seen } = await serveKilled(t, file)
  const [b1] = await pidTag(s, 'b')
  seen.push((await pidTag(s, 'a'))[0], b1)
  const flow = traffic(s.url, ['a', 'b'])
  const at = s.logs().length
  for (let i = 1; i <= 10; i++) {
    // Replaced whole (rename), as an editor or config management saves it: a reload may read the
    // file at any moment of the loop, never half-written.
    writeFileSync(`${file}.new`, yaml(app, [{ name: 'a', tag: `v${i}` }, { name: 'b', tag: 'k' }]))
    renameSync(`${file}.new`, file)
    s.child.kill('SIGHUP')
  }
  // The last file is read by the last reload; wait until `a` serves it.
  let a: [number, string] = [0, '']
  t.ok(await waitFor(async () => { a = await pidTag(s, 'a'); return a[1] === 'v10' }, 60_000), 'the final file serves')
  seen.push(a[0])
  // One more HUP with the same file: reloads run one at a time, so once it ended none is queued.
  const last = await sighupReload(s, file, yaml(app, [{ name: 'a', tag: 'v10' }, { name: 'b', tag: 'k' }]))
  t.equal(last.line.msg, 'reloaded')
  t.same(s.logs().slice(at).filter((x) => String(x.msg).startsWith('reload rejected')), [], 'no reload was rejected')
  t.same(await pidTag(s, 'a'), a, 'an unchanged file keeps the final state')
  const { count, bad } = await flow.stop()
  t.ok(count > 0)
  t.same(bad, [], 'no request failed during the storm')
  t.same(await pidTag(s, 'b'), [b1, 'k'], 'the unchanged spawn kept its process through every reload')
  t.ok(await waitFor(() => processesNaming(app).length === 2, 30_000), `only the two current backends run (${processesNaming(app).join(' ')})`)
  t.same((await statusSpawns(s)).map((x) => [x.name, x.processes.map((p) => p.pid)]), [['a', [a[0]]], ['b', [b1]]])

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})

t.test('a FAILED spawn: a reload fixing its program (same config) or its config starts it again', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { dir, file, app } = appDir(t, BACKEND, 'pc-audit37-failed-')
  const bad = join(dir, 'bad.mjs')
  writeFileSync(bad, 'process.exit(3)\n')
  const extra = '    restart: { maxStarts: 2 }\n'
  writeFileSync(file, yaml(app, [{ name: 'a', tag: 'v1' }, { name: 'b', tag: 'v1', prog: bad, extra }]))
  const { s, seen } = await serveKilled(t, file)
  seen.push((await pidTag(s, 'a'))[0])
  t.ok(await waitFor(async () => (await statusSpawns(s)).find((x) => x.name === 'b')?.state === 'failed', 30_000), 'b is FAILED')
  // The program fixed, the file unchanged: the kept spawn is cleared and starts again.
  writeFileSync(bad, BACKEND)
  const { line } = await sighupReload(s, file, yaml(app, [{ name: 'a', tag: 'v1' }, { name: 'b', tag: 'v1', prog: bad, extra }]))
  t.equal(line.msg, 'reloaded')
  let b: [number, string] = [0, '']
  t.ok(await waitFor(async () => { try { b = await pidTag(s, 'b'); return true } catch { return false } }, 30_000), 'b serves again')
  seen.push(b[0])

  // Broken again by a changed config, then fixed by the next.
  writeFileSync(bad, 'process.exit(3)\n')
  process.kill(b[0], 'SIGKILL')
  t.ok(await waitFor(async () => (await statusSpawns(s)).find((x) => x.name === 'b')?.state === 'failed', 30_000), 'b is FAILED again')
  const r2 = await sighupReload(s, file, yaml(app, [{ name: 'a', tag: 'v1' }, { name: 'b', tag: 'v2', extra }]))
  t.equal(r2.line.msg, 'reloaded')
  const b2 = await pidTag(s, 'b')
  seen.push(b2[0])
  t.equal(b2[1], 'v2')
  t.same((await statusSpawns(s)).map((x) => [x.name, x.state]), [['a', 'running'], ['b', 'running']])

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0 && processesNaming(bad).length === 0), 'no backend left')
})

