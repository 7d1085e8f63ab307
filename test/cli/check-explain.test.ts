/**
 * `proxycore check --explain` runs the spawn manager's identity and suEXEC checks on every spawn
 * (and the allowedRoots check on user-switched CGI docroots) without starting anything, and names
 * each refusal's code and path (exit 2). Needs root
 * to create the test user: skipped with the reason locally, a failure under CI=true.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { runCli } from './run.js'

// An id no other test file uses (2011 is test/spawn/health-identity's pchealth: run alongside, one
// useradd failed with "UID 2011 is not unique").
const U = { name: 'pcxexpl', id: 2031 }

if (process.getuid?.() !== 0) {
  if (process.env.CI === 'true') t.fail('check --explain identity tests need root in CI')
  else t.pass('needs root', { skip: 'needs root to create a test user' })
} else {
  t.test('check --explain: each refused spawn with its code, nothing started', async (t) => {
    guardLeaks(t)
    execFileSync('sh', ['-c', `getent passwd ${U.name} >/dev/null || useradd -M -N -u ${U.id} -s /usr/sbin/nologin ${U.name}; getent group ${U.name} >/dev/null || groupadd -g ${U.id} ${U.name}`])
    t.teardown(() => { execFileSync('sh', ['-c', `userdel ${U.name} 2>/dev/null; groupdel ${U.name} 2>/dev/null; true`]) })
    const dir = mkdtempSync(join(tmpdir(), 'pc-explain-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    chmodSync(dir, 0o755)
    const bin = join(dir, 'bin')
    mkdirSync(bin)
    chownSync(bin, U.id, U.id)
    chmodSync(bin, 0o755)
    const prog = (name: string, mode: number): string => {
      const p = join(bin, name)
      writeFileSync(p, '#!/bin/sh\nexit 0\n')
      chownSync(p, U.id, U.id)
      chmodSync(p, mode)
      return p
    }
    const writable = prog('php-cgi', 0o775)
    const good = prog('good', 0o755)
    const file = join(dir, 'proxycore.yaml')
    const write = (extra = ''): void => writeFileSync(file, `listen: 127.0.0.1:0
${extra}spawns:
  php: { binPath: ${JSON.stringify(writable)}, socketName: 127.0.0.1:0, user: ${U.name}, group: ${U.name} }
  ok: { binPath: ${JSON.stringify(good)}, socketName: 127.0.0.1:0, user: ${U.name}, group: ${U.name} }
  sys: { binPath: ${JSON.stringify(process.execPath)}, socketName: 127.0.0.1:0, user: daemon, group: ${U.name} }
  plain: { binPath: ${JSON.stringify(writable)}, socketName: 127.0.0.1:0 }
routes:
  - { protocol: fastcgi, spawn: php, docroot: . }
`)
    write()
    const r = await runCli(['check', file, '--explain'])
    t.equal(r.code, 2, 'exit 2')
    t.match(r.stderr, `/spawns/php: ERR_SUEXEC_FILE_WRITABLE ${writable}: writable by group or others`)
    t.match(r.stderr, /\/spawns\/sys: ERR_IDENTITY_UID_BELOW_MIN uid 1 is below minUid 1000/)
    t.notMatch(r.stderr, /\/spawns\/ok:/, 'a compliant spawn is not listed')
    t.notMatch(r.stderr, /\/spawns\/plain:/, 'a spawn without user/group is not checked')
    t.match(r.stderr, /2 spawn\(s\) or CGI docroot\(s\) would be refused/)
    const plain = await runCli(['check', file])
    t.equal(plain.code, 0, 'without --explain the identity checks are not run')
    write(`identity: { minUid: 1, minGid: 1, allowedRoots: [${JSON.stringify(bin)}, ${JSON.stringify(dirname(process.execPath))}] }\n`)
    const lowered = await runCli(['check', file, '--explain'])
    t.equal(lowered.code, 2)
    t.notMatch(lowered.stderr, /\/spawns\/sys:/, 'the config identity policy is applied')
    t.match(lowered.stderr, /1 spawn\(s\) or CGI docroot\(s\) would be refused/)
    chmodSync(writable, 0o755)
    const fixed = await runCli(['check', file, '--explain'])
    t.equal(fixed.code, 0, fixed.stderr)
    t.match(fixed.stdout, /ok \(1 route/)

    // A user-switched CGI route whose docroot lies outside allowedRoots: every script would be
    // refused per request (403), so --explain names the docroot.
    const www = join(dir, 'www')
    mkdirSync(www)
    const cgi = (docroot: string): void => writeFileSync(file, `listen: 127.0.0.1:0
identity: { minUid: 1, minGid: 1, allowedRoots: [${JSON.stringify(bin)}] }
spawns:
  cgi: { socketType: pipe, user: ${U.name}, group: ${U.name} }
routes:
  - { protocol: cgi, spawn: cgi, docroot: ${JSON.stringify(docroot)} }
`)
    cgi(www)
    const outside = await runCli(['check', file, '--explain'])
    t.equal(outside.code, 2, 'exit 2')
    t.match(outside.stderr, `/routes/0/docroot: ERR_SUEXEC_NOT_IN_ROOT ${www}: not inside ${bin}`)
    cgi(bin)
    const inside = await runCli(['check', file, '--explain'])
    t.equal(inside.code, 0, inside.stderr)
  })
}
