/**
 * The script cache (src/core/route.ts) keeps a resolution for a second; a hit is trusted only
 * while the script's path still leads to the very file the walk checked, unchanged (device, inode,
 * change time). Before, a script swapped for a symlink to a file outside the docroot ran for up to
 * that second on a `symlinks: deny` route (audit: `OUTSIDE-RAN`), where the walk gives 403.
 */
import t from 'tap'
import { lchownSync, mkdirSync, renameSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { cgiProxy, tempDir, writeScripts } from './harness.js'

for (const symlinks of ['deny', 'follow'] as const) {
  t.test(`symlinks: ${symlinks}: a cached script swapped for a symlink leading out is walked again and refused`, async (t) => {
    guardLeaks(t)
    const dir = tempDir(t)
    writeScripts(dir, {
      'www/page.sh': '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\ninside"\n',
      'outside/evil.sh': '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nOUTSIDE-RAN"\n',
    })
    const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: join(dir, 'www'), symlinks, match: { prefix: '/' } }])
    const first = await get(`${p.url}/page.sh`)
    t.same([first.status, first.body.toString()], [200, 'inside'], 'resolved and cached')
    // Swapped in one rename, within the cache's second.
    symlinkSync(join(dir, 'outside/evil.sh'), join(dir, 'www/page.sh.new'))
    renameSync(join(dir, 'www/page.sh.new'), join(dir, 'www/page.sh'))
    const second = await get(`${p.url}/page.sh`)
    t.not(second.body.toString(), 'OUTSIDE-RAN', 'the target outside the docroot never runs')
    t.equal(second.status, 403, 'the walk refuses it, as without a cache')
  })
}

// Under `owner` every link of a chain must have the script's owner (src/core/cgi/script.ts). A hit
// checks only where the chain ends: a middle link swapped for another user's link to the same
// file kept the same realpath, and the cache ran the script for up to its second (audit G).
t.test('symlinks: owner: a chain link swapped for another user\'s link to the same script is refused at once', { skip: process.getuid?.() === 0 ? false : 'chown needs root' }, async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, { 'www/t.sh': '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nRAN"\n' })
  symlinkSync('t.sh', join(dir, 'www/ok2.sh'))
  symlinkSync('ok2.sh', join(dir, 'www/ok1.sh'))
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: join(dir, 'www'), symlinks: 'owner', match: { prefix: '/' } }])
  const first = await get(`${p.url}/ok1.sh`)
  t.same([first.status, first.body.toString()], [200, 'RAN'], 'a chain of one owner runs')
  // The middle link, now owned by another uid (no user needed: lchown takes any id), same target.
  symlinkSync('t.sh', join(dir, 'www/ok2.new'))
  lchownSync(join(dir, 'www/ok2.new'), 4321, 4321)
  renameSync(join(dir, 'www/ok2.new'), join(dir, 'www/ok2.sh'))
  t.equal((await get(`${p.url}/ok2.sh`)).status, 403, 'the other user\'s link itself is refused')
  const second = await get(`${p.url}/ok1.sh`)
  t.equal(second.status, 403, 'the chain through it is refused too, within the cache\'s second')
  t.not(second.body.toString(), 'RAN')
})

// A directory above the script swapped for a link: to a directory holding another file of the
// same name, the hit sees another file (its inode) and the walk refuses it at once; to the same
// directory moved out, the file the walk approved, unchanged, may run for the rest of the entry's
// second (documented: a stat(2) per hit cannot see the path, only the file), never longer.
t.test('symlinks: deny: a directory above a cached script swapped for a link is refused', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, {
    'www/sub/page.sh': '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\ninside"\n',
    'www/moved/page.sh': '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nmoved"\n',
    'outside/sub/page.sh': '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nOUTSIDE-RAN"\n',
  })
  mkdirSync(join(dir, 'away'))
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: join(dir, 'www'), symlinks: 'deny', match: { prefix: '/' } }])
  t.same(await body(`${p.url}/sub/page.sh`), [200, 'inside'], 'resolved and cached')
  renameSync(join(dir, 'www/sub'), join(dir, 'away/sub'))
  symlinkSync(join(dir, 'outside/sub'), join(dir, 'www/sub'))
  t.same(await body(`${p.url}/sub/page.sh`), [403, 'forbidden'], 'another file behind the link: refused at once, never run')

  t.same(await body(`${p.url}/moved/page.sh`), [200, 'moved'], 'resolved and cached')
  renameSync(join(dir, 'www/moved'), join(dir, 'away/moved'))
  symlinkSync(join(dir, 'away/moved'), join(dir, 'www/moved'))
  const [status, text] = await body(`${p.url}/moved/page.sh`)
  t.ok((status === 200 && text === 'moved') || status === 403, `the same approved file, or refused: ${status} ${text}`)
  t.ok(await waitFor(async () => (await get(`${p.url}/moved/page.sh`)).status === 403, 10_000, 50), 'refused once the entry\'s second is over')
})

async function body (url: string): Promise<[number, string]> {
  const r = await get(url)
  return [r.status, r.status === 403 ? 'forbidden' : r.body.toString()]
}
