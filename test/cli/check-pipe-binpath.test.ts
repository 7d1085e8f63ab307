/**
 * A pipe (CGI) spawn whose program cannot run is refused before anything serves with it, as
 * `nginx -t` / `php-fpm -t` refuse a config they cannot use: `proxycore check` (with and without
 * --explain) exits 2 naming the spawn and the path, `serve` does not start, and a SIGHUP reload to
 * it is rejected while the previous config keeps serving. A pipe spawn without binPath (the script
 * is the program) passes, and so does a bare program name (execvp(3) searches each request's PATH,
 * which a route's `params` may set: nothing to know at load).
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { cli, ensureBuilt, getText, jsonLines, root as repo, runCli, serveKilled } from './run.js'

interface Teardown { teardown (fn: () => void | Promise<void>): void }

function tempRoot (t: Teardown): string {
  const dir = mkdtempSync(join(tmpdir(), 'pc-pipe-binpath-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const cgi = join(dir, 'cgi')
  mkdirSync(cgi)
  writeFileSync(join(cgi, 'v.sh'), '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s\\n" "$VERSION"\n', { mode: 0o755 })
  chmodSync(join(cgi, 'v.sh'), 0o755)
  return dir
}

/** `binPath`: a YAML value, or '' for none. */
const yaml = (dir: string, version: string, binPath = '', extra = ''): string => `listen: 127.0.0.1:0
spawns:
  cgi:
    socketType: pipe
${binPath === '' ? '' : `    binPath: ${binPath}\n`}    environment: { VERSION: "${version}"${extra} }
routes:
  - { name: cgi, match: { prefix: /cgi/ }, protocol: cgi, spawn: cgi, docroot: ${JSON.stringify(join(dir, 'cgi'))}, stripPrefix: true }
`

t.test('check refuses a pipe spawn whose program is missing or not executable, naming the spawn and the path', async (t) => {
  guardLeaks(t)
  const dir = tempRoot(t)
  const file = join(dir, 'proxycore.yaml')
  const missing = join(dir, 'no-such-interpreter')
  const noexec = join(dir, 'noexec-interpreter')
  writeFileSync(noexec, '#!/bin/sh\nexec "$@"\n', { mode: 0o644 })
  chmodSync(noexec, 0o644)
  const cases: Array<[string, string, string, RegExp]> = [
    ['an absolute path that does not exist', JSON.stringify(missing), missing, /ENOENT/],
    ['a file without an execute bit', JSON.stringify(noexec), noexec, /EACCES/],
    ['a directory', JSON.stringify(dir), dir, /EACCES/],
    ['the list form', `[${JSON.stringify(missing)}, -w]`, missing, /ENOENT/],
  ]
  for (const [what, binPath, shown, errno] of cases) {
    writeFileSync(file, yaml(dir, '1', binPath))
    for (const args of [['check', file], ['check', file, '--explain']]) {
      const r = await runCli(args)
      t.equal(r.code, 2, `${what}, ${args.slice(2).join(' ') || 'plain'}: exit 2 (${r.stdout}${r.stderr})`)
      t.equal(r.stdout, '', 'no "ok" line')
      t.match(r.stderr, /\/spawns\/cgi/, 'the spawn\'s config path is named')
      t.match(r.stderr, 'ERR_SPAWN_EXEC', 'with the stable code')
      t.ok(r.stderr.includes(shown), `the program is named: ${shown}`)
      t.match(r.stderr, errno, `with the errno ${String(errno)}`)
    }
  }
})

t.test('check accepts a pipe spawn with no binPath, an existing interpreter, or a bare name', async (t) => {
  guardLeaks(t)
  const dir = tempRoot(t)
  const file = join(dir, 'proxycore.yaml')
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  writeFileSync(join(bin, 'my-interp'), '#!/bin/sh\nexec "$@"\n', { mode: 0o755 })
  chmodSync(join(bin, 'my-interp'), 0o755)
  const cases: Array<[string, string, string]> = [
    ['no binPath', '', ''],
    ['an absolute interpreter', '"/bin/sh"', ''],
    ['a bare name in the default search path (/usr/bin:/bin)', 'sh', ''],
    ['a bare name in the spawn\'s own PATH', 'my-interp', `, PATH: ${JSON.stringify(bin)}`],
    // execvp(3) searches each request's PATH, which a route's params may set: not knowable here.
    ['a bare name found nowhere (not checked)', 'proxycore-no-such-program-x', ''],
  ]
  for (const [what, binPath, extra] of cases) {
    writeFileSync(file, yaml(dir, '1', binPath, extra))
    for (const args of [['check', file], ['check', file, '--explain']]) {
      const r = await runCli(args)
      t.equal(r.code, 0, `${what}, ${args.slice(2).join(' ') || 'plain'}: exit 0 (${r.stderr})`)
      t.match(r.stdout, ': ok (', 'ok')
    }
  }
})

t.test('serve refuses to start with a pipe spawn whose program is missing', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tempRoot(t)
  const file = join(dir, 'proxycore.yaml')
  const missing = join(dir, 'no-such-interpreter')
  writeFileSync(file, yaml(dir, '1', JSON.stringify(missing)))
  await ensureBuilt()
  const child = spawn(process.execPath, [cli, 'serve', file], { cwd: repo, detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PROXYCORE_LOG_FORMAT: 'json' } })
  t.teardown(() => { try { process.kill(-(child.pid as number), 'SIGKILL') } catch {} })
  const lines = jsonLines(child.stderr)
  let code: number | null | undefined
  child.on('exit', (c) => { code = c })
  // Without the check it serves (and would run until killed): bounded, then a failure.
  const exited = await waitFor(() => code !== undefined, 20_000, 20)
  t.ok(exited, `serve exits by itself (logs: ${lines.map((l) => String(l.msg)).join(' | ')})`)
  t.notOk(lines.some((l) => l.msg === 'serving'), 'it never served')
  t.equal(code, 1, 'exit 1, as for a start refused by the identity checks (docs/reference/cli.md)')
  const refusal = JSON.stringify(lines)
  t.match(refusal, 'ERR_SPAWN_EXEC', 'the stable code is logged')
  t.ok(refusal.includes(missing), 'the program is named')
})

t.test('a reload to a pipe spawn whose program is missing is rejected; the old config keeps serving', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tempRoot(t)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, yaml(dir, '1'))
  const { s } = await serveKilled(t, file)
  t.same(await getText(`${s.url}/cgi/v.sh`), { status: 200, body: '1\n' }, 'VERSION 1 serves')
  const missing = join(dir, 'no-such-interpreter')
  writeFileSync(file, yaml(dir, '2', JSON.stringify(missing)))
  const at = s.logs().length
  s.child.kill('SIGHUP')
  const outcome = await Promise.race([
    s.waitLog('reload rejected; the previous config keeps serving', at).then(() => 'rejected'),
    s.waitLog('reloaded', at).then(() => 'reloaded'),
  ])
  t.equal(outcome, 'rejected', 'the reload is rejected')
  t.ok(JSON.stringify(s.logs().slice(at)).includes(missing), 'the rejection names the program')
  const after: Array<{ status: number, body: string }> = []
  for (let i = 0; i < 20; i++) after.push(await getText(`${s.url}/cgi/v.sh`))
  t.same(after.filter((r) => r.status !== 200 || r.body !== '1\n'), [], `20 of 20 requests after it: 200 from VERSION 1 (${after.filter((r) => r.status === 200).length} were 200)`)
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0, 'exit 0 after SIGTERM')
})
