/**
 * Test users for identity tests. CI runs as root, so they are created for real there; anywhere else
 * the test is skipped with the reason, and under CI=true a missing root is a failure, not a skip.
 */
import { execFileSync } from 'node:child_process'
import type { Test } from 'tap'

export interface TestUser { readonly name: string, readonly id: number }

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
