/**
 * The signal state a CGI program starts with, through the whole pipeline: nothing ignored and
 * nothing blocked, from either fork-server helper as from Node's spawn() (`direct`). perl ignores
 * SIGFPE at start-up, and an ignored signal stays ignored across fork and exec: the Perl helper
 * must set it back, or every program it starts survives `kill -FPE` and integer division traps.
 */
import t from 'tap'
import { join } from 'node:path'
import { get } from '../helpers/servers.js'
import { guardLeaks } from '../helpers/leaks.js'
import { cgiProxy, tempDir, withHelperEnv, writeScripts } from './harness.js'
import { findForkServer } from '../../src/spawn/fork-server.js'

const SIGNALS = `#!/bin/sh
printf 'Content-Type: text/plain\\n\\n'
exec grep -E '^Sig(Ign|Blk):' /proc/self/status
`

/**
 * The program's SigBlk and SigIgn lines, as /proc shows them (read by what it execs, not of the
 * shell while it waits for a command: it blocks signals then).
 */
async function signalState (url: string): Promise<string> {
  const r = await get(url)
  if (r.status !== 200) throw new Error(`${url}: ${r.status} ${r.body.toString()}`)
  return r.body.toString().replace(/\t/g, ' ').trim()
}

const CLEAN = 'SigBlk: 0000000000000000\nSigIgn: 0000000000000000'

const compiledBuilt = withHelperEnv(undefined, () => findForkServer()?.kind === 'compiled')
const perlThere = withHelperEnv('perl', () => findForkServer()?.kind === 'perl')

for (const [kind, env, skip] of [
  ['perl', 'perl', perlThere ? false : 'no perl for the Perl fork server'],
  ['compiled', undefined, compiledBuilt ? false : 'the compiled fork server is not built'],
] as const) {
  t.test(`the ${kind} helper starts CGI programs with no signal ignored or blocked, as direct does`, { skip }, async (t) => {
    guardLeaks(t)
    const dir = tempDir(t)
    const cgiDir = join(dir, 'cgi')
    writeScripts(cgiDir, { 'signals.sh': SIGNALS })
    // The manager picks its helper when the spawns are added (cgiProxy adds them before it awaits).
    const p = await withHelperEnv(env, () => cgiProxy(t, { fs: {}, direct: { launcher: 'direct' } }, [
      { match: { prefix: '/fs/' }, protocol: 'cgi', spawn: 'fs', docroot: cgiDir, stripPrefix: true },
      { match: { prefix: '/direct/' }, protocol: 'cgi', spawn: 'direct', docroot: cgiDir, stripPrefix: true },
    ]))
    t.equal(p.manager.pipeStarter('fs').forkServerKind, kind, `the ${kind} helper runs`)
    t.equal(await signalState(`${p.url}/direct/signals.sh`), CLEAN, 'direct: nothing ignored or blocked')
    t.equal(await signalState(`${p.url}/fs/signals.sh`), CLEAN, `${kind} helper: nothing ignored (SIGFPE included) or blocked`)
  })
}
