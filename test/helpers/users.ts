/**
 * Test users for identity tests. CI runs as root, so they are created for real there; anywhere else
 * the test is skipped with the reason, and under CI=true a missing root is a failure, not a skip.
 */
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, linkSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Test } from 'tap'

export interface TestUser { readonly name: string, readonly id: number }

/** No user and no group has `id` (test users take the same id for both). */
export function idFree (id: number): boolean {
  for (const db of ['passwd', 'group']) {
    try { execFileSync('getent', [db, String(id)], { stdio: 'ignore' }); return false } catch {}
  }
  return true
}

/**
 * Create `users` (each with a group of the same name and id, no home, no shell) and delete them at
 * the end of `t`; false, after reporting why, when the process is not root.
 */
export function withTestUsers (t: Test, what: string, users: readonly TestUser[]): boolean {
  if (process.getuid?.() !== 0) {
    if (process.env.CI === 'true') t.fail(`${what} needs root in CI`)
    else t.pass('needs root', { skip: 'needs root to create users and switch to them' })
    return false
  }
  for (const u of users) {
    execFileSync('sh', ['-c', `getent passwd ${u.name} >/dev/null || useradd -M -N -u ${u.id} -s /usr/sbin/nologin ${u.name}; getent group ${u.name} >/dev/null || groupadd -g ${u.id} ${u.name}`])
  }
  t.teardown(() => {
    for (const u of users) execFileSync('sh', ['-c', `userdel ${u.name} 2>/dev/null; groupdel ${u.name} 2>/dev/null; true`])
  })
  return true
}

/** A file with exactly this owner (gid defaults to uid) and mode, whatever the umask. */
export function ownedFile (path: string, body: string | Buffer, uid: number, mode: number, gid = uid): void {
  writeFileSync(path, body)
  chownSync(path, uid, gid)
  chmodSync(path, mode)
}

/** A directory (made with its parents when missing) with exactly this owner (group the same id) and mode; returns `path`. */
export function ownedDir (path: string, uid: number, mode = 0o755): string {
  mkdirSync(path, { recursive: true })
  chownSync(path, uid, uid)
  chmodSync(path, mode)
  return path
}

/**
 * Secrets outside a site's directory, hard-linked into it as `shadow.txt`, `private.txt` and
 * `public.txt`: a root-only file (as /etc/shadow: ROOT-SECRET, mode `rootMode`), another user's
 * 0600 file (OTHER-SECRET) and 0644 file (OTHER-PUBLIC). A hard link is no symlink: no symlink
 * rule sees it. With fs.protected_hardlinks=1 the site user could not make these links; root can,
 * and a host with it off, or a link made before the file's owner or mode changed, leaves the same.
 */
export function plantHardLinks (outside: string, into: string, other: number, rootMode = 0o600): void {
  ownedFile(join(outside, 'shadow'), 'ROOT-SECRET', 0, rootMode)
  ownedFile(join(outside, 'other-private'), 'OTHER-SECRET', other, 0o600)
  ownedFile(join(outside, 'other-public'), 'OTHER-PUBLIC', other, 0o644)
  linkSync(join(outside, 'shadow'), join(into, 'shadow.txt'))
  linkSync(join(outside, 'other-private'), join(into, 'private.txt'))
  linkSync(join(outside, 'other-public'), join(into, 'public.txt'))
}
