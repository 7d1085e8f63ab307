/**
 * docs/guides/cgi-and-git.md sections 1-3, 6 and 7, walked as a new user: the guide's yaml blocks
 * (only `listen` added, port 0, and the /srv paths moved to a temp dir) merged into one config and
 * served by the real CLI (`proxycore serve`), the guide's hello.sh, a perl script run by the
 * section 2 interpreter, php-cgi with the section 3 route; then the section 7 table's rows as the
 * log shows them, and the section 6 fork servers as `ps` shows them (compiled, and Perl with
 * PROXYCORE_FORK_SERVER=perl). Section 4 (git) is in guide-git-claims.test.ts.
 */
import t, { type Test } from 'tap'
import { readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { parse } from 'yaml'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { havePeer, parseEnv, tempDir, writeScripts } from '../cgi/harness.js'
import { killAtTeardown, root, runCli, serve, type Served } from '../cli/run.js'
import { guideBlocks } from './snippets.js'

type Tap = Test

const GUIDE = join(root, 'docs/guides/cgi-and-git.md')
const block = guideBlocks(GUIDE)
const PHP_CGI = '/usr/bin/php-cgi'
const PERL = '/usr/bin/perl'

interface Site { dir: string, cgiBin: string, perlDir: string, www: string, config: string }

/** Sections 1, 2 and 3's yaml merged into one config, /srv/... moved under a temp dir. */
function site (t: Tap): Site {
  const dir = tempDir(t, 'pc-doc-cgi-')
  const cgiBin = join(dir, 'cgi-bin')
  const perlDir = join(dir, 'perl')
  const www = join(dir, 'www')
  const config: { listen: string, spawns: Record<string, unknown>, routes: unknown[] } = { listen: '127.0.0.1:0', spawns: {}, routes: [] }
  for (const heading of ['## 1. A cgi-bin', '## 2. An interpreter in front of the scripts', '## 3. php-cgi as a plain CGI']) {
    const text = block(heading, 'yaml').replace('/srv/cgi-bin', cgiBin).replace('/srv/perl', perlDir).replace('/srv/www', www)
    const part = parse(text) as { spawns: Record<string, unknown>, routes: unknown[] }
    Object.assign(config.spawns, part.spawns)
    config.routes.push(...part.routes)
  }
  // The guide's hello.sh, as written, mode 0755.
  writeScripts(cgiBin, {
    'hello.sh': block('`/srv/cgi-bin/hello.sh`', 'sh'),
    'env.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nenv\n",
    'badshebang.sh': "#!/nonexistent/interpreter\nprint 1\n",
    'nosep.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n'\n",
    'cr.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\nX-A: a\\rb\\n\\nbody'\n",
    'te.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\nTransfer-Encoding: chunked\\n\\n'\n",
    'status.sh': "#!/bin/sh\nprintf 'Status: 2000\\nContent-Type: text/plain\\n\\n'\n",
    'nocolon.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\nNoColon\\n\\n'\n",
    'fold.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\nX-A: a\\n b\\n\\n'\n",
    'twoct.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Type: text/html\\n\\n'\n",
    'fail-after.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nbody'\nexit 3\n",
    'stays.sh': "#!/bin/sh\necho $$ > stays.pid\nprintf 'Content-Type: text/plain\\nContent-Length: 4\\n\\ndone'\nexec sleep 300\n",
    'stderr.sh': "#!/bin/sh\necho 'something went wrong here' >&2\nprintf 'Content-Type: text/plain\\n\\nok'\n",
    // Ignores SIGTERM (and so does the sleep it becomes): only SIGKILL, stopTimeout later, ends it.
    'ignoreterm.sh': "#!/bin/sh\ntrap '' TERM\necho $$ > ignoreterm.pid\nprintf 'Content-Type: text/plain\\n\\nstarted'\nexec sleep 300\n",
  })
  writeScripts(cgiBin, { 'noexec.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nran'\n" }, 0o644)
  // Section 2: no execute bit and no #! line needed; -wT are the operator's flags.
  writeScripts(perlDir, {
    'flags.pl': 'print "Content-Type: text/plain\\n\\n"; print "taint=${^TAINT} warnings=$^W script=$0 path=", (defined $ENV{PATH} ? "set" : "unset"), "\\n";\n',
    'x.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nsh'\n",
  }, 0o644)
  writeScripts(www, { 'i.php': '<?php echo "php ", PHP_SAPI, " ", $_SERVER["REDIRECT_STATUS"], " ", $_SERVER["SCRIPT_FILENAME"], "\\n";' }, 0o644)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, JSON.stringify(config, null, 2))
  return { dir, cgiBin, perlDir, www, config: file }
}

/** Serve `config`; SIGKILL its group at teardown if the test did not stop it. */
async function served (t: Tap, config: string, env: NodeJS.ProcessEnv = {}): Promise<Served> {
  const s = await serve(config, env)
  killAtTeardown(t, s, () => [])
  return s
}

/** SIGTERM and wait (deadline) for exit code 0. */
async function stop (t: Tap, s: Served): Promise<void> {
  s.child.kill('SIGTERM')
  const timer = new Promise<'timeout'>((resolve) => { const h = setTimeout(() => resolve('timeout'), 20_000); void s.exited.then(() => clearTimeout(h)) })
  t.equal(await Promise.race([s.exited, timer]), 0, 'SIGTERM: proxycore exits 0 within 20 s')
}

/** The fork-server helpers the proxy `pid` runs: pid, argv, executable. */
function helpers (pid: number): Array<{ pid: number, args: string[], exe: string }> {
  const out: Array<{ pid: number, args: string[], exe: string }> = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== pid) continue
      const args = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').filter((a) => a !== '')
      if (!args.join(' ').includes('proxycore-fork-server')) continue
      out.push({ pid: Number(name), args, exe: readlinkSync(`/proc/${name}/exe`) })
    } catch {}
  }
  return out
}

