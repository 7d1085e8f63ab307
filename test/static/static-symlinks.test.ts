/**
 * Symlinks under a static route, for shared hosting (one user per site): by default (`symlinks:
 * owner`, Apache SymLinksIfOwnerMatch / nginx disable_symlinks if_not_owner) a link is followed
 * only when it and its target have the same owner; in every mode the target stays inside the
 * docroot, and a link never hands out a dot file. Real users (CI runs as root).
 */
import t from 'tap'
import { chownSync, lchownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { withTestUsers } from '../helpers/users.js'

guardLeaks(t)

const SITE = { name: 'pcstsite', id: 2131 }
const OTHER = { name: 'pcstother', id: 2132 }

const codeOf = (body: Buffer): string => String(body).split('\n')[1] ?? ''

t.test('symlink policies', async (t) => {
  if (!withTestUsers(t, 'the symlink owner rule', [SITE, OTHER])) return
  const top = mkdtempSync(join(tmpdir(), 'pc-static-links-'))
  t.teardown(() => rmSync(top, { recursive: true, force: true }))
  const root = join(top, 'www')
  mkdirSync(join(root, 'assets'), { recursive: true })
  const own = (path: string, who: { id: number }): void => chownSync(path, who.id, who.id)
  const link = (target: string, path: string, who: { id: number }): void => { symlinkSync(target, path); lchownSync(path, who.id, who.id) }

  own(root, SITE)
  own(join(root, 'assets'), SITE)
  writeFileSync(join(root, 'assets', 'logo.svg'), '<svg/>')
  own(join(root, 'assets', 'logo.svg'), SITE)
  writeFileSync(join(root, 'other.css'), 'other user')
  own(join(root, 'other.css'), OTHER)
  writeFileSync(join(root, '.env'), 'DB_PASSWORD=secret')
  own(join(root, '.env'), SITE)
  writeFileSync(join(top, 'outside.txt'), 'OUTSIDE')
  own(join(top, 'outside.txt'), SITE)
  link('assets/logo.svg', join(root, 'same.svg'), SITE) // same owner
  link('other.css', join(root, 'foreign.css'), SITE) // target owned by another user
  link(join(top, 'outside.txt'), join(root, 'out.txt'), SITE) // leaves the docroot
  link('.env', join(root, 'env.txt'), SITE) // a public name for a dot file
  link('assets', join(root, 'dirlink'), SITE) // a directory link, same owner

  const serve = async (symlinks?: 'follow' | 'owner' | 'deny') => (await proxyServer(t, {
    routes: [{ protocol: 'static', docroot: root, ...(symlinks !== undefined ? { symlinks } : {}) }],
  })).url

  const byDefault = await serve()
  t.equal((await get(`${byDefault}/same.svg`)).status, 200, 'owner (default): same owner followed')
  t.equal((await get(`${byDefault}/dirlink/logo.svg`)).status, 200, 'owner: a directory link of the same owner')
  const foreign = await get(`${byDefault}/foreign.css`)
  t.equal(foreign.status, 403, 'owner: a link to another user\'s file is refused')
  t.equal(codeOf(foreign.body), 'ERR_SCRIPT_FORBIDDEN')
  t.not(String(foreign.body), 'other user')
  const out = await get(`${byDefault}/out.txt`)
  t.equal(out.status, 403, 'owner: out of the docroot')
  t.notMatch(String(out.body), /OUTSIDE/)
  const env = await get(`${byDefault}/env.txt`)
  t.equal(env.status, 404, 'a link to a dot file')
  t.equal(codeOf(env.body), 'ERR_STATIC_HIDDEN')

  const follow = await serve('follow')
  t.equal((await get(`${follow}/foreign.css`)).status, 200, 'follow: any owner')
  t.equal((await get(`${follow}/out.txt`)).status, 403, 'follow: still never out of the docroot')
  t.equal((await get(`${follow}/env.txt`)).status, 404, 'follow: still no dot file')

  const deny = await serve('deny')
  t.equal((await get(`${deny}/same.svg`)).status, 403, 'deny: no link followed')
  t.equal((await get(`${deny}/dirlink/logo.svg`)).status, 403, 'deny: not a directory link either')
  t.equal((await get(`${deny}/assets/logo.svg`)).status, 200, 'deny: plain files served')
})
