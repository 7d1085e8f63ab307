/**
 * Issue 6: suEXEC-style user switching (RELIABILITY.md §1, AC-18..AC-28). Needs root to create
 * users and switch to them: skipped with the reason locally, a failure under CI=true.
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { waitFor } from '../helpers/leaks.js'
import { backendScript, ensure, manager, tempDir } from './fixtures/manager.js'
import { get } from './fixtures/http.js'
import { SpawnManager } from '../../src/spawn/manager.js'
import type { SpawnSpec } from '../../src/spawn/types.js'
import { managerOptions } from '../../src/config/spawns.js'
import { validateConfig } from '../../src/config/validate.js'
import { minimalRoot } from '../helpers/chroot.js'

const A = { name: 'pcsxa', id: 2001 }
const B = { name: 'pcsxb', id: 2002 }
/** An extra group A is a member of (supplementary). */
const G = { name: 'pcsxg', id: 2005 }

if (process.getuid?.() !== 0) {
  if (process.env.CI === 'true') t.fail('identity tests need root in CI')
  else t.pass('needs root', { skip: 'needs root to create users and switch to them' })
} else {
  for (const u of [A, B]) {
    execFileSync('sh', ['-c', `getent passwd ${u.name} >/dev/null || useradd -M -N -u ${u.id} -s /usr/sbin/nologin ${u.name}; getent group ${u.name} >/dev/null || groupadd -g ${u.id} ${u.name}`])
  }
  execFileSync('sh', ['-c', `getent group ${G.name} >/dev/null || groupadd -g ${G.id} ${G.name}; usermod -aG ${G.name} ${A.name}`])
  t.teardown(() => {
    for (const u of [A, B]) execFileSync('sh', ['-c', `userdel ${u.name} 2>/dev/null; groupdel ${u.name} 2>/dev/null; true`])
    execFileSync('sh', ['-c', `groupdel ${G.name} 2>/dev/null; true`])
  })

  const refuse = async (tt: Test, spec: SpawnSpec, code: string, opts: ConstructorParameters<typeof SpawnManager>[0] = {}): Promise<void> => {
    const m = new SpawnManager(opts)
    m.add('x', { socketName: '127.0.0.1:0', binPath: [process.execPath, backendScript], ...spec })
    await tt.rejects(m.start(), { code }, code)
    tt.same(m.status()[0].processes, [], 'nothing spawned')
    await m.close()
  }

  leakTest(t, 'identity refusals, each with its own code', async (tt) => {
    await refuse(tt, { user: A.name }, 'ERR_IDENTITY_GROUP_REQUIRED')
    await refuse(tt, { group: A.name }, 'ERR_IDENTITY_USER_REQUIRED')
    await refuse(tt, { user: 'root', group: A.name }, 'ERR_IDENTITY_UID_ZERO')
    await refuse(tt, { user: A.name, group: 'root' }, 'ERR_IDENTITY_GID_ZERO')
    await refuse(tt, { user: 'daemon', group: A.name }, 'ERR_IDENTITY_UID_BELOW_MIN')
    await refuse(tt, { user: A.name, group: 'daemon' }, 'ERR_IDENTITY_GID_BELOW_MIN')
    await refuse(tt, { user: A.name, group: A.name }, 'ERR_IDENTITY_UID_BELOW_MIN', { minUid: 3000, minGid: 100 })
    await refuse(tt, { user: 'nosuchuser-pc', group: A.name }, 'ERR_IDENTITY_UNKNOWN_USER')
    await refuse(tt, { user: A.name, group: 'nosuchgroup-pc' }, 'ERR_IDENTITY_UNKNOWN_GROUP')
    await refuse(tt, { user: '2001x', group: A.name }, 'ERR_IDENTITY_BAD_ID')
    await refuse(tt, { user: '-1', group: A.name }, 'ERR_IDENTITY_BAD_ID')
    await refuse(tt, { user: '4294967296', group: A.name }, 'ERR_IDENTITY_BAD_ID')
    await refuse(tt, { tenant: 'nope' }, 'ERR_IDENTITY_UNKNOWN_TENANT')
    await refuse(tt, { tenant: 'a', user: B.name }, 'ERR_IDENTITY_TENANT_CONFLICT', { tenants: { a: { user: A.name, group: A.name } } })
  })

  leakTest(t, 'program checks (suexec 4, 14-22) with a boundary-aware root', async (tt, defer) => {
    const dir = tempDir(defer)
    chmodSync(dir, 0o755)
    const www = join(dir, 'www')
    const evil = join(dir, 'www-evil')
    for (const d of [www, evil]) { mkdirSync(d); chownSync(d, A.id, A.id); chmodSync(d, 0o755) }
    const prog = (name: string, mode: number, owner = A.id, inDir = www): string => {
      const p = join(inDir, name)
      writeFileSync(p, '#!/bin/sh\nexit 0\n')
      chownSync(p, owner, owner)
      chmodSync(p, mode)
      return p
    }
    const id = { user: A.name, group: A.name }
    const roots = { allowedRoots: [www] }
    await refuse(tt, { ...id, binPath: prog('gw', 0o775) }, 'ERR_SUEXEC_FILE_WRITABLE', roots)
    await refuse(tt, { ...id, binPath: prog('ow', 0o757) }, 'ERR_SUEXEC_FILE_WRITABLE', roots)
    await refuse(tt, { ...id, binPath: prog('suid', 0o4755) }, 'ERR_SUEXEC_SETID', roots)
    await refuse(tt, { ...id, binPath: prog('sgid', 0o2755) }, 'ERR_SUEXEC_SETID', roots)
    await refuse(tt, { ...id, binPath: prog('other', 0o755, B.id) }, 'ERR_SUEXEC_OWNER_MISMATCH', roots)
    await refuse(tt, { ...id, binPath: prog('noexec', 0o644) }, 'ERR_SUEXEC_NOT_EXECUTABLE', roots)
    const good = prog('good', 0o755)
    symlinkSync(good, join(www, 'link'))
    await refuse(tt, { ...id, binPath: join(www, 'link') }, 'ERR_SUEXEC_SYMLINK', roots)
    await refuse(tt, { ...id, binPath: prog('x', 0o755, A.id, evil) }, 'ERR_SUEXEC_NOT_IN_ROOT', roots)
    await refuse(tt, { ...id, binPath: 'good' }, 'ERR_SUEXEC_RELATIVE_PATH', roots)
    await refuse(tt, { ...id, binPath: `${www}/../www/good` }, 'ERR_SUEXEC_DOTDOT', roots)
    await refuse(tt, { ...id, binPath: join(www, 'absent') }, 'ERR_SUEXEC_NOT_FOUND', roots)
    const open = join(dir, 'open')
    mkdirSync(open)
    chownSync(open, A.id, A.id)
    chmodSync(open, 0o777)
    await refuse(tt, { ...id, binPath: prog('y', 0o755, A.id, open) }, 'ERR_SUEXEC_DIR_WRITABLE')
    const ok = new SpawnManager(roots)
    ok.add('good', { ...id, binPath: good, socketName: '127.0.0.1:0', minProcs: 0 })
    await tt.resolves(ok.start(), 'a compliant program passes')
    await ok.close()
  })

  leakTest(t, 'runs as the target: uids, no groups, umask, limits, socket 0660, accounting', async (tt, defer) => {
    const dir = tempDir(defer)
    const node = join(dir, 'bin')
    mkdirSync(node)
    chmodSync(dir, 0o755)
    // A private copy of the fixture the target user can read (the checkout may not be readable).
    const script = join(node, 'backend.mjs')
    copyFileSync(backendScript, script)
    chmodSync(node, 0o755)
    chmodSync(script, 0o644)
    const m = manager(defer, { tenants: { a: { user: A.name, group: A.name, limits: { nofile: 256, processes: 512, data: 3 * 2 ** 30 } } } })
    const sock = join(dir, 'a.sock')
    m.add('app', { tenant: 'a', binPath: [process.execPath, script], socketName: sock })
    await m.start()
    await ensure(m, 'app')
    const pid = m.status()[0].processes[0].pid as number
    // Ready (the socket) can come before the pid has exec'd through prlimit and the umask shell.
    tt.ok(await waitFor(() => !/^Name:\s+(prlimit|setpriv|sh|dash)$/m.test(readFileSync(`/proc/${pid}/status`, 'utf8')), 10_000), 'the program is running')
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    tt.match(status, new RegExp(`^Uid:\\s+${A.id}\\s+${A.id}\\s+${A.id}\\s+${A.id}$`, 'm'), 'real, effective, saved, fs uid')
    tt.match(status, new RegExp(`^Gid:\\s+${A.id}\\s+${A.id}\\s+${A.id}\\s+${A.id}$`, 'm'))
    tt.match(status, /^Groups:\s*$/m, 'no supplementary groups')
    tt.match(status, /^Umask:\s+0022$/m, 'umask 022')
    tt.match(status, /^CapEff:\s+0000000000000000$/m, 'no capabilities')
    const limits = readFileSync(`/proc/${pid}/limits`, 'utf8')
    tt.match(limits, /^Max open files\s+256\s+256/m)
    tt.match(limits, /^Max processes\s+512\s+512/m)
    tt.match(limits, /^Max data size\s+3221225472\s+3221225472\s+bytes/m, 'data: RLIMIT_DATA')
    const env = JSON.parse((await get(`unix:${sock}`, '/env')).body) as Record<string, string>
    tt.equal(env.PATH, '/usr/local/bin:/usr/bin:/bin', 'fixed safe PATH')
    const st = statSync(sock)
    tt.equal(st.mode & 0o777, 0o660, 'socket mode 0660')
    tt.equal(st.uid, A.id, 'socket owned by the tenant user')
    const p = m.status()[0].processes[0]
    tt.ok(typeof p.cpuMs === 'number' && p.cpuMs >= 0, `cpu ${p.cpuMs} ms`)
    tt.ok(typeof p.rssBytes === 'number' && p.rssBytes > 1024 * 1024, `rss ${p.rssBytes} bytes`)
    tt.comment(`cgroup: ${JSON.stringify(m.cgroupSupport())}`)
  })

  leakTest(t, 'config `identity`: minUid/minGid lowered let a system user run; the default refuses it', async (tt, defer) => {
    const daemon = execFileSync('id', ['-u', 'daemon'], { encoding: 'utf8' }).trim()
    const dir = tempDir(defer)
    chmodSync(dir, 0o755)
    const script = join(dir, 'backend.mjs')
    copyFileSync(backendScript, script)
    chmodSync(script, 0o644)
    const spec: SpawnSpec = { user: 'daemon', group: 'daemon', binPath: [process.execPath, script], socketName: '127.0.0.1:0' }
    const identity = { minUid: 1, minGid: 1, allowedRoots: [dirname(process.execPath)] }
    tt.same(validateConfig({ routes: [], identity }), [], 'the schema takes the identity block')
    tt.match(validateConfig({ routes: [], identity: { minUid: 0 } }), [{ path: '/identity/minUid' }], 'minUid 0 is a config error')
    await refuse(tt, spec, 'ERR_IDENTITY_UID_BELOW_MIN', managerOptions({}))
    await refuse(tt, spec, 'ERR_SUEXEC_NOT_IN_ROOT', managerOptions({ identity: { ...identity, allowedRoots: [dir] } }))
    const m = manager(defer, managerOptions({ identity }))
    m.add('sys', spec)
    await m.start()
    await ensure(m, 'sys')
    const pid = m.status()[0].processes[0].pid as number
    tt.match(readFileSync(`/proc/${pid}/status`, 'utf8'), new RegExp(`^Uid:\\s+${daemon}\\s`, 'm'), `runs as daemon (uid ${daemon})`)
  })

  leakTest(t, 'groups: user gives the target user\'s supplementary groups (setpriv); the default none gives none', async (tt, defer) => {
    const dir = tempDir(defer)
    chmodSync(dir, 0o755)
    const script = join(dir, 'backend.mjs')
    copyFileSync(backendScript, script)
    chmodSync(script, 0o644)
    const m = manager(defer)
    const base: SpawnSpec = { user: A.name, group: A.name, binPath: [process.execPath, script], socketName: '127.0.0.1:0', limits: { nofile: 300 } }
    m.add('none', base)
    m.add('user', { ...base, groups: 'user' })
    await m.start()
    await ensure(m, 'none')
    await ensure(m, 'user')
    const statusOf = (name: string): string => {
      const pid = m.status().find((s) => s.name === name)?.processes[0].pid as number
      return readFileSync(`/proc/${pid}/status`, 'utf8')
    }
    // The socket is ready before the pid has exec'd through its wrappers (prlimit, setpriv, the
    // umask shell): look at the program itself, not at setpriv halfway through dropping privileges.
    const wrapper = /^Name:\s+(prlimit|setpriv|sh|dash|unshare)$/m
    for (const name of ['none', 'user']) tt.ok(await waitFor(() => !wrapper.test(statusOf(name)), 10_000), `${name}: the program is running`)
    const withGroups = statusOf('user')
    tt.match(withGroups, new RegExp(`^Groups:.*\\b${G.id}\\b`, 'm'), `groups: user has ${G.name} (${G.id})`)
    tt.match(withGroups, new RegExp(`^Uid:\\s+${A.id}\\s+${A.id}\\s+${A.id}\\s+${A.id}$`, 'm'), 'real, effective, saved, fs uid')
    tt.match(withGroups, new RegExp(`^Gid:\\s+${A.id}\\s+${A.id}\\s+${A.id}\\s+${A.id}$`, 'm'))
    tt.match(withGroups, /^Umask:\s+0022$/m, 'umask 022')
    tt.match(withGroups, /^CapEff:\s+0000000000000000$/m, 'no capabilities')
    tt.match(readFileSync(`/proc/${m.status().find((s) => s.name === 'user')?.processes[0].pid as number}/limits`, 'utf8'), /^Max open files\s+300\s+300/m, 'limits kept')
    tt.match(statusOf('none'), /^Groups:\s*$/m, 'groups: none (default) has no supplementary groups')
    await refuse(tt, { groups: 'user' }, 'ERR_SPAWN_BAD_SPEC')
  })

  /** A minimal root: dash as /bin/sh, sleep, their libraries and loader (from ldd), and a script owned by A. */
  const buildRoot = (dir: string): string => {
    const root = minimalRoot(dir, 'root', ['/bin/sh', '/bin/sleep'])
    const app = join(root, 'app')
    mkdirSync(app)
    chownSync(app, A.id, A.id)
    chmodSync(app, 0o755)
    writeFileSync(join(app, 'run.sh'), '#!/bin/sh\nif [ -e /etc/hostname ]; then echo "hostname: visible"; else echo "hostname: absent"; fi\necho "cwd: $PWD"\nexec /bin/sleep 1000\n')
    chownSync(join(app, 'run.sh'), A.id, A.id)
    chmodSync(join(app, 'run.sh'), 0o755)
    return root
  }

  leakTest(t, 'chroot: the child runs as the target inside the root, cannot see the host, keeps umask and limits', async (tt, defer) => {
    const dir = tempDir(defer)
    chmodSync(dir, 0o755)
    const root = buildRoot(dir)
    tt.ok(readFileSync('/etc/hostname', 'utf8').length > 0, 'the host has /etc/hostname')
    const m = manager(defer)
    const out = new Map<string, string>()
    m.on('stderr', (e) => out.set(e.spawn, (out.get(e.spawn) ?? '') + e.chunk.toString()))
    const base: SpawnSpec = { user: A.name, group: A.name, chroot: root, binPath: '/app/run.sh', socketName: '127.0.0.1:0', limits: { nofile: 64 } }
    m.add('jail', base)
    m.add('jailgroups', { ...base, groups: 'user' })
    await m.start()
    for (const name of ['jail', 'jailgroups']) {
      await ensure(m, name)
      tt.ok(await waitFor(() => (out.get(name) ?? '').includes('cwd:'), 10_000), `${name}: script output arrived`)
      tt.match(out.get(name), /hostname: absent/, `${name}: /etc/hostname of the host is not visible`)
      tt.match(out.get(name), /cwd: \/app\n/, `${name}: cwd is the binary's directory inside the root`)
      const pid = m.status().find((s) => s.name === name)?.processes[0].pid as number
      tt.equal(readlinkSync(`/proc/${pid}/root`), root, `${name}: /proc/PID/root is the chroot`)
      const status = readFileSync(`/proc/${pid}/status`, 'utf8')
      tt.match(status, new RegExp(`^Uid:\\s+${A.id}\\s+${A.id}\\s+${A.id}\\s+${A.id}$`, 'm'), `${name}: runs as ${A.name}`)
      tt.match(status, new RegExp(`^Gid:\\s+${A.id}\\s+${A.id}\\s+${A.id}\\s+${A.id}$`, 'm'))
      tt.match(status, /^Umask:\s+0022$/m)
      tt.match(status, /^CapEff:\s+0000000000000000$/m, 'no capabilities')
      tt.match(readFileSync(`/proc/${pid}/limits`, 'utf8'), /^Max open files\s+64\s+64/m)
      if (name === 'jail') tt.match(status, /^Groups:\s*$/m, 'no supplementary groups')
      else tt.match(status, new RegExp(`^Groups:.*\\b${G.id}\\b`, 'm'), `groups: user has ${G.name}`)
    }
  })

  leakTest(t, 'chroot refusals: unsafe root, no identity, a writable program inside the root, pipe spawns', async (tt, defer) => {
    const dir = tempDir(defer)
    chmodSync(dir, 0o755)
    const root = buildRoot(dir)
    const id = { user: A.name, group: A.name }
    await refuse(tt, { binPath: '/app/run.sh', chroot: root }, 'ERR_SPAWN_CHROOT_UNSAFE')
    await refuse(tt, { ...id, binPath: '/app/run.sh', chroot: join(dir, 'absent') }, 'ERR_SPAWN_CHROOT_UNSAFE')
    await refuse(tt, { ...id, binPath: '/app/absent', chroot: root }, 'ERR_SUEXEC_NOT_FOUND')
    await refuse(tt, { ...id, binPath: '/app/run.sh', chroot: root, socketType: 'pipe', socketName: undefined }, 'ERR_SPAWN_BAD_SPEC')
    chmodSync(join(root, 'app', 'run.sh'), 0o775)
    await refuse(tt, { ...id, binPath: '/app/run.sh', chroot: root }, 'ERR_SUEXEC_FILE_WRITABLE')
    chmodSync(join(root, 'app', 'run.sh'), 0o755)
    chmodSync(root, 0o775)
    await refuse(tt, { ...id, binPath: '/app/run.sh', chroot: root }, 'ERR_SPAWN_CHROOT_UNSAFE')
    chmodSync(root, 0o755)
    chownSync(root, A.id, A.id)
    await refuse(tt, { ...id, binPath: '/app/run.sh', chroot: root }, 'ERR_SPAWN_CHROOT_UNSAFE')
  })
}
