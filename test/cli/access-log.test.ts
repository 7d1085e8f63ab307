/**
 * `accessLog` of the operator file, through the real `proxycore serve` with a node:http backend:
 * the line of a raw HTTP/1.0 request (its version, referer and user agent, escaped), JSON lines,
 * `stdout`, SIGUSR1 after a logrotate-style rename (every request in exactly one of the two files),
 * a reload that moves the log, and a directory that does not exist (serve and check refuse it).
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { request, type ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { Raw } from '../helpers/raw-client.js'
import { backend } from '../helpers/servers.js'
import { cli, ensureBuilt, root, runCli, serveKilled } from './run.js'

interface Teardown { teardown (fn: () => void | Promise<void>): void }

function tmp (t: Teardown): string {
  const dir = mkdtempSync(join(tmpdir(), 'pc-access-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

const yaml = (port: number, accessLog: string): string => `listen: 127.0.0.1:0
${accessLog}
routes:
  - { name: app, protocol: http, backends: ['127.0.0.1:${port}'] }
`

const lines = (file: string): string[] => existsSync(file) ? readFileSync(file, 'latin1').split('\n').filter((l) => l !== '') : []

/** Wait (bounded) until `file` has `n` lines; they are written after the response went out. */
async function waitLines (file: string, n: number): Promise<string[]> {
  await waitFor(() => lines(file).length >= n, 20_000)
  return lines(file)
}

/** A GET through the proxy; resolves with the status once the body was read. */
function get (url: string, path: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { headers, agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); res.on('error', reject) })
    req.on('error', reject)
    req.end()
  })
}

/** Stop serve with SIGTERM and wait for its exit (it drains, closes the log, stops). */
async function stop (s: { child: { pid?: number, kill: (sig: NodeJS.Signals) => boolean }, exited: Promise<number | null> }): Promise<number | null> {
  s.child.kill('SIGTERM')
  return await s.exited
}

t.test('combined line of a raw HTTP/1.0 request: version, referer, user agent escaped byte by byte; file mode 0640', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tmp(t)
  const log = join(dir, 'access.log')
  const be = await backend(t, (_req, res) => { res.end('hello') })
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, yaml(be.port, 'accessLog: { path: access.log }'))
  const { s } = await serveKilled(t, file)
  const port = Number(new URL(s.url).port)
  // A tab (the one control byte node's parser lets into a header value), a quote, a backslash and
  // the latin1 byte 0xE9: each must be one \xHH in the line.
  const r2 = new Raw(port, '')
  t.teardown(() => { r2.socket.destroy() })
  r2.socket.write(Buffer.from('GET /a?q="x" HTTP/1.0\r\nHost: h\r\nReferer: http://r/"q\r\nUser-Agent: a\tb"\\\xe9\r\n\r\n', 'latin1'))
  t.ok(await r2.answered(), 'answered')
  t.equal(r2.status(), 200)
  const got = await waitLines(log, 1)
  const line = got.find((l) => l.includes('/a?q=')) ?? ''
  t.match(line, /^127\.0\.0\.1 - - \[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET \/a\?q=\\x22x\\x22 HTTP\/1\.0" 200 5 "http:\/\/r\/\\x22q" "a\\x09b\\x22\\x5C\\xE9" route=app upstream=127\.0\.0\.1:\d+ upstream_status=200 rt=\d+\.\d{3} uht=\d+\.\d{3} code=-$/, line)
  t.equal(statSync(log).mode & 0o777, 0o640 & ~process.umask(), 'created 0640 (less the umask)')
  t.equal(await stop(s), 0)
})

t.test('json lines; stdout', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tmp(t)
  const be = await backend(t, (_req, res) => { res.end('hi') })
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, yaml(be.port, 'accessLog: { path: stdout, format: json }'))
  const { s } = await serveKilled(t, file)
  t.equal(await get(s.url, '/j', { referer: 'http://ref/"x', 'user-agent': 'ua\t1' }), 200)
  await waitFor(() => s.stdout().includes('\n'), 20_000)
  const objs = s.stdout().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>)
  const j = objs.find((o) => o.url === '/j')
  t.match(j, { method: 'GET', url: '/j', httpVersion: '1.1', status: 200, bytes: 2, referer: 'http://ref/"x', userAgent: 'ua\t1', route: 'app', upstreamStatus: 200, error: null })
  t.equal(await stop(s), 0)
})

