/**
 * X-Sendfile and hard links: the file a backend names must be one the owner of its allowed root
 * could read itself (the static adapter's docroot-owner rule, readableByOwner). A hard link is no
 * symlink: its real path is inside the root, so the root check passes, and a proxy running as root
 * can open anything. Before the rule, a hard link inside an allowed root to a root-only file (as
 * /etc/shadow) or to another site's 0600 file was sent: 200 with its bytes.
 *
 * A real backend (a shell CGI script answering `X-Sendfile: <its request header X-File>`), real
 * users (created here, deleted at the end: CI runs as root; skipped elsewhere), real files.
 */
import t from 'tap'
import { chownSync, linkSync, mkdirSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import { openSendfile } from '../../src/core/sendfile.js'
import { ProxyError } from '../../src/core/errors.js'
import { cgiProxy, tempDir, writeScripts } from '../cgi/harness.js'
import { guardLeaks } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { ownedFile, plantHardLinks, withTestUsers } from '../helpers/users.js'

guardLeaks(t, { timeoutMs: 10_000 })

const SITE = { name: 'pcsfhlsite', id: 2161 }
const OTHER = { name: 'pcsfhlother', id: 2162 }

const SEND = '#!/bin/sh\nprintf "Content-Type: application/octet-stream\\nX-Sendfile: %s\\n\\n" "$HTTP_X_FILE"\nprintf "BACKEND-BODY"\n'

const file = ownedFile

t.test('a hard link inside an allowed root to a file its owner cannot read is not sent', async (t) => {
  if (!withTestUsers(t, 'the allowed-root owner rule', [SITE, OTHER])) return
  const top = realpathSync(tempDir(t, 'pc-sendfile-hl-'))
  const www = join(top, 'www')
  const site = join(top, 'site') // an allowed root owned by the site user
  const pub = join(top, 'pub') // an allowed root owned by root: the rule is off there
  for (const d of [www, site, pub]) mkdirSync(d)
  chownSync(site, SITE.id, SITE.id)
  writeScripts(www, { 'send.sh': SEND })

  // Outside every root: a root-only file (as /etc/shadow), another site's private and public files.
  plantHardLinks(top, site, OTHER.id)
  linkSync(join(top, 'shadow'), join(pub, 'shadow.txt'))
  file(join(site, 'mine.txt'), 'MINE', SITE.id, 0o600)
  file(join(site, 'locked.txt'), 'LOCKED', OTHER.id, 0o000)
  file(join(site, 'group.txt'), 'GROUP', OTHER.id, 0o640, SITE.id)
  file(join(site, 'rootpub.txt'), 'ROOT-PUBLIC', 0, 0o644)

  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: www, match: { prefix: '/' }, xSendfile: { allow: [site, pub] } }])
  const send = async (path: string, method = 'GET'): ReturnType<typeof get> => await get(`${p.url}/send.sh`, { method, headers: { 'X-File': path } })

  for (const name of ['shadow.txt', 'private.txt', 'locked.txt']) {
    for (const method of ['GET', 'HEAD']) {
      const r = await send(join(site, name), method)
      t.equal(r.status, 502, `${method} ${name}: unreadable by the root's owner: 502`)
      if (method === 'GET') t.match(r.body.toString(), /ERR_SENDFILE_FORBIDDEN/)
      t.notMatch(r.body.toString(), /SECRET|LOCKED|BACKEND-BODY/, 'not a byte of the file (nor the backend\'s body)')
      t.notOk(r.headers['x-sendfile'], 'X-Sendfile not forwarded')
    }
  }
  t.ok(p.lines.some((l) => JSON.stringify(l).includes('not readable by the owner of its allowed root')), 'the log says why')

  for (const [name, body] of [['mine.txt', 'MINE'], ['public.txt', 'OTHER-PUBLIC'], ['group.txt', 'GROUP'], ['rootpub.txt', 'ROOT-PUBLIC']]) {
    const r = await send(join(site, name))
    t.equal(r.status, 200, `${name}: readable by the root's owner: 200`)
    t.equal(r.body.toString(), body)
    t.equal(r.headers['content-length'], String(body.length))
  }

  const open = await send(join(pub, 'shadow.txt'))
  t.equal(open.status, 200, 'a root-owned allowed root: the rule is off (the operator owns the files)')
  t.equal(open.body.toString(), 'ROOT-SECRET')
})

t.test('nested allowed roots: every root the file lies in, but a root-owned one, must let its owner read it', async (t) => {
  if (!withTestUsers(t, 'the allowed-root owner rule', [SITE])) return
  const top = realpathSync(tempDir(t, 'pc-sendfile-hl-'))
  const site = join(top, 'site')
  mkdirSync(site)
  chownSync(site, SITE.id, SITE.id)
  file(join(top, 'shadow'), 'ROOT-SECRET', 0, 0o600)
  linkSync(join(top, 'shadow'), join(site, 'shadow.txt'))
  file(join(site, 'mine.txt'), 'MINE', SITE.id, 0o600)
  const refusal = async (roots: string[]): Promise<string> => {
    try {
      const f = await openSendfile(join(site, 'shadow.txt'), roots, [])
      f.stream.destroy()
      return 'SERVED'
    } catch (err) {
      return err instanceof ProxyError ? err.code : String(err)
    }
  }
  // `top` is root's (mkdtemp as root): it alone would turn the rule off; the site's own root,
  // listed too, still speaks for the site, in either order.
  t.equal(await refusal([top, site]), 'ERR_SENDFILE_FORBIDDEN')
  t.equal(await refusal([site, top]), 'ERR_SENDFILE_FORBIDDEN')
  t.equal(await refusal([top]), 'SERVED', 'only the root-owned root: served')
  const mine = await openSendfile(join(site, 'mine.txt'), [top, site], [])
  t.equal(mine.size, 4, 'the site\'s own file, through both roots')
  mine.stream.destroy()
})
