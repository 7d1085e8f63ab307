/**
 * A precompressed sibling that is a symlink follows the route's `symlinks` policy, as the file
 * itself does (nginx's gzip_static opens `app.js.gz` under the same disable_symlinks rules as
 * `app.js`). Before: a symlinked sibling was passed over in every mode (the adapter did not see the
 * route's policy), so `follow` and `owner` sites whose `.gz` files are links got the plain file.
 * Still passed over, in every mode: a link leading out of the docroot, to a dot file, to a
 * directory, dangling; under `owner`, a link to another user's file; under `deny`, any link.
 *
 * The policy reaches the adapter as ScriptInfo.symlinks, set by the core's script walk. Real
 * static adapter, real core walk, real files, real users (CI runs as root).
 */
import t, { type Test } from 'tap'
import { lchownSync, mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync, gzipSync } from 'node:zlib'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer, type Got } from '../helpers/servers.js'
import { ownedFile, withTestUsers } from '../helpers/users.js'

guardLeaks(t, { timeoutMs: 10_000 })

type Mode = 'follow' | 'owner' | 'deny'
const MODES: readonly Mode[] = ['follow', 'owner', 'deny']

const SITE = { name: 'pcprelinksite', id: 2181 }
const OTHER = { name: 'pcprelinkother', id: 2182 }

/** Each case: a file `<name>.js` (its identity body `<name>-identity`) and a sibling link `<name>.js.gz`. */
interface Case { name: string, served: readonly Mode[], what: string, marker?: string }

const CASES: readonly Case[] = [
  { name: 'same', served: ['follow', 'owner'], what: 'a link to a file of the link\'s owner inside the docroot' },
  { name: 'chain', served: ['follow', 'owner'], what: 'a link to a link to a file, all of one owner', marker: 'SAME' },
  { name: 'subdir', served: ['follow', 'owner'], what: 'a relative link into a subdirectory' },
  { name: 'other', served: ['follow'], what: 'a link to another user\'s (world-readable) file' },
  { name: 'out', served: [], what: 'a link to a file outside the docroot (same owner)' },
  { name: 'relout', served: [], what: 'a relative link up and out of the docroot' },
  { name: 'dot', served: [], what: 'a link to a dot file inside the docroot' },
  { name: 'dir', served: [], what: 'a link to a directory' },
  { name: 'dangling', served: [], what: 'a dangling link' },
]

interface Layout { top: string, root: string }

/** A root-owned docroot (the readable-by-owner rule is off) with SITE's files and links, OTHER's file. */
function layout (t: Test): Layout {
  const top = realpathSync(mkdtempSync(join(tmpdir(), 'pc-static-prelink-')))
  t.teardown(() => rmSync(top, { recursive: true, force: true }))
  const root = join(top, 'www')
  mkdirSync(root)
  mkdirSync(join(root, 'gz'))
  mkdirSync(join(root, 'adir'))
  const gz = (path: string, marker: string, uid: number): void => {
    writeFileSync(path, gzipSync(marker))
    lchownSync(path, uid, uid)
  }
  const link = (target: string, path: string, uid = SITE.id): void => { symlinkSync(target, path); lchownSync(path, uid, uid) }
  for (const c of CASES) ownedFile(join(root, `${c.name}.js`), `${c.name}-identity`, SITE.id, 0o644)
  gz(join(root, 'gz', 'same.gz'), 'SAME', SITE.id)
  link(join(root, 'gz', 'same.gz'), join(root, 'same.js.gz'))
  link(join(root, 'gz', 'same.gz'), join(root, 'gz', 'hop.gz'))
  link(join(root, 'gz', 'hop.gz'), join(root, 'chain.js.gz'))
  gz(join(root, 'gz', 'subdir.gz'), 'SUBDIR', SITE.id)
  link('gz/subdir.gz', join(root, 'subdir.js.gz'))
  gz(join(root, 'gz', 'other.gz'), 'OTHER', OTHER.id)
  link(join(root, 'gz', 'other.gz'), join(root, 'other.js.gz'))
  gz(join(top, 'outside.gz'), 'OUTSIDE', SITE.id)
  link(join(top, 'outside.gz'), join(root, 'out.js.gz'))
  link('../outside.gz', join(root, 'relout.js.gz'))
  gz(join(root, '.secret.gz'), 'SECRET', SITE.id)
  link('.secret.gz', join(root, 'dot.js.gz'))
  link('adir', join(root, 'dir.js.gz'))
  link('gz/nothing.gz', join(root, 'dangling.js.gz'))
  return { top, root }
}

