/**
 * A CGI route whose pipe spawn has `user`/`group` runs every script under that identity: the
 * adapter starts processes only through the spawn's ProcessStarter, so nothing bypasses the
 * spawn layer's identity switch (uid/gid, no supplementary groups, SAFE_PATH, umask). [ROOT]
 */
import t from 'tap'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { get } from '../helpers/servers.js'
import { guardLeaks } from '../helpers/leaks.js'
import { cgiProxy, tempDir, writeScripts } from './harness.js'

t.test('scripts run as the spawn\'s user and group', async (t) => {
  if (process.getuid?.() !== 0) { t.plan(0, 'needs root'); return }
  guardLeaks(t)
  const dir = tempDir(t)
  chmodSync(dir, 0o755)
  const cgi = join(dir, 'cgi')
  writeScripts(cgi, {
    'id.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nprintf '%s %s %s %s\\n' \"$(id -u)\" \"$(id -g)\" \"$(id -G)\" \"$(umask)\"\ncat ../secret 2>/dev/null || echo denied\n"
  })
  const secret = join(dir, 'secret')
  writeFileSync(secret, 'root only\n')
  chmodSync(secret, 0o600)
  const p = await cgiProxy(t, { cgi: { user: 'nobody', group: 'nogroup' } }, [
    { match: { prefix: '/cgi-bin/' }, protocol: 'cgi', spawn: 'cgi', docroot: cgi, stripPrefix: true }
  ])
  const r = await get(`${p.url}/cgi-bin/id.sh`)
  t.equal(r.status, 200)
  t.equal(r.body.toString(), '65534 65534 65534 0022\ndenied\n', 'uid/gid switched, no supplementary groups, umask 022, root-only file unreadable')
})
