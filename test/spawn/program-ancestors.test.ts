/**
 * suEXEC program check over every directory up to `/` (audit D): a tenant owning the directory
 * ABOVE another tenant's root-owned program directory could rename it away and put its own code
 * there. Each ancestor must be owned by root or the target user and not group/other-writable
 * (a root-owned sticky directory such as /tmp is fine), and the check is repeated before every exec
 * of a user-switched socket spawn, so a program swapped after start() is refused at the restart.
 * Needs root to create users: skipped with the reason locally, a failure under CI=true.
 */
import t from 'tap'
import { chmodSync, chownSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { backendScript, ensure, manager, nextEvent, tempDir } from './fixtures/manager.js'
import type { Defer } from './fixtures/guard.js'
import { withTestUsers } from '../helpers/users.js'

const T = { name: 'pcanct', id: 2021 } // the tenant who owns a directory above
const V = { name: 'pcancv', id: 2022 } // the spawn's user

/** dir/<sub>/bin/prog: a root-owned 0755 program (a shell script exec'ing the fixture backend). */
function program (defer: Defer, sub: string): { dir: string, top: string, prog: string } {
  const dir = tempDir(defer, 'pc-anc-')
  chmodSync(dir, 0o755)
  const top = join(dir, sub)
  mkdirSync(join(top, 'bin'), { recursive: true, mode: 0o755 })
  chmodSync(top, 0o755)
  const script = join(dir, 'backend.mjs')
  copyFileSync(backendScript, script)
  chmodSync(script, 0o644)
  const prog = join(top, 'bin', 'prog')
  writeFileSync(prog, `#!/bin/sh\nexec ${process.execPath} ${script} "$@"\n`, { mode: 0o755 })
  chmodSync(prog, 0o755)
  return { dir, top, prog }
}

if (withTestUsers(t, 'program ancestor tests', [T, V])) {

  leakTest(t, 'a directory above the program owned by another tenant, or group-writable, is refused at start()', async (tt, defer) => {
    const { top, prog } = program(defer, 'tenant-t')
    chownSync(top, T.id, T.id)
    const m = manager(defer)
    m.add('v', { user: V.name, group: V.name, binPath: [prog], socketName: '127.0.0.1:0' })
    await tt.rejects(m.start(), { code: 'ERR_SUEXEC_DIR_WRITABLE', message: new RegExp(`^${top}: .*owned by uid ${T.id}`) }, 'the offending directory is named')
    tt.same(m.status()[0].processes, [], 'nothing spawned')
    await m.close()

    chownSync(top, 0, 0)
    chmodSync(top, 0o775)
    const m2 = manager(defer)
    m2.add('v', { user: V.name, group: V.name, binPath: [prog], socketName: '127.0.0.1:0' })
    await tt.rejects(m2.start(), { code: 'ERR_SUEXEC_DIR_WRITABLE', message: new RegExp(`^${top}: .*writable`) })
    await m2.close()

    // The target user's own directory and a root-owned sticky one (the temp dir's /tmp) are fine.
    chmodSync(top, 0o755)
    chownSync(top, V.id, V.id)
    const m3 = manager(defer)
    m3.add('v', { user: V.name, group: V.name, binPath: [prog], socketName: '127.0.0.1:0' })
    await m3.start()
    await ensure(m3, 'v')
    await m3.close()
  })

  leakTest(t, 'a program directory taken over after start() is refused at the next restart, which counts as a failed start', async (tt, defer) => {
    const { top, prog } = program(defer, 'tenant-v')
    const m = manager(defer)
    m.add('v', { user: V.name, group: V.name, binPath: [prog], socketName: '127.0.0.1:0', restart: { initialDelay: 10, maxDelay: 20, maxStarts: 2, window: 60_000 } })
    await m.start()
    await ensure(m, 'v')
    const pid = m.status()[0].processes[0].pid as number
    // Tenant T gets the directory above the program's (it could now swap bin/ for its own).
    chownSync(top, T.id, T.id)
    let respawned = false
    m.on('spawn', () => { respawned = true })
    const failed = nextEvent(m, 'failed')
    process.kill(pid, 'SIGKILL')
    const e = await failed
    tt.match(e.reason, new RegExp(`ERR_SUEXEC_DIR_WRITABLE: spawns\\.v: .*${top}: directory above the program is owned by uid ${T.id}`), `FAILED with the code and directory: ${e.reason}`)
    tt.notOk(respawned, 'nothing was exec\'d after the takeover')
    tt.equal(m.status()[0].state, 'failed')
    await m.close()
  })
}