function logsOf (s: Served, pred: (l: Record<string, unknown>) => boolean): Array<Record<string, unknown>> {
  return s.logs().filter(pred)
}

t.test('sections 1-3 as written, served by proxycore serve', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PERL) || !havePeer(t, PHP_CGI)) return
  const st = site(t)
  const s = await served(t, st.config, { PROXYCORE_DOC_SECRET: 'host-only' })

  const hello = await get(`${s.url}/cgi-bin/hello.sh/world`)
  t.equal(hello.status, 200)
  t.equal(hello.body.toString(), 'Hello 127.0.0.1, you asked for /world\n', 'the curl output the guide shows')

  const env = parseEnv((await get(`${s.url}/cgi-bin/env.sh/a?q=1`)).body.toString())
  t.equal(env.SCRIPT_NAME, '/cgi-bin/env.sh', 'stripPrefix: SCRIPT_NAME keeps /cgi-bin/x.sh')
  t.equal(env.SCRIPT_FILENAME, join(st.cgiBin, 'env.sh'), '/cgi-bin/x.sh → <docroot>/x.sh')
  t.equal(env.PATH, process.env.PATH, 'copyEnvironment: [PATH]')
  t.notOk('PROXYCORE_DOC_SECRET' in env, 'no other host variable')
  const meta = /^(GATEWAY_INTERFACE|SERVER_\w+|REMOTE_\w+|REQUEST_\w+|QUERY_STRING|SCRIPT_\w+|PATH_INFO|DOCUMENT_ROOT|HTTP_\w+)$/
  // Not the host's: the spawn layer's marker (docs/guides/spawn.md), and what /bin/sh sets itself.
  const shell = /^(PWD|SHLVL|_|OLDPWD)$/
  t.same(Object.keys(env).filter((k) => !meta.test(k) && !shell.test(k)).sort(), ['PATH', 'PROXYCORE_SPAWN'], 'besides the meta-variables: PATH and the spawn marker only')
  t.equal(env.PROXYCORE_SPAWN, 'cgi', 'the marker names the spawn')
  t.match(readFileSync(GUIDE, 'utf8').replace(/\s+/g, ' '), 'the route\'s `params`, and `PROXYCORE_SPAWN=<spawn name>`', 'the guide lists what the environment holds, the marker too')

  const pl = await get(`${s.url}/perl/flags.pl`)
  t.equal(pl.status, 200, 'a .pl file without execute bit nor #! line runs through binPath')
  t.equal(pl.body.toString(), `taint=1 warnings=1 script=${join(st.perlDir, 'flags.pl')} path=unset\n`, 'perl -wT in front of the script path')
  const other = await get(`${s.url}/perl/x.sh`)
  t.equal(other.status, 404, 'only .pl files run (other paths: no route, 404)')
  t.match(other.body.toString(), 'ERR_NO_ROUTE')

  const php = await get(`${s.url}/php/i.php`)
  t.equal(php.status, 200)
  t.equal(php.body.toString(), `php cgi-fcgi 200 ${join(st.www, 'i.php')}\n`, 'php-cgi as a CGI, REDIRECT_STATUS from the route, the script from SCRIPT_FILENAME')

  // Section 6: one helper per pipe spawn that served a request, named in ps.
  const pid = s.child.pid as number
  const hs = helpers(pid)
  t.equal(hs.length, 3, 'three pipe spawns served a request: three fork servers')
  for (const h of hs) {
    t.match(h.args.join(' '), /proxycore-fork-server \/\S+\/stdio\.sock$/, 'ps: proxycore-fork-server <socket>')
    t.equal(h.exe, join(root, 'native/build/proxycore-fork-server'), 'the compiled helper (built here)')
  }
  // "a manager of its own, so a reload can keep it running"
  const before = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reloaded', before)
  t.equal((await get(`${s.url}/cgi-bin/hello.sh/again`)).body.toString(), 'Hello 127.0.0.1, you asked for /again\n', 'served after the reload')
  t.same(helpers(pid).map((h) => h.pid).sort(), hs.map((h) => h.pid).sort(), 'a reload keeps the same helpers running')
  await stop(t, s)
  t.ok(await waitFor(() => hs.every((h) => !alive(h.pid)), 10_000), 'the helpers are gone with the proxy')
})

