/**
 * Audit H8: a symlink on the way to a user-switched program, owned by another user. The ancestor
 * rule (identity.ts checkAncestors) accepts a root-owned sticky directory, since there only an
 * entry's owner may rename or remove the entry. A directory entry there is checked for its owner;
 * a symlink was only followed (stat), so one that another user planted in such a directory,
 * pointing at the target user's real program directory, passed every check: its owner can re-point
 * it at any time, and the window between the checks and the exec then runs that user's code as the
 * target user. With fs.protected_symlinks=1 the kernel refuses to follow such a link in a sticky
 * *world-writable* directory, but not in a sticky group-writable one (used here), and the sysctl
 * may be 0. Each symlink on the path as written must be owned by root or the target user.
 * Needs root to create users: skipped with the reason locally, a failure under CI=true.
 */
import t from 'tap'
import { chmodSync, chownSync, copyFileSync, lchownSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { once } from 'node:events'
import { leakTest, type Defer } from './fixtures/guard.js'
import { backendScript, ensure, manager, tempDir } from './fixtures/manager.js'
import { withTestUsers } from '../helpers/users.js'

const A = { name: 'pcauslka', id: 2177 } // the spawn's user
const B = { name: 'pcauslkb', id: 2178 } // another tenant, who may write to the shared sticky directory

/**
 * <base>/real: A's program directory (A:A 0755) with `prog`, a shell script exec'ing the fixture
 * backend; <base>/shared: root:B 1775, sticky and group-writable (B may add entries, and rename
 * or remove only its own); <base>/shared/app → <base>/real, a symlink owned by `linkOwner`.
 */
function layout (defer: Defer, linkOwner: number): { real: string, viaLink: string } {
  const base = tempDir(defer, 'pc-audit-slk-')
  chmodSync(base, 0o755)
  const script = join(base, 'backend.mjs')
  copyFileSync(backendScript, script)
  chmodSync(script, 0o644)
  const real = join(base, 'real')
  mkdirSync(real, { mode: 0o755 })
  chownSync(real, A.id, A.id)
  chmodSync(real, 0o755)
  const prog = join(real, 'prog')
  writeFileSync(prog, `#!/bin/sh\nexec ${process.execPath} ${script} "$@"\n`)
  chownSync(prog, A.id, A.id)
  chmodSync(prog, 0o755)
  const shared = join(base, 'shared')
  mkdirSync(shared)
  chownSync(shared, 0, B.id)
  chmodSync(shared, 0o1775)
  const link = join(shared, 'app')
  symlinkSync(real, link)
  lchownSync(link, linkOwner, linkOwner)
  return { real, viaLink: join(link, 'prog') }
}

if (withTestUsers(t, 'symlink owner audit', [A, B])) {
  leakTest(t, 'a socket spawn whose program path goes through another user\'s symlink is refused at start()', async (tt, defer) => {
    const { viaLink } = layout(defer, B.id)
    const m = manager(defer)
    m.add('a', { user: A.name, group: A.name, binPath: [viaLink], socketName: '127.0.0.1:0' })
    await tt.rejects(m.start(), { code: 'ERR_SUEXEC_SYMLINK', message: new RegExp(`/shared/app: symlink .*owned by uid ${B.id}`) }, 'refused, naming the link and its owner')
    tt.same(m.status()[0].processes, [], 'nothing spawned')
    await m.close()
  })

  leakTest(t, 'the same path through a symlink of the target user, or of root, still runs', async (tt, defer) => {
    for (const owner of [A.id, 0]) {
      const { viaLink } = layout(defer, owner)
      const m = manager(defer)
      m.add('a', { user: A.name, group: A.name, binPath: [viaLink], socketName: '127.0.0.1:0' })
      await m.start()
      await ensure(m, 'a')
      tt.equal(m.status()[0].state, 'running', `link owned by uid ${owner}: running`)
      await m.close()
    }
  })

  leakTest(t, 'a CGI script reached through another user\'s symlink is refused per request, before anything runs', async (tt, defer) => {
    const { real, viaLink } = layout(defer, B.id)
    const script = join(real, 'cgi.sh')
    writeFileSync(script, '#!/bin/sh\necho ran\n')
    chownSync(script, A.id, A.id)
    chmodSync(script, 0o755)
    const m = manager(defer)
    m.add('cgi', { socketType: 'pipe', user: A.name, group: A.name, launcher: 'direct' })
    await m.start()
    const starter = m.pipeStarter('cgi')
    tt.throws(() => starter.launch({ argv: [join(dirname(viaLink), 'cgi.sh')], env: {}, cwd: real, stdin: 'null' }), { code: 'ERR_SUEXEC_SYMLINK' })
    // Control: the real path runs.
    const child = starter.launch({ argv: [script], env: {}, cwd: real, stdin: 'null' })
    child.stdout?.resume()
    child.stderr?.resume()
    const [code] = await once(child, 'exit') as [number | null]
    tt.equal(code, 0, 'the script at its real path runs')
    await m.close()
  })
}
