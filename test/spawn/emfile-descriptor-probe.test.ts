/**
 * descriptorShortage(need), which the fork server asks when a program's stdio connections never
 * came (were they shed by libuv for want of descriptors?): run in a node process under
 * `prlimit --nofile=64:64` that opens /dev/null until EMFILE, then frees a few. It says EMFILE
 * exactly while fewer than `need` descriptors are free, and the probe itself leaves none open.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { pathToFileURL } from 'node:url'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { ensureBuilt, root } from '../cli/run.js'

const SCRIPT = `
const { descriptorShortage } = await import(process.argv[1])
const { openSync, closeSync, readdirSync } = await import('node:fs')
const fds = []
let filled = null
try { for (;;) fds.push(openSync('/dev/null', 'r')) } catch (e) { filled = e.code }
const out = { filled }
out.full1 = descriptorShortage(1)
closeSync(fds.pop())
out.free1need1 = descriptorShortage(1)
out.free1need2 = descriptorShortage(2)
closeSync(fds.pop()); closeSync(fds.pop())
out.free3need3 = descriptorShortage(3)
out.free3need4 = descriptorShortage(4)
// Nothing left open by the probes: three more still fit, a fourth does not.
const more = []
try { for (;;) more.push(openSync('/dev/null', 'r')) } catch {}
out.stillFree = more.length
for (const fd of [...more, ...fds]) closeSync(fd)
console.log(JSON.stringify(out))
`

t.test('descriptorShortage: EMFILE exactly while fewer than `need` descriptors are free', async (t) => {
  guardLeaks(t)
  await ensureBuilt()
  const mod = pathToFileURL(join(root, 'dist', 'spawn', 'fork-server.js')).href
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile('prlimit', ['--nofile=64:64', process.execPath, '--input-type=module', '-e', SCRIPT, mod], { timeout: 30_000 }, (err, out, errOut) => {
      if (err !== null) reject(new Error(`${err.message}\n${errOut}`)); else resolve(out)
    })
  })
  t.same(JSON.parse(stdout), {
    filled: 'EMFILE',
    full1: 'EMFILE',
    free1need1: null,
    free1need2: 'EMFILE',
    free3need3: null,
    free3need4: 'EMFILE',
    stillFree: 3,
  })
})