t.test('section 6: PROXYCORE_FORK_SERVER=perl picks the Perl helper where the compiled one is built', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PERL) || !havePeer(t, PHP_CGI)) return
  const st = site(t)
  const s = await served(t, st.config, { PROXYCORE_FORK_SERVER: 'perl' })
  t.equal((await get(`${s.url}/cgi-bin/hello.sh/perl`)).body.toString(), 'Hello 127.0.0.1, you asked for /perl\n')
  const hs = helpers(s.child.pid as number)
  t.equal(hs.length, 1, 'one pipe spawn served: one helper')
  t.equal(hs[0]?.exe, PERL, 'it is perl')
  t.match(hs[0]?.args.join(' '), /^proxycore-fork-server \/\S+\/stdio\.sock$/, 'ps: proxycore-fork-server <socket>')
  await stop(t, s)
  t.ok(await waitFor(() => hs.every((h) => !alive(h.pid)), 10_000), 'the helper is gone with the proxy')
})

t.test('section 7: each row as the client and the log see it', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PERL) || !havePeer(t, PHP_CGI)) return
  const st = site(t)
  const s = await served(t, st.config)
  const code = async (path: string): Promise<[number, string]> => {
    const r = await get(`${s.url}${path}`)
    return [r.status, /ERR_[A-Z_]+/.exec(r.body.toString())?.[0] ?? '']
  }
  // The client's answer can come before the CLI's log line is read back (a loaded machine): wait for it.
  const errorLine = async (c: string, file: string): Promise<Record<string, unknown> | undefined> => {
    const find = (): Record<string, unknown> | undefined => logsOf(s, (l) => l.code === c && String(l.url).includes(file))[0]
    await waitFor(() => find() !== undefined, 10_000)
    return find()
  }

  // The table says which code each fault gets: the rows checked below.
  const guide = readFileSync(GUIDE, 'utf8')
  const row = (c: string): string => new RegExp('^\\| 502 `' + c + '` \\| (.*) \\|$', 'm').exec(guide)?.[1] ?? ''
  t.match(row('ERR_CGI_SPAWN'), /no execute bit \(`EACCES`\)[^]*`#!` line at all is not an error: `\/bin\/sh` runs it/, 'guide: ERR_CGI_SPAWN row')
  t.match(row('ERR_CGI_EXIT'), /headers without the blank line after them/, 'guide: a head without its blank line is ERR_CGI_EXIT')
  t.match(row('ERR_BAD_RESPONSE_HEADER'), /CR in a value, a line without a colon[^]*continuation line, `Transfer-Encoding`/, 'guide: ERR_BAD_RESPONSE_HEADER row')
  t.match(row('ERR_BAD_RESPONSE'), /a bad `Status`[^]*`Content-Type`[^]*given twice/, 'guide: ERR_BAD_RESPONSE row')
  t.notMatch(row('ERR_BAD_RESPONSE'), /blank line/)

  t.same(await code('/cgi-bin/noexec.sh'), [502, 'ERR_CGI_SPAWN'], 'no execute bit')
  t.match(String((await errorLine('ERR_CGI_SPAWN', 'noexec.sh'))?.msg), `spawn ${join(st.cgiBin, 'noexec.sh')} EACCES`, 'the log line names the file and the errno')
  t.same(await code('/cgi-bin/badshebang.sh'), [502, 'ERR_CGI_SPAWN'], 'bad #! line')
  t.match(String((await errorLine('ERR_CGI_SPAWN', 'badshebang.sh'))?.msg), `spawn ${join(st.cgiBin, 'badshebang.sh')} ENOENT`)

  t.same(await code('/cgi-bin/nosep.sh'), [502, 'ERR_CGI_EXIT'], 'no blank line after the headers, then exit: ERR_CGI_EXIT (the head never ended)')
  t.same(await code('/cgi-bin/cr.sh'), [502, 'ERR_BAD_RESPONSE_HEADER'], 'CR in a value')
  t.same(await code('/cgi-bin/te.sh'), [502, 'ERR_BAD_RESPONSE_HEADER'], 'Transfer-Encoding')
  t.same(await code('/cgi-bin/status.sh'), [502, 'ERR_BAD_RESPONSE'], 'a bad Status')
  t.same(await code('/cgi-bin/nocolon.sh'), [502, 'ERR_BAD_RESPONSE_HEADER'], 'a line without a colon')
  t.same(await code('/cgi-bin/fold.sh'), [502, 'ERR_BAD_RESPONSE_HEADER'], 'a continuation line')
  t.same(await code('/cgi-bin/twoct.sh'), [502, 'ERR_BAD_RESPONSE'], 'Content-Type given twice')

  const failed = await get(`${s.url}/cgi-bin/fail-after.sh`)
  t.same([failed.status, failed.body.toString()], [200, 'body'], 'the response was sent')
  t.ok(await waitFor(() => logsOf(s, (l) => l.msg === 'CGI program exited with a failure status after its response' && l.code === 3).length === 1, 10_000),
    'warn "CGI program exited with a failure status after its response", with the exit code')

  const stderr = await get(`${s.url}/cgi-bin/stderr.sh`)
  t.equal(stderr.body.toString(), 'ok')
  t.ok(await waitFor(() => logsOf(s, (l) => l.stream === 'stderr' && l.msg === 'something went wrong here').length === 1, 10_000), 'script stderr goes to the log')

  const started = Date.now()
  const stays = await get(`${s.url}/cgi-bin/stays.sh`)
  t.same([stays.status, stays.body.toString()], [200, 'done'], 'a Content-Length response ends at its length')
  const leader = Number(readFileSync(join(st.cgiBin, 'stays.pid'), 'utf8'))
  t.ok(await waitFor(() => logsOf(s, (l) => l.msg === 'CGI program still running after its complete response: stopped').length === 1, 30_000),
    'warn "CGI program still running after its complete response: stopped"')
  const after = Date.now() - started
  t.ok(after >= 4500, `after linger's default 5 s (${after} ms)`)
  t.ok(await waitFor(() => !alive(leader), 10_000), 'and the script is gone')
  // Section 5: on a client disconnect the group gets SIGTERM, then SIGKILL after the spawn's stopTimeout (2s).
  const gone = await new Promise<number>((resolve, reject) => {
    const req = request(`${s.url}/cgi-bin/ignoreterm.sh`, { agent: false }, (res) => {
      res.once('data', () => { req.destroy(); resolve(Date.now()) })
    })
    req.on('error', (err) => { if (!req.destroyed) reject(err) })
    req.end()
  })
  const term = Number(readFileSync(join(st.cgiBin, 'ignoreterm.pid'), 'utf8'))
  t.ok(await waitFor(() => !alive(term), 20_000), 'a script that ignores SIGTERM is gone after a client disconnect')
  const killedAfter = Date.now() - gone
  t.comment(`SIGTERM ignored: gone ${killedAfter} ms after the disconnect`)
  t.ok(killedAfter >= 1500 && killedAfter < 15_000, `SIGKILL came after stopTimeout 2s (${killedAfter} ms)`)
  await stop(t, s)

  // The row's other case: a CGI route naming a spawn that is not a pipe spawn.
  const cfg = JSON.parse(readFileSync(st.config, 'utf8')) as { spawns: Record<string, Record<string, unknown>> }
  cfg.spawns.cgi = { binPath: PHP_CGI, socketName: '127.0.0.1:0' }
  const bad = join(st.dir, 'bad.yaml')
  writeFileSync(bad, JSON.stringify(cfg))
  const check = await runCli(['check', bad])
  t.equal(check.code, 2, 'a config file with it does not load: proxycore check exits 2')
  t.match(check.stderr, /\/routes\/0\/spawn: protocol cgi starts one process per request: its spawn needs socketType: pipe/, 'and says why')
})
