/**
 * Symlink policies (`symlinks: follow | owner | deny`) met as chains of links, on the three kinds of
 * route that resolve a file under a docroot: a CGI route (sh scripts), a FastCGI route (real
 * php-cgi) and a static route. Audit G:
 * - `owner` compared only the FIRST link of a chain with the final file: site → other user's link →
 *   site's file passed, so a link another user owns (and may re-point) took part in the resolution.
 *   Every link of the chain must belong to the owner of the file it ends at.
 * - nor a link in the target's directory part (`x → dB/t.php`, `dB` another user's link to the
 *   site's directory): the hop's directory was found with realpath(3), which followed `dB` unseen.
 * - a link to the docroot itself (`self → ../www`, or its absolute path) was refused as leading
 *   outside, though all it names is the docroot (nginx and Apache follow it).
 * Also pinned (sound before): the docroot itself a symlink (trusted in every mode, `deny` too), a
 * chain that leaves the docroot lexically and comes back, a hop through a link outside (403), a
 * loop and a chain over the kernel's 40 links (403 ERR_SCRIPT_FORBIDDEN, no hang), a dangling link
 * (404 ERR_SCRIPT_NOT_FOUND). Real users (CI runs as root): skipped with the reason elsewhere.
 */
import t from 'tap'
import { chmodSync, lchownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { ownedFile, withTestUsers } from '../helpers/users.js'
import { cgiProxy } from '../cgi/harness.js'
import { PHP_CGI, havePeer, startPhpCgi } from '../fastcgi/helpers/peers.js'

const SITE = { name: 'pcslchsite', id: 2157 }
const OTHER = { name: 'pcslchother', id: 2158 }

const codeOf = (body: Buffer): string => String(body).split('\n')[1] ?? ''

/** The three route kinds, each with its file extension and the body its target file answers. */
const KINDS = [
  { kind: 'cgi', ext: 'sh', body: 'SH-RAN' },
  { kind: 'php', ext: 'php', body: 'PHP-RAN' },
  { kind: 'static', ext: 'txt', body: 'STATIC-FILE' },
] as const

function layout (top: string): { root: string, rootLink: string } {
  chmodSync(top, 0o755)
  const root = join(top, 'www')
  const link = (target: string, path: string, who: { id: number }): void => { symlinkSync(target, join(root, path)); lchownSync(join(root, path), who.id, who.id) }
  mkdirSync(join(root, 'sub'), { recursive: true })
  mkdirSync(join(top, 'out'))
  for (const d of [root, join(root, 'sub')]) { lchownSync(d, SITE.id, SITE.id); chmodSync(d, 0o755) }
  for (const { ext, body } of KINDS) {
    const text = ext === 'sh' ? `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n${body}'\n` : ext === 'php' ? `<?php echo '${body}';\n` : body
    ownedFile(join(root, `t.${ext}`), text, SITE.id, 0o755)
    ownedFile(join(root, 'sub', `t.${ext}`), text, SITE.id, 0o755)
    link(`ok2.${ext}`, `ok1.${ext}`, SITE); link(`t.${ext}`, `ok2.${ext}`, SITE) // site → site → site
    link(`a2.${ext}`, `a1.${ext}`, SITE); link(`t.${ext}`, `a2.${ext}`, OTHER) // site → OTHER → site
    link(`b2.${ext}`, `b1.${ext}`, OTHER); link(`t.${ext}`, `b2.${ext}`, SITE) // OTHER → site → site
    link(`../www/t.${ext}`, `back.${ext}`, SITE) // leaves the docroot by name only, comes back
    link(`../out/hop.${ext}`, `out.${ext}`, SITE) // a hop through a link outside the docroot
    symlinkSync(join(root, `t.${ext}`), join(top, 'out', `hop.${ext}`))
    link(`loop2.${ext}`, `loop1.${ext}`, SITE); link(`loop1.${ext}`, `loop2.${ext}`, SITE)
    link(`none.${ext}`, `dang.${ext}`, SITE)
    link(`dB/t.${ext}`, `viaB.${ext}`, SITE) // site's link whose target goes through OTHER's dir link
    link(`dD/t.${ext}`, `viaD.${ext}`, SITE) // the same through the site's own dir link
    for (let i = 0; i < 41; i++) link(i === 40 ? `t.${ext}` : `long${i + 1}.${ext}`, `long${i}.${ext}`, SITE) // 41 links
  }
  link('dB', 'dA', SITE); link('sub', 'dB', OTHER) // directory chain: site → OTHER → site's dir
  link('dD', 'dC', SITE); link('sub', 'dD', SITE) // directory chain, one owner
  link('../www', 'self', SITE) // the docroot itself, by a relative path that leaves it
  link(root, 'selfabs', SITE) // the docroot itself, by its absolute path
  const rootLink = join(top, 'wwwlink')
  symlinkSync(root, rootLink) // the docroot configured through a symlink
  return { root, rootLink }
}

t.test('symlink chains under follow, owner and deny', async (t) => {
  if (!withTestUsers(t, 'symlink chain owners', [SITE, OTHER])) return
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const top = mkdtempSync(join(tmpdir(), 'pc-slchain-'))
  t.teardown(() => rmSync(top, { recursive: true, force: true }))
  const { root, rootLink } = layout(top)
  const peerDir = mkdtempSync(join(tmpdir(), 'pc-slchain-php-'))
  t.teardown(() => rmSync(peerDir, { recursive: true, force: true }))
  const php = await startPhpCgi(t, peerDir, 1)

  for (const symlinks of ['follow', 'owner', 'deny'] as const) {
    const routes = (docroot: string, pre: string) => [
      { match: { prefix: `/${pre}cgi/` }, stripPrefix: true, protocol: 'cgi' as const, spawn: 'sh', docroot, symlinks },
      { match: { prefix: `/${pre}php/` }, stripPrefix: true, protocol: 'fastcgi' as const, backends: [`unix:${php.socketPath}`], docroot, symlinks },
      { match: { prefix: `/${pre}static/` }, stripPrefix: true, protocol: 'static' as const, docroot, symlinks },
    ]
    const { url } = await cgiProxy(t, { sh: {} }, [...routes(root, ''), ...routes(rootLink, 'l')])
    for (const { kind, ext, body } of KINDS) {
      const expect = async (path: string, status: number, code: string | null, what: string): Promise<void> => {
        const r = await get(`${url}/${path.startsWith('l/') ? 'l' + kind + path.slice(1) : kind + path}`)
        const text = String(r.body)
        const label = `${symlinks} ${kind} ${path.replace('X', ext)}: ${what}`
        t.equal(r.status, status, label)
        if (status === 200) t.equal(text, body, `${label} (the file's body)`)
        else { t.not(text, body, `${label} (not served)`); if (code !== null) t.equal(codeOf(r.body), code, `${label} (code)`) }
      }
      const followed = symlinks === 'deny' ? 403 : 200
      const byOwner = symlinks === 'follow' ? 200 : 403
      const F = 'ERR_SCRIPT_FORBIDDEN'
      await expect(`/t.${ext}`, 200, null, 'no link')
      await expect(`/ok1.${ext}`, followed, F, 'a chain of one owner')
      await expect(`/a1.${ext}`, byOwner, F, 'the second link is another user\'s')
      await expect(`/b1.${ext}`, byOwner, F, 'the first link is another user\'s')
      await expect(`/dA/t.${ext}`, byOwner, F, 'a directory chain through another user\'s link')
      await expect(`/dC/t.${ext}`, followed, F, 'a directory chain of one owner')
      await expect(`/viaB.${ext}`, byOwner, F, 'a link whose target goes through another user\'s directory link')
      await expect(`/viaD.${ext}`, followed, F, 'a link whose target goes through a directory link of one owner')
      await expect(`/self/t.${ext}`, followed, F, 'a link to the docroot (relative)')
      await expect(`/selfabs/sub/t.${ext}`, followed, F, 'a link to the docroot (absolute)')
      await expect(`/back.${ext}`, followed, F, 'a link out by name and back')
      await expect(`/out.${ext}`, 403, F, 'a hop through a link outside')
      await expect(`/loop1.${ext}`, 403, F, 'a loop')
      await expect(`/long0.${ext}`, 403, F, 'over 40 links')
      // php-cgi itself gives up after 32 links (its realpath cache): 40 only where the kernel opens it.
      if (kind !== 'php') await expect(`/long1.${ext}`, followed, F, '40 links')
      await expect(`/dang.${ext}`, symlinks === 'deny' ? 403 : 404, symlinks === 'deny' ? F : 'ERR_SCRIPT_NOT_FOUND', 'a dangling link')
      // The docroot configured through a symlink: the root is trusted in every mode.
      await expect(`l/t.${ext}`, 200, null, 'docroot a symlink, no link below')
      await expect(`l/sub/t.${ext}`, 200, null, 'docroot a symlink, a directory below')
      await expect(`l/ok1.${ext}`, followed, F, 'docroot a symlink, a chain of one owner')
      await expect(`l/a1.${ext}`, byOwner, F, 'docroot a symlink, the second link another user\'s')
    }
  }
})
