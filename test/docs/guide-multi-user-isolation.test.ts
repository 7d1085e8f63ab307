/**
 * docs/guides/multi-user.md, step by step: "every tenant's tree is 0700 and its own: the other
 * tenant cannot read it; proxycore, as root, can". Since proxycore resolves a site's script paths
 * as root, a site user must not be able to use it to look into the other site's 0700 tree. With
 * symlinks of her own (any `symlinks` mode but deny), alice asks for a name in bob's tree that
 * exists and for one that does not: both must get the same answer, as from nginx or Apache, which
 * run as an unprivileged user and cannot stat there (EACCES: 403 for both). The contents are never
 * served (checked too).
 *
 * The answers differed before (403 ERR_SCRIPT_FORBIDDEN for an existing name, 404
 * ERR_SCRIPT_NOT_FOUND for a missing one: the walk in src/core/cgi/script.ts stat'ed the link's
 * target as root before the docroot check); now a link is followed hop by hop and refused as soon
 * as a hop's directory lies outside the docroot (linkTarget). Checked: a file link in both modes,
 * a directory link (with `owner` it is refused as it is met either way).
 * [ROOT: two test users with free ids are created and deleted here]
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, lchownSync, mkdirSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { tempDir } from '../fastcgi/helpers/peers.js'
import { idFree, ownedFile, withTestUsers, type TestUser } from '../helpers/users.js'

type Config = Parameters<typeof proxyServer>[1]

function twoUsers (): TestUser[] {
  const out: TestUser[] = []
  for (let id = 25000 + (process.pid % 20000); out.length < 2 && id < 65000; id++) {
    if (![2001, 2002, 2005, 2011, 2041].includes(id) && idFree(id)) out.push({ name: `pcmo${id}`, id })
  }
  return out
}

for (const symlinks of ['owner', 'follow'] as const) {
  t.test(`symlinks: ${symlinks}: alice cannot tell which names exist in bob's 0700 tree`, async (t) => {
    guardLeaks(t, { timeoutMs: 10_000 })
    const users = twoUsers()
    if (!withTestUsers(t, 'site isolation', users)) return
    const [A, B] = users
    const base = tempDir(t, 'pc-mu-iso-')
    chmodSync(base, 0o755)
    const dir = (path: string, uid: number, mode: number): string => { mkdirSync(path); chownSync(path, uid, uid); chmodSync(path, mode); return path }
    const site = dir(join(base, 'alice'), A.id, 0o755)
    const bob = dir(join(base, 'bob'), B.id, 0o700)
    ownedFile(join(bob, 'secret.cgi'), '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nBOB-SECRET\\n"\n', B.id, 0o700)
    // What alice can make herself (she owns her docroot): links into bob's tree.
    const link = (target: string, name: string): void => { symlinkSync(target, join(site, name)); lchownSync(join(site, name), A.id, A.id) }
    link(join(bob, 'secret.cgi'), 'there.cgi')
    link(join(bob, 'nothing.cgi'), 'absent.cgi')
    link(bob, 'bobdir')
    t.throws(() => execFileSync('setpriv', [`--reuid=${A.id}`, `--regid=${A.id}`, '--clear-groups', 'stat', join(bob, 'secret.cgi')], { stdio: 'ignore' }), 'alice herself cannot stat in bob\'s tree')
    const { url } = await proxyServer(t, {
      spawns: { cgi: { socketType: 'pipe', user: A.name, group: A.name, stopTimeout: '2s' } },
      routes: [{ match: { prefix: '/cgi/' }, protocol: 'cgi', spawn: 'cgi', docroot: site, stripPrefix: true, scriptExtensions: ['.cgi'], symlinks }],
    } as unknown as Config)
    const answer = async (path: string): Promise<string> => {
      const r = await get(url + path)
      t.notMatch(r.body.toString(), /BOB-SECRET/, `${path}: bob's script is never run or sent`)
      return `${r.status} ${/ERR_[A-Z_]+/.exec(r.body.toString())?.[0] ?? ''}`
    }
    const there = await answer('/cgi/there.cgi')
    const absent = await answer('/cgi/absent.cgi')
    t.not(there.split(' ')[0], '200', `a link to bob's existing script is refused (${there})`)
    t.equal(absent, there, `a link to an existing and to a missing name in bob's tree: the same answer (missing: ${absent})`)
    const viaDirThere = await answer('/cgi/bobdir/secret.cgi')
    const viaDirAbsent = await answer('/cgi/bobdir/nothing.cgi')
    t.not(viaDirThere.split(' ')[0], '200', `through a linked directory: refused (${viaDirThere})`)
    // owner: the directory link is refused as it is met (bob owns its target), whatever lies below.
    t.equal(viaDirAbsent, viaDirThere, `through a linked directory: the same answer for an existing and a missing name (missing: ${viaDirAbsent})`)
  })
}
