/**
 * docs/guides/php.md walked as a new user, through the real CLI (`proxycore serve`) and real
 * php-cgi: "Running it" (the guide's commands, curl included, against examples/php-site), the
 * section 1 config as written (php-cgi's 4 workers learned through FCGI_GET_VALUES: never more
 * connections than workers), and section 3's php-cgi-as-CGI config. Only paths and ports change.
 */
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { alive, guardLeaks, readProc, waitFor } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { havePeer, PHP_CGI, PHP_FPM, startPhpFpm, tempDir } from '../fastcgi/helpers/peers.js'
import { root, serve, type Served } from '../cli/run.js'
import { guideBlocks, must } from './snippets.js'

type Tap = Test
const execFileP = promisify(execFile)
const GUIDE = join(root, 'docs/guides/php.md')
const block = guideBlocks(GUIDE)
const EXAMPLE_WWW = join(root, 'examples/php-site/www')

/** Every live descendant of `pid` (php-cgi's master and the workers it forked). */
function descendants (pid: number): number[] {
  const kids = new Map<number, number[]>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const p = readProc(Number(name))
    if (p === null || p.state === 'Z') continue
    kids.set(p.ppid, [...(kids.get(p.ppid) ?? []), p.pid])
  }
  const out: number[] = []
  const todo = [pid]
  while (todo.length > 0) {
    for (const c of kids.get(todo.pop() as number) ?? []) { out.push(c); todo.push(c) }
  }
  return out
}

/** `proxycore serve config`; at teardown SIGKILL it and every process it was seen to start. */
async function served (t: Tap, config: string, env: NodeJS.ProcessEnv = {}): Promise<Served & { seen: Set<number>, remember: () => number[] }> {
  const s = await serve(config, env)
  const seen = new Set<number>()
  const remember = (): number[] => { const d = descendants(s.child.pid as number); for (const p of d) seen.add(p); return d }
  t.teardown(async () => {
    remember()
    try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {}
    for (const p of seen) { try { process.kill(p, 'SIGKILL') } catch {} }
    await Promise.race([s.exited, new Promise((resolve) => setTimeout(resolve, 10_000).unref())])
    await waitFor(() => [...seen].every((p) => !alive(p)), 10_000)
  })
  return Object.assign(s, { seen, remember })
}

/** SIGTERM, exit 0 within 20 s, and none of the processes it started left. */
async function stops (t: Tap, s: Served & { seen: Set<number>, remember: () => number[] }): Promise<void> {
  s.remember()
  s.child.kill('SIGTERM')
  const code = await Promise.race([s.exited, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 20_000).unref())])
  t.equal(code, 0, 'SIGTERM: proxycore exits 0')
  t.ok(await waitFor(() => [...s.seen].every((p) => !alive(p)), 10_000), `no php-cgi left (${[...s.seen].join(' ')})`)
}

t.test('"Running it": the guide\'s commands against examples/php-site', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  const sh = block('### Running it', 'sh').split('\n').filter((l) => l !== '')
  t.equal(sh[0], 'npm run build')
  t.match(sh[1], /^node dist\/cli\/main\.js serve examples\/php-site\/proxycore\.yaml +# port 8080 taken\? PHP_SITE_LISTEN=127\.0\.0\.1:8081 node \.\.\.$/)
  // The port moved the way the comment says, to one the OS picks.
  const s = await served(t, join(root, 'examples/php-site/proxycore.yaml'), { PHP_SITE_LISTEN: '127.0.0.1:0' })
  const curls = sh.filter((l) => l.startsWith('curl '))
  t.equal(curls.length, 4, 'four curl commands')
  const outs: string[] = []
  const comments: string[] = []
  for (const line of curls) {
    const at = line.indexOf(' # ')
    const cmd = must(line.slice(0, at).trim(), 'http://127.0.0.1:8080', s.url)
    comments.push(line.slice(at + 3).trim())
    outs.push((await execFileP('/bin/sh', ['-c', cmd], { timeout: 30_000 })).stdout)
  }
  const home = new RegExp(comments[0].replace(/ \.\.\.$/, '').replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace('<n>', '\\d+'))
  t.match(outs[0], home, `curl / prints ${comments[0]}`)
  t.equal(outs[1].trim(), comments[1], 'the form POST')
  t.equal(outs[2].trim().split('\n').join(' '), comments[2], 'SCRIPT_NAME, PATH_INFO and QUERY_STRING as PHP sees them')
  t.match(comments[3], /^403 ERR_SCRIPT_FORBIDDEN$/)
  const head = outs[3].split('\r\n\r\n')[0]
  const body = outs[3].slice(head.length + 4)
  t.match(head, /^HTTP\/1\.1 403 Forbidden\r\n/, '/uploads/photo.jpg/x.php: 403')
  // "The upload.jpg/x.php defence": the answer the guide prints, status line and body.
  const shown = block('### The `upload.jpg/x.php` defence', '').split('\n')
  t.equal(shown[0], 'HTTP/1.1 403 Forbidden')
  t.equal(body, shown.slice(2).join('\n'), 'the body the guide shows')
  const line = s.logs().find((l) => l.code === 'ERR_SCRIPT_FORBIDDEN')
  t.ok(line, 'a log line with code ERR_SCRIPT_FORBIDDEN')
  t.match(JSON.stringify(line), "script does not match the route's extensions (.php)", 'naming the rule, as the guide quotes it')
  await stops(t, s)
})

