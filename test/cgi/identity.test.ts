/**
 * A CGI route whose pipe spawn has `user`/`group` runs every script under that identity: the
 * adapter starts processes only through the spawn's ProcessStarter, so nothing bypasses the
 * spawn layer's identity switch (uid/gid, no supplementary groups, SAFE_PATH, umask). [ROOT]
 */
import t from 'tap'
import { chmodSync, chownSync, writeFileSync } from 'node:fs'
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

t.test('each script passes the suEXEC checks at request time: 403 with the check\'s code', async (t) => {
  if (process.getuid?.() !== 0) { t.plan(0, 'needs root'); return }
  guardLeaks(t)
  const dir = tempDir(t)
  chmodSync(dir, 0o755)
  const cgi = join(dir, 'cgi')
  const hello = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nok\\n'\n"
  writeScripts(cgi, { 'ok.sh': hello, 'gw.sh': hello, 'noexec.sh': hello })
  chmodSync(join(cgi, 'gw.sh'), 0o775)
  chmodSync(join(cgi, 'noexec.sh'), 0o644)
  const open = join(dir, 'open')
  writeScripts(open, { 'x.sh': hello })
  chmodSync(open, 0o777)
  const theirs = join(dir, 'theirs')
  writeScripts(join(theirs, 'sub'), { 'x.sh': hello })
  chmodSync(theirs, 0o755)
  chownSync(theirs, 1, 1)
  const p = await cgiProxy(t, { cgi: { user: 'nobody', group: 'nogroup' } }, [
    { match: { prefix: '/open/' }, protocol: 'cgi', spawn: 'cgi', docroot: open, stripPrefix: true },
    { match: { prefix: '/theirs/' }, protocol: 'cgi', spawn: 'cgi', docroot: theirs, stripPrefix: true },
    { match: { prefix: '/cgi-bin/' }, protocol: 'cgi', spawn: 'cgi', docroot: cgi, stripPrefix: true },
  ])
  t.equal((await get(`${p.url}/cgi-bin/ok.sh`)).body.toString(), 'ok\n', 'a clean script runs')
  for (const [path, code] of [['/cgi-bin/gw.sh', 'ERR_SUEXEC_FILE_WRITABLE'], ['/cgi-bin/noexec.sh', 'ERR_SUEXEC_NOT_EXECUTABLE'], ['/open/x.sh', 'ERR_SUEXEC_DIR_WRITABLE'], ['/theirs/sub/x.sh', 'ERR_SUEXEC_DIR_WRITABLE']]) {
    const r = await get(p.url + path)
    t.equal(r.status, 403, `${path}: 403`)
    t.match(r.body.toString(), code, `${path}: ${code}`)
  }
  // A directory above the script owned by another user (uid 1, daemon): not writable by group or
  // others, yet its owner can swap what is below it. The log line says what was found, not "writable".
  const line = p.lines.find((l) => l.obj.code === 'ERR_SUEXEC_DIR_WRITABLE' && l.msg.includes(theirs))
  t.match(line?.msg, /^A directory of the program can be changed by another user .*: directory above the program is owned by uid 1, not 65534 or root$/, `the log line: ${line?.msg}`)
})