t.test('stdout closed by its reader (EPIPE): the proxy serves on', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tmp(t)
  const be = await backend(t, (_req, res) => { res.end('hi') })
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, yaml(be.port, 'accessLog: { path: stdout }'))
  const { s } = await serveKilled(t, file)
  t.equal(await get(s.url, '/one'), 200)
  await waitFor(() => s.stdout().includes('/one'), 20_000)
  s.child.stdout?.destroy()
  for (let i = 0; i < 20; i++) t.equal(await get(s.url, `/after/${i}`), 200)
  t.equal(s.child.exitCode, null, 'still running')
  t.equal(await stop(s), 0)
})

t.test('SIGUSR1 after a rename: every request in exactly one file, the later ones in the new file', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tmp(t)
  const log = join(dir, 'access.log')
  const held: ServerResponse[] = []
  const be = await backend(t, (req, res) => {
    if (req.url?.startsWith('/hold/') === true) { held.push(res); return }
    res.end('ok')
  })
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, yaml(be.port, `accessLog: { path: ${log} }`))
  const { s } = await serveKilled(t, file)
  const sent: string[] = []
  const go = async (path: string): Promise<void> => { sent.push(path); t.equal(await get(s.url, path), 200, path) }
  for (let i = 0; i < 5; i++) await go(`/before/${i}`)
  await waitLines(log, 5)
  renameSync(log, `${log}.1`)
  // In flight across the reopen: held at the backend, answered after it.
  const holds = [0, 1, 2].map((i) => go(`/hold/${i}`))
  await waitFor(() => held.length === 3, 20_000)
  // And a stream of requests while the signal arrives.
  let reopened = false
  const stream = (async () => { for (let i = 0; i < 2000 && (!reopened || i < 10); i++) await go(`/during/${i}`) })()
  const mark = s.logs().length
  process.kill(s.child.pid as number, 'SIGUSR1')
  try {
    const hit = await s.waitLog('access log reopened', mark)
    t.equal(hit.path, log)
  } finally {
    reopened = true
    await stream
  }
  for (const r of held) r.end('late')
  await Promise.all(holds)
  for (let i = 0; i < 5; i++) await go(`/after/${i}`)
  t.equal(await stop(s), 0, 'stopped; the log is closed with every line written')
  const old = lines(`${log}.1`)
  const now = lines(log)
  const paths = [...old, ...now].map((l) => /"GET (\S+) HTTP/.exec(l)?.[1])
  t.same([...paths].sort(), [...sent].sort(), 'each request once across the two files')
  t.ok(old.some((l) => l.includes('/before/4')) && !now.some((l) => l.includes('/before/')), 'earlier requests in the renamed file')
  t.ok(now.some((l) => l.includes('/hold/0')) && now.some((l) => l.includes('/after/4')), 'requests ending after the reopen in the new file')
  t.ok(!old.some((l) => l.includes('/after/')), 'none of the later ones in the renamed file')
})

t.test('SIGUSR1 when the path cannot be opened: logged, the old file stays in use', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tmp(t)
  mkdirSync(join(dir, 'logs'))
  const be = await backend(t, (_req, res) => { res.end('ok') })
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, yaml(be.port, 'accessLog: { path: logs/access.log }'))
  const { s } = await serveKilled(t, file)
  t.equal(await get(s.url, '/a'), 200)
  renameSync(join(dir, 'logs'), join(dir, 'moved'))
  const mark = s.logs().length
  process.kill(s.child.pid as number, 'SIGUSR1')
  await waitFor(() => s.logs().slice(mark).some((l) => l.code === 'ERR_ACCESS_LOG'), 20_000)
  const line = s.logs().slice(mark).find((l) => l.code === 'ERR_ACCESS_LOG')
  t.match(line?.msg, `ERR_ACCESS_LOG: cannot open the access log ${join(dir, 'logs', 'access.log')}: its directory ${join(dir, 'logs')} does not exist`)
  t.equal(await get(s.url, '/b'), 200)
  t.equal(await stop(s), 0)
  t.same(lines(join(dir, 'moved', 'access.log')).map((l) => /"GET (\S+) /.exec(l)?.[1]), ['/a', '/b'], 'both in the file still open')
})