t.test('section 1 as written: php-cgi with PHP_FCGI_CHILDREN 4 gets at most 4 connections', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  const dir = tempDir(t, 'pc-doc-php-')
  const www = join(dir, 'www')
  await execFileP('/bin/cp', ['-r', EXAMPLE_WWW, www])
  writeFileSync(join(www, 'slow.php'), '<?php usleep(300000); echo getmypid();')
  let yaml = must(block('## 1. php-cgi spawned by proxycore', 'yaml'), 'listen: 127.0.0.1:8080', 'listen: 127.0.0.1:0')
  yaml = must(yaml, /docroot: \/srv\/www/g, `docroot: ${JSON.stringify(www)}`)
  t.match(yaml, 'PHP_FCGI_CHILDREN: "4"')
  writeFileSync(join(dir, 'proxycore.yaml'), yaml)
  const s = await served(t, join(dir, 'proxycore.yaml'))

  const r = await get(`${s.url}/`)
  t.equal(r.status, 200)
  t.match(r.body.toString(), /via cgi-fcgi/, '/ runs index.php (home route)')
  const php = s.remember().filter((p) => readProc(p)?.comm === 'php-cgi')
  t.equal(php.length, 5, 'php-cgi: a master and 4 workers')
  const master = php.find((p) => readProc(p)?.ppid === s.child.pid) as number
  const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${master}/status`, 'utf8'))?.[1]
  t.equal(uid, String(process.getuid?.()), 'no user/group/tenant: php-cgi runs as the user proxycore runs as')
  const port = listeningPort(master)
  t.ok(port > 0, `php-cgi listens on 127.0.0.1:${port} (its fd 0)`)

  let most = 0
  let sampling = true
  const sampler = (async () => { while (sampling) { most = Math.max(most, connectionsTo(s.child.pid as number, port)); await new Promise((resolve) => setTimeout(resolve, 5)) } })()
  const all = await Promise.all(Array.from({ length: 12 }, async () => await get(`${s.url}/slow.php`)))
  sampling = false
  await sampler
  t.same(all.map((x) => x.status), Array(12).fill(200), '12 concurrent requests, all 200')
  t.ok(new Set(all.map((x) => x.body.toString())).size <= 4, 'served by the 4 workers')
  t.equal(most, 4, `connections to php-cgi at once: ${most}, never more than its 4 workers (FCGI_MAX_CONNS)`)
  await stops(t, s)
})

/** The TCP port of the listening socket a process holds as fd 0. */
function listeningPort (pid: number): number {
  const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/0`))?.[1]
  for (const row of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = row.trim().split(/\s+/)
    if (f[9] === inode && f[3] === '0A') return parseInt(f[1].split(':')[1], 16)
  }
  return 0
}

/**
 * Established TCP connections from process `pid` to 127.0.0.1:`port`, counted by socket inode:
 * /proc/net/tcp is read in pages, and a socket table that changes between two reads can list a
 * row twice (a CI run under load once counted 8 here for 4 connections); other processes'
 * connections to another address with the same port number are not ours either.
 */
