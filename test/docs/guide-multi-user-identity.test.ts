/**
 * docs/guides/multi-user.md, "Checks at start()": `ERR_IDENTITY_UNKNOWN_USER` /
 * `ERR_IDENTITY_UNKNOWN_GROUP` when there is no passwd / group entry (getent). A user or group
 * name that getent(1) would take as one of its own options (`--version`, `--help`, `-i`,
 * `--service=files`) names no entry either (useradd and groupadd refuse names that start with a
 * dash): it must be refused with that code, before anything starts. Before the fix the name went
 * to getent as an option: `--version` and `--help` gave an identity whose uid/gid was NaN (no
 * check refused it), `-i` and `--service=files` listed the whole database, whose first line (root)
 * gave ERR_IDENTITY_UID_ZERO for a user that does not exist.
 * [ROOT: one test user with a free id is created and deleted here]
 */
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { idFree, withTestUsers, type TestUser } from '../helpers/users.js'
import { SpawnManager } from '../../src/spawn/manager.js'
import type { SpawnSpec } from '../../src/spawn/types.js'

function freeUser (): TestUser {
  let id = 20000 + (process.pid % 20000)
  while (!idFree(id) || [2001, 2002, 2005, 2011, 2041].includes(id)) id++
  return { name: `pcmi${id}`, id }
}

const OPTIONS = ['--version', '--help', '--usage', '-V', '-i', '--no-idn', '--service=files', '-sfiles']

t.test('a user or group name that looks like a getent option is an unknown user or group', async (t) => {
  guardLeaks(t)
  const U = freeUser()
  if (!withTestUsers(t, 'identity names', [U])) return
  const refused = async (spec: SpawnSpec): Promise<unknown> => {
    const m = new SpawnManager()
    // /bin/true is root-owned in a root-owned directory: the program checks pass, only the identity matters.
    m.add('x', { binPath: '/bin/true', socketName: '127.0.0.1:0', minProcs: 0, ...spec })
    try {
      await m.start()
      return 'started'
    } catch (err) {
      return (err as { code?: unknown }).code
    } finally {
      t.same(m.status()[0].processes.filter((p) => p.pid !== null), [], 'nothing spawned')
      await m.close()
    }
  }
  for (const name of OPTIONS) {
    const user = await refused({ user: name, group: U.name })
    t.equal(user, 'ERR_IDENTITY_UNKNOWN_USER', `user ${name}: ERR_IDENTITY_UNKNOWN_USER (got ${String(user)})`)
    const group = await refused({ user: U.name, group: name })
    t.equal(group, 'ERR_IDENTITY_UNKNOWN_GROUP', `group ${name}: ERR_IDENTITY_UNKNOWN_GROUP (got ${String(group)})`)
  }
  t.equal(await refused({ user: U.name, group: U.name }), 'started', 'the real user and group pass (so the refusals above are the names)')
})
