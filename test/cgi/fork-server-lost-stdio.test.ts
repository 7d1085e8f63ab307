/**
 * A CGI program whose stdio connection never reached the proxy (at EMFILE libuv accepts and closes
 * pending connections), through the whole pipeline, with either fork-server helper. The helper
 * reported it exec'd, so it runs, but its exchange never sees 'spawn'. When the exchange ends (the
 * headers timeout here; a client abort takes the same kill()), the program and its group must be
 * stopped at once, as the `direct` launcher's are, and the proxy's close() must not wait for the
 * program to exit by itself. The loss is made with the fork server's test seam, which drops the
 * connection as it arrives.
 */
import t from 'tap'
import { join } from 'node:path'
import { get } from '../helpers/servers.js'
import { childrenOf, guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import { cgiProxy, tempDir, withHelperEnv, writeScripts } from './harness.js'
import { findForkServer, forkServerSeams } from '../../src/spawn/fork-server.js'

const SLOW = '#!/bin/sh\nsleep 300 &\nwait\n'

const compiledBuilt = withHelperEnv(undefined, () => findForkServer()?.kind === 'compiled')
const perlThere = withHelperEnv('perl', () => findForkServer()?.kind === 'perl')

/** The CGI programs the helper runs (its children), by pid. */
function programs (): number[] {
  const helper = childrenOf().find((p) => p.comm.startsWith('proxycore-fork') && p.state !== 'Z')
  return helper === undefined ? [] : childrenOf(helper.pid).filter((p) => p.state !== 'Z').map((p) => p.pid)
}

for (const [kind, env, skip] of [
  ['compiled', undefined, compiledBuilt ? false : 'the compiled fork server is not built'],
  ['perl', 'perl', perlThere ? false : 'no perl for the Perl fork server'],
] as const) {
  t.test(`${kind} helper: a program whose stderr never connected is stopped at its exchange's timeout; close() does not wait for it`, { skip }, async (t) => {
    guardLeaks(t)
    const dir = tempDir(t)
    const cgiDir = join(dir, 'cgi')
    writeScripts(cgiDir, { 'slow.sh': SLOW })
    const p = await withHelperEnv(env, () => cgiProxy(t, { fs: { stopTimeout: 300 } }, [
      { match: { prefix: '/fs/' }, protocol: 'cgi', spawn: 'fs', docroot: cgiDir, stripPrefix: true, timeouts: { headers: '400ms' } },
    ]))
    t.equal(p.manager.pipeStarter('fs').forkServerKind, kind)
    forkServerSeams.dropStdio = (fd) => fd === 2
    t.teardown(() => { forkServerSeams.dropStdio = null })
    const answer = get(`${p.url}/fs/slow.sh`)
    let pid = 0
    t.ok(await waitFor(() => { pid = programs()[0] ?? 0; return pid !== 0 && processGroup(pid).some((x) => x.comm === 'sleep') }, 5000), 'the program runs, its sleep in its group')
    // Whatever a failed run leaves must not outlive the test (nor hold up its teardown).
    t.teardown(() => { try { process.kill(-pid, 'SIGKILL') } catch {} })
    const r = await answer
    const answeredAt = Date.now()
    t.equal(r.status, 504, 'the headers timeout answered')
    t.ok(await waitFor(() => processGroup(pid).every((x) => x.state === 'Z'), 1500), `the program and its sleep were stopped at the timeout (${Date.now() - answeredAt} ms after it)`)
    const closing = Date.now()
    const closed = await Promise.race([p.manager.close().then(() => true), new Promise<false>((resolve) => {
      const tm = setTimeout(() => resolve(false), 6000)
      t.teardown(() => clearTimeout(tm))
    })])
    t.ok(closed, `the spawn manager closed ${closed ? `in ${Date.now() - closing} ms` : 'not within 6 s'}`)
  })
}
