/**
 * An access log whose stream fails must not take the proxy down. A write stream on a full
 * disk (`/dev/full`: every write is ENOSPC) or in a directory that does not exist emits 'error';
 * with no listener that is an uncaught exception and the whole proxy process exits. The log keeps
 * the first error, drops (and counts) later lines, and the proxy keeps serving.
 */
import t from 'tap'
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createAccessLog } from '../../src/status/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'

const dir = mkdtempSync(join(tmpdir(), 'pc-audit-log-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

for (const [what, file, code] of [
  ['a full disk (ENOSPC on write)', '/dev/full', 'ENOSPC'],
  ['a log directory that does not exist (ENOENT on open)', join(dir, 'missing', 'access.log'), 'ENOENT'],
] as const) {
  t.test(`stream error: ${what} does not crash the proxy`, async (t) => {
    guardLeaks(t)
    const be = await backend(t, (_req, res) => res.end('hello'))
    const { proxy, url } = await proxyServer(t, { routes: [{ name: 'api', protocol: 'http', backends: [be.address] }] })
    const stream = createWriteStream(file, { flags: 'a' })
    const access = createAccessLog(proxy.events, { stream })
    t.teardown(() => { access.close(); stream.destroy() })
    t.equal(access.error, null, 'no error before the first write')

    const first = await get(`${url}/one`)
    t.equal(first.status, 200)
    t.ok(await waitFor(() => access.error !== null), 'the stream error is kept, not thrown')
    t.equal((access.error as NodeJS.ErrnoException | null)?.code, code)

    // The proxy is still there, and lines after the error are counted as dropped.
    for (let i = 0; i < 3; i++) t.equal((await get(`${url}/after${i}`)).body.toString(), 'hello')
    t.ok(await waitFor(() => access.dropped + access.written === 4), 'every request either written or counted as dropped')
    t.ok(access.dropped >= 3, `later lines dropped (${access.dropped})`)
  })
}