function served (t: Test, r: Got, marker: string, what: string): void {
  t.equal(r.status, 200, `${what}: 200`)
  t.equal(r.headers['content-encoding'], 'gzip', `${what}: the sibling is sent`)
  t.equal(r.headers.vary, 'Accept-Encoding')
  if (r.headers['content-encoding'] === 'gzip') t.equal(gunzipSync(r.body).toString(), marker, `${what}: the link's target`)
}

function plain (t: Test, r: Got, body: string, what: string): void {
  t.equal(r.status, 200, `${what}: 200`)
  t.equal(r.headers['content-encoding'], undefined, `${what}: no Content-Encoding`)
  t.equal(r.body.toString(), body, `${what}: the file itself`)
  t.equal(r.headers.vary, 'Accept-Encoding')
}

async function serve (t: Test, root: string, mode: Mode): Promise<string> {
  const { url } = await proxyServer(t, {
    routes: [{ protocol: 'static', docroot: root, symlinks: mode, options: { precompressed: ['gzip'] } }],
  })
  return url
}

const GZ = { headers: { 'accept-encoding': 'gzip' } }

for (const mode of MODES) {
  t.test(`symlinks: ${mode}: a sibling that is a symlink is judged as the file would be`, async (t) => {
    if (!withTestUsers(t, 'the symlink owner rule', [SITE, OTHER])) return
    const { root } = layout(t)
    const url = await serve(t, root, mode)
    for (const c of CASES) {
      const r = await get(`${url}/${c.name}.js`, GZ)
      const what = `${mode}: ${c.what}`
      if (c.served.includes(mode)) served(t, r, c.marker ?? c.name.toUpperCase(), what)
      else plain(t, r, `${c.name}-identity`, what)
    }
    // A plain sibling next to them is sent in every mode.
    writeFileSync(join(root, 'plainsib.js'), 'plainsib-identity')
    writeFileSync(join(root, 'plainsib.js.gz'), gzipSync('PLAINSIB'))
    served(t, await get(`${url}/plainsib.js`, GZ), 'PLAINSIB', `${mode}: a plain sibling`)
  })
}

t.test('the file and its sibling are both links: the same policy decides for both', async (t) => {
  if (!withTestUsers(t, 'the symlink owner rule', [SITE, OTHER])) return
  const { root } = layout(t)
  mkdirSync(join(root, 'real'))
  ownedFile(join(root, 'real', 'main.js'), 'main-identity', SITE.id, 0o644)
  writeFileSync(join(root, 'real', 'main.js.gz'), gzipSync('MAIN'))
  lchownSync(join(root, 'real', 'main.js.gz'), SITE.id, SITE.id)
  const link = (target: string, path: string, uid: number): void => { symlinkSync(target, path); lchownSync(path, uid, uid) }
  link('real/main.js', join(root, 'main.js'), SITE.id)
  link('real/main.js.gz', join(root, 'main.js.gz'), SITE.id)
  // A root-owned link to SITE's files: `owner` refuses the file itself (403), and so its sibling.
  link('real/main.js', join(root, 'rootlink.js'), 0)
  link('real/main.js.gz', join(root, 'rootlink.js.gz'), 0)
  for (const mode of MODES) {
    const url = await serve(t, root, mode)
    const r = await get(`${url}/main.js`, GZ)
    if (mode === 'deny') t.equal(r.status, 403, 'deny: the file link is refused (403), its sibling never looked at')
    else served(t, r, 'MAIN', `${mode}: file and sibling both followed`)
    const rr = await get(`${url}/rootlink.js`, GZ)
    if (mode === 'follow') served(t, rr, 'MAIN', 'follow: a root-owned link pair is followed')
    else t.equal(rr.status, 403, `${mode}: a link whose owner is not its target's is refused for the file (403)`)
  }
})

t.test('owner: a sibling link of the file\'s owner to another user\'s file falls back to the file, the file of a matching link is served coded', async (t) => {
  if (!withTestUsers(t, 'the symlink owner rule', [SITE, OTHER])) return
  const { root } = layout(t)
  // The link is OTHER's, its target SITE's: owner mismatch again, from the other side.
  ownedFile(join(root, 'rev.js'), 'rev-identity', SITE.id, 0o644)
  symlinkSync('gz/same.gz', join(root, 'rev.js.gz'))
  lchownSync(join(root, 'rev.js.gz'), OTHER.id, OTHER.id)
  const url = await serve(t, root, 'owner')
  plain(t, await get(`${url}/rev.js`, GZ), 'rev-identity', 'owner: OTHER\'s link to SITE\'s .gz')
  served(t, await get(`${url}/same.js`, GZ), 'SAME', 'owner: SITE\'s link to SITE\'s .gz')
})