t.test('a reload moves the log and changes its format; a reload to a missing directory is refused', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tmp(t)
  const be = await backend(t, (_req, res) => { res.end('ok') })
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, yaml(be.port, 'accessLog: { path: one.log }'))
  const { s } = await serveKilled(t, file)
  t.equal(await get(s.url, '/first'), 200)
  await waitLines(join(dir, 'one.log'), 1)
  writeFileSync(file, yaml(be.port, 'accessLog: { path: two.log, format: json }'))
  let mark = s.logs().length
  process.kill(s.child.pid as number, 'SIGHUP')
  await s.waitLog('reloaded', mark)
  t.equal(await get(s.url, '/second'), 200)
  const two = await waitLines(join(dir, 'two.log'), 1)
  t.match(JSON.parse(two[0] as string), { url: '/second', status: 200 })
  writeFileSync(file, yaml(be.port, `accessLog: { path: ${join(dir, 'no-such-dir', 'x.log')} }`))
  mark = s.logs().length
  process.kill(s.child.pid as number, 'SIGHUP')
  const refused = await s.waitLog('reload rejected; the previous config keeps serving', mark)
  t.match(JSON.stringify(refused), /ERR_ACCESS_LOG: cannot open the access log \S+no-such-dir\/x\.log: its directory \S+no-such-dir does not exist/)
  t.equal(await get(s.url, '/third'), 200)
  t.equal(await stop(s), 0)
  t.same(lines(join(dir, 'one.log')).map((l) => /"GET (\S+) /.exec(l)?.[1]), ['/first'])
  t.same(lines(join(dir, 'two.log')).map((l) => (JSON.parse(l) as { url: string }).url), ['/second', '/third'])
})

t.test('a directory that does not exist: serve does not start (exit 2), check says so', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tmp(t)
  const file = join(dir, 'proxycore.yaml')
  const missing = join(dir, 'logs', 'access.log')
  writeFileSync(file, yaml(9, `accessLog: { path: ${missing} }`))
  const served = await runCli(['serve', file], { PROXYCORE_LOG_FORMAT: 'json' })
  t.equal(served.code, 2)
  t.match(served.stderr, `ERR_ACCESS_LOG: cannot open the access log ${missing}: its directory ${join(dir, 'logs')} does not exist`)
  t.match(served.stderr, '/accessLog/path')
  t.notOk(existsSync(join(dir, 'logs')), 'no directory created')
  const checked = await runCli(['check', file])
  t.equal(checked.code, 2)
  t.match(checked.stderr, `/accessLog/path`)
  t.match(checked.stderr, `its directory ${join(dir, 'logs')} does not exist`)
})

t.test('a SIGUSR1 during the start neither opens node\'s inspector nor stops serve', async (t) => {
  guardLeaks(t, { timeoutMs: 30_000 })
  await ensureBuilt()
  const dir = tmp(t)
  const file = join(dir, 'proxycore.yaml')
  // Many included files: the start takes long enough for the signal to land before serve's handlers.
  mkdirSync(join(dir, 'conf.d'))
  for (let i = 0; i < 600; i++) writeFileSync(join(dir, 'conf.d', `r${i}.yaml`), `routes:\n  - { match: { prefix: /r${i}/ }, protocol: http, backends: ["127.0.0.1:9"] }\n`)
  writeFileSync(file, 'listen: 127.0.0.1:0\ninclude: conf.d/*.yaml\naccessLog: { path: access.log }\nroutes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n')
  // Without the test runner's NODE_OPTIONS (its preload handles signals itself).
  const child = spawn('/bin/sh', ['-c', 'unset NODE_OPTIONS; exec "$0" "$@"', process.execPath, cli, 'serve', file], { cwd: root, detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PROXYCORE_LOG_FORMAT: 'json' } })
  t.teardown(() => { try { process.kill(-(child.pid as number), 'SIGKILL') } catch {} })
  const exited = new Promise<[number | null, string | null]>((resolve) => child.once('exit', (code, signal) => resolve([code, signal])))
  let err = ''
  child.stderr.setEncoding('utf8').on('data', (c: string) => { err += c })
  // early-signals.ts has run once SIGHUP is caught (bit 0 of SigCgt; node catches SIGUSR1 from its start).
  const early = (): boolean => {
    try {
      if (!readFileSync(`/proc/${child.pid as number}/cmdline`, 'utf8').includes(cli)) return false
      const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${child.pid as number}/status`, 'utf8'))
      return m !== null && (BigInt(`0x${m[1]}`) & 1n) === 1n
    } catch { return false }
  }
  t.ok(await waitFor(() => early() || child.exitCode !== null, 10_000, 1), 'early-signals.ts loaded')
  t.notOk(err.includes('"msg":"serving"'), 'the signal comes before the proxy is serving')
  child.kill('SIGUSR1')
  t.ok(await waitFor(() => err.includes('"msg":"serving"') || child.exitCode !== null, 20_000), 'serving')
  t.notMatch(err, /Debugger listening/, 'no inspector opened')
  child.kill('SIGTERM')
  t.same(await exited, [0, null], 'and stops cleanly')
})