function connectionsTo (pid: number, port: number): number {
  const remote = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`
  const mine = new Set<string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let link = ''
    try { link = readlinkSync(`/proc/${pid}/fd/${fd}`) } catch { continue } // closed meanwhile
    const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1]
    if (inode !== undefined) mine.add(inode)
  }
  const seen = new Set<string>()
  for (const row of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = row.trim().split(/\s+/)
    if (f[2] === remote && f[3] === '01' && mine.has(f[9])) seen.add(f[9])
  }
  return seen.size
}

t.test('section 3 as written: php-cgi as a plain CGI, SCRIPT_NAME with the prefix, no argv from the query', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  const dir = tempDir(t, 'pc-doc-php-')
  const www = join(dir, 'www')
  await execFileP('/bin/cp', ['-r', EXAMPLE_WWW, www])
  const yaml = must(block('## 3. php-cgi as a plain CGI', 'yaml'), 'docroot: /srv/www', `docroot: ${JSON.stringify(www)}`)
  writeFileSync(join(dir, 'proxycore.yaml'), `listen: 127.0.0.1:0\n${yaml}`)
  const s = await served(t, join(dir, 'proxycore.yaml'))
  const r = await get(`${s.url}/cgi/page.php/x`)
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'SCRIPT_NAME=/cgi/page.php\nPATH_INFO=/x\nQUERY_STRING=\n', 'the guide: SCRIPT_NAME=/cgi/page.php, PATH_INFO=/x')
  // CVE-2012-1823: `?-s` as php-cgi's argv would print the script's highlighted source.
  const q = await get(`${s.url}/cgi/page.php?-s`)
  t.equal(q.status, 200)
  t.equal(q.body.toString(), 'SCRIPT_NAME=/cgi/page.php\nPATH_INFO=\nQUERY_STRING=-s\n', '?-s is a query string, not an option')
  await stops(t, s)
})

t.test('section 2 as written, with a private php-fpm pool: answers, graceful reload, down, up again', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_FPM)) return
  const dir = tempDir(t, 'pc-doc-phpfpm-')
  const www = join(dir, 'www')
  await execFileP('/bin/cp', ['-r', EXAMPLE_WWW, www])
  const started = join(dir, 'started')
  writeFileSync(join(www, 'slow.php'), `<?php touch(${JSON.stringify(started)}); $t = microtime(true); sleep(3); echo 'slept ', round((microtime(true) - $t) * 1000, -2);`)
  const fpmDir = join(dir, 'fpm')
  mkdirSync(fpmDir)
  let fpm = await startPhpFpm(t, fpmDir, 5)
  let yaml = must(block('## 2. An external php-fpm pool', 'yaml'), /unix:\/run\/php\/php8\.2-fpm\.sock/g, `unix:${fpm.socketPath}`)
  yaml = must(yaml, /docroot: \/srv\/www/g, `docroot: ${JSON.stringify(www)}`)
  t.match(yaml, 'options: { maxConnections: 5 }')
  writeFileSync(join(dir, 'proxycore.yaml'), `listen: 127.0.0.1:0\n${yaml}`)
  const s = await served(t, join(dir, 'proxycore.yaml'))
  const post = async (): Promise<Awaited<ReturnType<typeof get>>> => await get(`${s.url}/form.php`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'name=Ada' })

  const home = await get(`${s.url}/`)
  t.equal(home.status, 200)
  t.match(home.body.toString(), /<h1>PHP 8\.2\.\d+ via fpm-fcgi<\/h1>/, 'PHP_SAPI fpm-fcgi')
  t.equal((await get(`${s.url}/page.php/hello/world?x=1`)).body.toString(), 'SCRIPT_NAME=/page.php\nPATH_INFO=/hello/world\nQUERY_STRING=x=1\n', 'the same answers as php-cgi')
  t.equal((await post()).body.toString(), '<p>Hello, Ada!</p>\n')
  t.equal((await get(`${s.url}/uploads/photo.jpg/x.php`)).status, 403, '/uploads/photo.jpg/x.php answered 403')

  // Reloads: SIGUSR2 while a request sleeps. The running request is either finished by its worker
  // (200 with the script's whole output; the reload's SIGQUIT may cut the sleep short) or its worker
  // is killed (502), never a hang; the next requests on the reloaded pool are answered.
  const slow = get(`${s.url}/slow.php`)
  t.ok(await waitFor(() => existsSync(started), 10_000), 'the slow request is running')
  process.kill(fpm.child.pid as number, 'SIGUSR2')
  // A request sent while the reload runs is answered 200 as a rule (11 of 11 runs on a quiet
  // machine); under load it may reach a worker the reload is stopping: a 502 from the backend side.
  const during = await get(`${s.url}/page.php`)
  t.comment(`the request sent during the reload: ${during.status} ${during.body.toString().trim().replace(/\n/g, ' ')}`)
  if (during.status === 200) t.match(during.body.toString(), /^SCRIPT_NAME=\/page\.php\n/, 'a request sent during the reload is answered')
  else t.match(`${during.status} ${during.body.toString()}`, /^502 .*ERR_(BACKEND_(RESET|CLOSED)|CONNECT_(REFUSED|FAILED))/s, 'or it reached a worker the reload stopped: 502, never a hang')
  const cut = await slow
  if (cut.status === 200) t.match(cut.body.toString(), /^slept (\d{1,3}|[12]\d{3}|3000)$/, 'the running request finished: its whole output')
  else t.match(`${cut.status} ${cut.body.toString()}`, /^502 .*ERR_BACKEND_(RESET|CLOSED)/s, 'or its worker was killed: 502')
  t.comment(`the request running during the reload: ${cut.status} ${cut.body.toString().trim().replace(/\n/g, ' ')}`)
  const after = await Promise.all([...Array.from({ length: 6 }, async () => await get(`${s.url}/page.php`)), ...Array.from({ length: 4 }, post)])
  t.same(after.map((r) => r.status), Array(10).fill(200), 'after the reload: GETs and POSTs answered 200')

  // php-fpm stopped: every request fails at once with 502 ERR_CONNECT_REFUSED.
  const exited = new Promise((resolve) => fpm.child.once('exit', resolve))
  process.kill(-(fpm.child.pid as number), 'SIGTERM')
  await exited
  for (const ask of [async () => await get(`${s.url}/page.php`), post]) {
    const t0 = Date.now()
    const r = await ask()
    const ms = Date.now() - t0
    t.equal(r.status, 502, 'php-fpm down: 502')
    t.match(r.body.toString(), /ERR_CONNECT_REFUSED/)
    t.ok(ms < 2000, `at once: ${ms} ms`)
  }
  fpm = await startPhpFpm(t, fpmDir, 5)
  t.equal((await get(`${s.url}/page.php`)).status, 200, 'php-fpm started again: 200')
  t.equal((await post()).status, 200)
  await stops(t, s)
})

t.test('"The site\'s static files" as written: PHP runs, assets are served, never PHP source', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  const dir = tempDir(t, 'pc-doc-php-')
  const www = join(dir, 'www')
  await execFileP('/bin/cp', ['-r', EXAMPLE_WWW, www])
  writeFileSync(join(www, 'site.css'), 'body { color: red }\n')
  writeFileSync(join(www, '.user.ini'), 'display_errors=1\n')
  const yaml = must(block('### The site\'s static files', 'yaml'), /docroot: \/srv\/www/g, `docroot: ${JSON.stringify(www)}`)
  writeFileSync(join(dir, 'proxycore.yaml'), `listen: 127.0.0.1:0\n${yaml}`)
  const s = await served(t, join(dir, 'proxycore.yaml'))
  t.match((await get(`${s.url}/`)).body.toString(), /via cgi-fcgi/, '/ runs index.php')
  // The snippet's spawn sets PHP_FCGI_CHILDREN, so php-cgi gets PHP_FCGI_MAX_REQUESTS=0 and never
  // exits after its own default of 500 requests (see the claims test for the spawn without it).
  const master = s.remember().find((p) => readProc(p)?.comm === 'php-cgi' && readProc(p)?.ppid === s.child.pid) as number
  t.ok(readFileSync(`/proc/${master}/environ`, 'utf8').split('\0').includes('PHP_FCGI_MAX_REQUESTS=0'), 'php-cgi runs with PHP_FCGI_MAX_REQUESTS=0')
  const css = await get(`${s.url}/site.css`)
  t.equal(css.status, 200)
  t.equal(css.body.toString(), 'body { color: red }\n', 'the static route serves the asset')
  t.ok(css.headers.etag !== undefined && css.headers['last-modified'] !== undefined, 'with ETag and Last-Modified')
  t.equal((await get(`${s.url}/site.css`, { headers: { 'if-none-match': css.headers.etag as string } })).status, 304)
  t.equal((await get(`${s.url}/site.css`, { method: 'POST', body: 'x' })).status, 405, 'GET and HEAD only')
  const ini = await get(`${s.url}/.user.ini`)
  t.equal(ini.status, 404, '.user.ini is a 404')
  t.notMatch(ini.body.toString(), /display_errors/)
  const php = await get(`${s.url}/page.php`)
  t.notMatch(php.body.toString(), /<\?php/, 'a .php request runs, its source is never handed out')
  await stops(t, s)
})
