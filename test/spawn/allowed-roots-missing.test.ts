/**
 * An `identity.allowedRoots` entry that does not exist (a typo, or the directory of a tenant
 * not created yet) made every user-switched program check throw a raw ENOENT from realpath: no
 * stable code, `serve` exited, `check --explain` printed `ENOENT` for every spawn, and each CGI
 * request of a user-switched pipe spawn was answered 502 ERR_CGI_SPAWN. A root that does not exist
 * contains nothing: it is skipped, and a program outside every existing root is
 * ERR_SUEXEC_NOT_IN_ROOT, whose message names the missing root.
 */
import t from 'tap'
import { readFileSync, realpathSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, userSafeBackend, tempDir } from './fixtures/manager.js'
import { get } from './fixtures/http.js'
import { withTestUsers } from '../helpers/users.js'
import { spawnRefusals } from '../../src/config/identity-check.js'
import { checkProgram } from '../../src/spawn/identity.js'

const A = { name: 'pcmtra', id: 2121 }

if (withTestUsers(t, 'allowedRoots tests', [A])) {
  const nodeDir = dirname(realpathSync(process.execPath))
  const id = { uid: A.id, gid: A.id, user: A.name, group: A.name }

  t.test('checkProgram: a missing root is skipped, not a raw ENOENT', async (tt) => {
    const missing = '/nonexistent-pc-allowed-root'
    tt.doesNotThrow(() => { checkProgram(process.execPath, id, { minUid: 1000, minGid: 1000, allowedRoots: [missing, nodeDir] }) }, 'program inside the existing root: accepted')
    tt.throws(() => { checkProgram(process.execPath, id, { minUid: 1000, minGid: 1000, allowedRoots: [missing] }) },
      { code: 'ERR_SUEXEC_NOT_IN_ROOT', message: new RegExp(`${missing}.*does not exist`) }, 'outside every existing root: the stable code, naming the missing root')
  })

  t.test('check --explain reports the stable code, not ENOENT', async (tt) => {
    const missing = '/nonexistent-pc-allowed-root'
    const ok = await spawnRefusals({
      identity: { minUid: 1000, minGid: 1000, allowedRoots: [missing, nodeDir] },
      tenants: { a: { user: A.name, group: A.name } },
      spawns: { app: { tenant: 'a', binPath: process.execPath, socketName: '127.0.0.1:0' } },
    } as never)
    tt.same(ok, [], 'a missing root next to the right one refuses nothing')
    const refused = await spawnRefusals({
      identity: { minUid: 1000, minGid: 1000, allowedRoots: [missing] },
      tenants: { a: { user: A.name, group: A.name } },
      spawns: { app: { tenant: 'a', binPath: process.execPath, socketName: '127.0.0.1:0' } },
    } as never)
    tt.equal(refused.length, 1)
    tt.equal(refused[0]?.code, 'ERR_SUEXEC_NOT_IN_ROOT')
  })

  leakTest(t, 'a tenant spawn starts and runs as its user with a missing root in allowedRoots', async (tt, defer) => {
    const { dir, script } = userSafeBackend(defer)
    const missing = join(tempDir(defer), 'not-created-yet')
    const m = manager(defer, {
      minUid: 1000, minGid: 1000,
      allowedRoots: [missing, nodeDir, dir],
      tenants: { a: { user: A.name, group: A.name } },
    })
    m.add('app', { tenant: 'a', binPath: [process.execPath, script], socketName: '127.0.0.1:0' })
    await m.start()
    await ensure(m, 'app')
    const p = m.status()[0].processes[0]
    tt.equal(p.state, 'ready')
    const res = await get(p.address)
    tt.equal(res.status, 200, 'the backend answers')
    tt.match(readStatus(p.pid as number), new RegExp(`Uid:\\s+${A.id}\\s+${A.id}\\s+${A.id}\\s+${A.id}`), 'runs as the tenant')
  })
}

function readStatus (pid: number): string {
  return readFileSync(`/proc/${pid}/status`, 'utf8')
}
