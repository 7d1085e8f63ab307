/**
 * docs/getting-started.md, run as a new user runs it: every code block is taken from the markdown
 * (so a doc change that breaks a claim fails here) and run with the built package, resolved as
 * `proxycore` from a scratch project (node_modules/proxycore → this checkout, so dist/ and the
 * package's `exports` are what a user gets). The snippets hard-code ports 3000 and 8080; they run on
 * free ports instead. Checked: the curl outputs the guide shows, that SIGINT/SIGTERM stops each
 * snippet (exit 0, nothing left running), the V8/glibc command line is accepted by node, and track B
 * end to end with the real CLI: check (ok, and broken.yaml's exact report), serve's log lines, the
 * spawned app's answer, `status`, SIGHUP reload replacing the changed spawn, SIGTERM stopping it.
 * Also: the embedded proxy with a `spawns` entry stops its spawn on the snippets' Ctrl-C handler.
 * Plus the Express bullets that no other test covers (a mounted handler falls through; a proxied
 * error is answered, never passed to Express's error handler), and the ConfigError claim.
 */
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import express from 'express'
import { alive, guardLeaks, readProc, waitFor } from '../helpers/leaks.js'
import { answering, freePort, project, run, stops, text, userEnv } from './snippets.js'
import { backend, closeServer } from '../helpers/servers.js'
import { runNode } from '../helpers/run-node.js'
import { cli, ensureBuilt, killAtTeardown, root, serve } from '../cli/run.js'
import { ConfigError, createProxy, silentLogger } from '../../src/index.js'

const guide = readFileSync(join(root, 'docs/getting-started.md'), 'utf8')
const BLOCKS = [...guide.matchAll(/```(\w*)\n([\s\S]*?)```/g)].map((m) => m[2])

/** The one code block that starts with `start`. */
function block (start: string): string {
  const hits = BLOCKS.filter((b) => b.startsWith(start))
  if (hits.length !== 1) throw new Error(`${hits.length} code blocks of docs/getting-started.md start with ${JSON.stringify(start)}`)
  return hits[0]
}

await ensureBuilt()

t.test('Install: the package entry and its types resolve as `proxycore` from a project', async (t) => {
  const dir = project(t)
  writeFileSync(join(dir, 'probe.mjs'), "import * as p from 'proxycore'\nconsole.log(typeof p.createProxy, typeof p.loadConfigOrThrow, typeof p.ConfigError)\n")
  const r = await runNode(['probe.mjs'], { cwd: dir, env: userEnv })
  t.equal(r.stdout, 'function function function\n', r.stderr)
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { files: string[], exports: Record<string, { types: string }> }
  t.ok(pkg.files.includes('dist'), 'package.json `files` ships dist/')
  t.equal(pkg.exports['.'].types, './dist/index.d.ts')
})

t.test('Track A, node:http: the curl outputs, then kill -INT drains and exits', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = project(t)
  const [up, port] = [await freePort(), await freePort()]
  const code = block("import http from 'node:http'\nimport { createProxy }")
  t.match(code, /upstream\.listen\(3000, '127\.0\.0\.1'\)/)
  t.match(code, /server\.listen\(8080, '127\.0\.0\.1'/)
  writeFileSync(join(dir, 'server.mjs'), code.replaceAll('3000', String(up)).replaceAll('8080', String(port)))
  const r = run(t, dir, ['server.mjs'])
  const base = `http://127.0.0.1:${port}`
  await answering(`${base}/`, r)
  // The server may answer before its stdout line reaches this pipe (a Node 24 run read '' here).
  await waitFor(() => r.out().length >= `listening on ${base}/\n`.length, 10_000)
  t.equal(r.out(), `listening on ${base}/\n`, 'prints the line the listen callback logs')

  const shell = block('node server.mjs &\n')
  const curls = [...shell.matchAll(/^curl (?:-X (\w+) -d (\S+) )?http:\/\/127\.0\.0\.1:8080(\S+)\s+# (.+?)(?:\s{2,}\(.*\))?$/gm)]
  t.equal(curls.length, 3, 'three curl lines with their expected output')
  for (const [, method, body, path, want] of curls) {
    const got = await text(`${base}${path}`, method === undefined ? undefined : { method, body })
    t.equal(got, `${want.trim()}\n`, `curl ${method ?? 'GET'} ${path}`)
  }
  t.match(shell, /^kill -INT %1\s+# drains and exits$/m)
  await stops(t, r, 'SIGINT')
})

t.test('Track A, Express: the guide\'s upstream and its two answers; Ctrl-C (SIGINT) stops it', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = project(t)
  const [up, port] = [await freePort(), await freePort()]
  const cmd = /`node -e "([^"`]+)" &`/.exec(guide)
  if (cmd === null) throw new Error('no `node -e "..." &` upstream command in the guide')
  const upstream = run(t, dir, ['-e', cmd[1].replaceAll('3000', String(up))])
  writeFileSync(join(dir, 'express.mjs'), block("import http from 'node:http'\nimport express from 'express'").replaceAll('3000', String(up)).replaceAll('8080', String(port)))
  const r = run(t, dir, ['express.mjs'])
  const base = `http://127.0.0.1:${port}`
  await answering(`${base}/`, r)
  const section = guide.slice(guide.indexOf('### As Express middleware'), guide.indexOf('Things to know when proxycore sits'))
  const claims = [...section.matchAll(/`curl http:\/\/127\.0\.0\.1:8080(\S+)` → `([^`]+)`/g)]
  t.equal(claims.length, 2, 'two curl claims')
  for (const [, path, want] of claims) t.equal(await text(`${base}${path}`), `${want}\n`, `curl ${path}`)
  await stops(t, r, 'SIGINT')
  upstream.child.kill('SIGTERM')
  await upstream.exited
})

t.test('Track A, Fastify: `/` and a proxied `/api/` request; SIGTERM stops it', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = project(t)
  const port = await freePort()
  const server = await backend(t, (req, res) => res.end(`upstream saw ${req.method} ${req.url}\n`))
  const code = block("import Fastify from 'fastify'")
  t.match(code, /backends: \['127\.0\.0\.1:3000'\]/)
  writeFileSync(join(dir, 'fastify.mjs'), code.replaceAll('3000', String(server.port)).replaceAll('8080', String(port)))
  const r = run(t, dir, ['fastify.mjs'])
  const base = `http://127.0.0.1:${port}`
  await answering(`${base}/`, r)
  const want = /`\/` answers `([^`]+)`/.exec(guide)
  if (want === null) throw new Error('no "`/` answers" claim')
  t.equal(await text(`${base}/`), want[1], '/ is Fastify\'s own route')
  t.equal(await text(`${base}/api/users?id=7`), 'upstream saw GET /api/users?id=7\n', '/api/* is proxied')
  t.equal(await text(`${base}/api/echo`, { method: 'POST', body: 'hello', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 'upstream saw POST /api/echo\n', 'a POST with a body is proxied')
  await stops(t, r, 'SIGTERM')
})

t.test('"Spawned backends": with spawns, the snippet\'s signal handler (Ctrl-C) closes the proxy and stops them', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  t.match(guide, /Handle SIGINT and SIGTERM and call `proxy\.close\(\)`, as every snippet on this\s+page does/)
  const dir = project(t)
  writeFileSync(join(dir, 'app.mjs'), block("import http from 'node:http'\n// proxycore starts this program"))
  const code = block("import http from 'node:http'\nimport express from 'express'")
  const handler = "for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => server.close(() => proxy.close()))"
  t.ok(code.includes(handler), 'the Express snippet handles SIGINT and SIGTERM')
  t.ok(block("import Fastify from 'fastify'").includes("for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, async () => { await app.close(); await proxy.close() })"), 'so does the Fastify one')
  const port = await freePort()
  writeFileSync(join(dir, 'spawning.mjs'), code
    .replace('createProxy({', "createProxy({\n  spawns: { app: { binPath: 'node app.mjs', socketName: '127.0.0.1:0', handoff: 'self', copyEnvironment: ['PATH'], cwd: process.cwd() } },")
    .replace("backends: ['127.0.0.1:3000']", "spawn: 'app'")
    .replace('8080', String(port)))
  const r = run(t, dir, ['spawning.mjs'])
  const base = `http://127.0.0.1:${port}`
  await answering(`${base}/`, r)
  const m = /^hello from pid (\d+), you asked for \/api\/x\n$/.exec(await text(`${base}/api/x`))
  t.ok(m, 'the spawned app answers through the Express app')
  const pid = Number(m?.[1])
  t.teardown(() => { try { process.kill(-pid, 'SIGKILL') } catch {} })
  await stops(t, r, 'SIGINT')
  t.notOk(alive(pid), 'the spawned app was stopped before the server exited')
})

t.test('"Memory and speed": node accepts the command line as written', async (t) => {
  const dir = project(t)
  const line = block('MALLOC_TRIM_THRESHOLD_=').trim()
  const m = /^((?:[A-Z_]+=\S+ )+)node (.+) server\.js$/.exec(line)
  if (m === null) throw new Error(`unexpected command line: ${line}`)
  const env = { ...userEnv, ...Object.fromEntries(m[1].trim().split(' ').map((kv) => kv.split('='))) }
  const flags = m[2].split(' ')
  t.equal(flags.length, 7, 'seven node flags (plus the two glibc variables: nine settings)')
  writeFileSync(join(dir, 'server.js'), 'console.log(typeof globalThis.gc, process.env.MALLOC_TRIM_THRESHOLD_, process.env.MALLOC_ARENA_MAX)\n')
  const r = await runNode([...flags, 'server.js'], { cwd: dir, env })
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, 'function 16777216 1\n', '--expose-gc gives globalThis.gc; the glibc variables reach the process')
  // `proxycore serve` sets them itself: the command-line ones in its shebang.
  const shebang = readFileSync(cli, 'utf8').split('\n')[0]
  for (const s of ['MALLOC_TRIM_THRESHOLD_=16777216', 'MALLOC_ARENA_MAX=1', '--max-semi-space-size=1', '--initial-old-space-size=16']) t.ok(shebang.includes(s), `the CLI's shebang has ${s}`)
})

t.test('Express bullets: a mounted handler falls through; a proxied error is answered, not passed to next(err)', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const up = await backend(t, (req, res) => res.end(`upstream saw ${req.url}`))
  const proxy = await createProxy({
    logger: silentLogger,
    routes: [
      { match: { prefix: '/api/' }, protocol: 'http', backends: [up.address] },
      { match: { prefix: '/down/' }, protocol: 'http', backends: [`127.0.0.1:${await freePort()}`] },
    ],
  })
  t.teardown(() => proxy.close(1000))
  async function app (mount: boolean): Promise<{ base: string, errors: unknown[] }> {
    const a = express()
    const errors: unknown[] = []
    if (mount) a.use('/api', proxy.handler)
    else a.use(proxy.handler)
    a.use((req, res) => { res.status(418).end(`fell through ${req.originalUrl}`) })
    a.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => { errors.push(err); res.status(599).end('express error handler') })
    const server = a.listen(0, '127.0.0.1')
    await new Promise((resolve) => server.once('listening', resolve))
    t.teardown(() => closeServer(server))
    return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, errors }
  }
  const mounted = await app(true)
  const m = await fetch(`${mounted.base}/api/users`)
  t.equal(m.status, 418, "app.use('/api', proxy.handler): the request falls through")
  t.equal(await m.text(), 'fell through /api/users')

  const plain = await app(false)
  const ok = await fetch(`${plain.base}/api/users`)
  t.equal(await ok.text(), 'upstream saw /api/users', 'app.use(proxy.handler): proxied')
  const down = await fetch(`${plain.base}/down/x`)
  t.equal(down.status, 502, 'a refused backend: 502')
  t.match(await down.text(), /ERR_CONNECT_REFUSED/)
  t.same(plain.errors, [], "Express's error handler never saw it")
})

t.test('createProxy: the ConfigError lists every problem, with its path, in plain words (also without spawns)', async (t) => {
  const routes = [
    { match: { prefix: '/' }, protocol: 'htp', backends: ['127.0.0.1:1'] },
    { protocol: 'http', backends: ['127.0.0.1:2'], timeouts: { connect: 'soon' } },
  ]
  for (const extra of [{ spawns: { app: { binPath: '/bin/true', socketName: '127.0.0.1:0' } } }, {}]) {
    const err = await createProxy({ logger: silentLogger, ...extra, routes } as Parameters<typeof createProxy>[0]).then(() => null, (e: unknown) => e)
    t.ok(err instanceof ConfigError, 'a ConfigError')
    const issues = (err as ConfigError).issues
    t.same(issues.map((i) => i.path).sort(), ['/routes/0/protocol', '/routes/1/timeouts/connect'], `both problems (${Object.keys(extra).join() || 'no spawns'})`)
    t.notOk(issues.some((i) => /union/.test(i.message)), 'no TypeBox wording', { issues })
  }
})

t.test('Track B end to end: check, serve, curl, status, SIGHUP, SIGTERM', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const dir = project(t)
  const port = await freePort()
  writeFileSync(join(dir, 'app.mjs'), block("import http from 'node:http'\n// proxycore starts this program"))
  const yaml = block('listen: 127.0.0.1:8080\n')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, yaml.replace('127.0.0.1:8080', `127.0.0.1:${port}`))

  // check: ok, as shown.
  const okBlock = block('$ npx proxycore check proxycore.yaml\n').split('\n')
  const ok = await runNode([cli, 'check', 'proxycore.yaml'], { cwd: dir, env: userEnv })
  t.equal(ok.code, 0)
  t.equal(ok.stdout, `${okBlock[1]}\n`, 'check prints what the guide shows')

  // broken.yaml: proxycore.yaml with line 14 changed to `spawn: ap`, as the guide says.
  t.match(guide, /`broken\.yaml` here is `proxycore\.yaml` with line 14\s+changed to `spawn: ap`/)
  const lines = yaml.split('\n')
  t.match(lines[13], /^ {4}spawn: app\b/, 'line 14 is the route\'s spawn')
  lines[13] = lines[13].replace('spawn: app', 'spawn: ap')
  writeFileSync(join(dir, 'broken.yaml'), lines.join('\n'))
  const shown = block('$ npx proxycore check broken.yaml --explain\n').trimEnd().split('\n').slice(1)
  const bad = await runNode([cli, 'check', 'broken.yaml', '--explain'], { cwd: dir, env: userEnv })
  t.equal(bad.code, 2, 'exit code 2')
  const report = (bad.stdout + bad.stderr).trimEnd().split('\n')
  // The --explain line quotes the schema's description, which other changes may lengthen: the
  // guide shows its start. The error line and the summary are exact.
  const explained = (l: string): boolean => l.startsWith('    ')
  t.same(report.filter((l) => !explained(l)).sort(), shown.filter((l) => !explained(l)).sort(), 'the error line and the summary the guide shows')
  const [want] = shown.filter(explained)
  const [have] = report.filter(explained)
  t.ok(want !== undefined && have?.startsWith(want), 'the --explain line starts as the guide shows', { want, have })

  // serve: the two log lines, the app's answer.
  const s = await serve(file)
  killAtTeardown(t, s, () => [])
  const base = `http://127.0.0.1:${port}`
  t.equal(s.url, base)
  t.equal((await s.waitLog('listening')).address, base, '"listening" with the address')
  t.equal((await s.waitLog('serving')).pid, s.child.pid, '"serving" carries proxycore\'s own pid')
  const hello = await text(`${base}/hello`)
  const m = /^hello from pid (\d+), you asked for \/hello\n$/.exec(hello)
  t.ok(m, `the spawned app answers: ${hello}`)
  const appPid = Number(m?.[1])
  t.equal(readProc(appPid)?.ppid, s.child.pid, 'from a process proxycore spawned')
  await text(`${base}/hello`)

  // Watch it.
  const status = await runNode([cli, 'status', `127.0.0.1:${port}`], { cwd: dir, env: userEnv })
  t.equal(status.code, 0, status.stderr)
  const table = block('proxycore/0.1.0  up').split('\n').map((l) => l.split(/\s+/))
  const got = status.stdout.split('\n').map((l) => l.split(/\s+/))
  t.same(got[2], table[2], 'the route table\'s header')
  t.same(got[3].slice(0, 4), ['app', 'http', 'app', '2'], 'route app: http, 2 requests')
  t.same(got[5], table[5], 'the spawn table\'s header')
  t.same(got[6].slice(0, 4), ['app', 'running', String(appPid), 'ready'], 'spawn app running')
  t.match(status.stdout, /^proxycore\/\S+ {2}up \S+ {2}in flight 0\n/)
  const json = await (await fetch(`${base}/server-status?format=json`)).json() as { routes: Array<{ name: string }> }
  t.equal(json.routes[0].name, 'app', '/server-status?format=json')
  t.match(await text(`${base}/metrics`), /^proxycore_inflight 0$/m, '/metrics')

  // Reload it: add maxRequests: 1000 to the app spawn, SIGHUP.
  t.match(guide, /add `maxRequests: 1000` to the `app` spawn/)
  const before = s.logs().length
  writeFileSync(file, readFileSync(file, 'utf8').replace(/^( {4}handoff: self\n)/m, '$1    maxRequests: 1000\n'))
  process.kill(s.child.pid as number, 'SIGHUP')
  await s.waitLog('SIGHUP: reloading', before)
  await s.waitLog('reloaded', before)
  const after = /^hello from pid (\d+), you asked for \/after-reload\n$/.exec(await text(`${base}/after-reload`))
  t.ok(after, 'answered after the reload')
  t.not(Number(after?.[1]), appPid, 'by a new process: the changed spawn was replaced')
  t.ok(await waitFor(() => !alive(appPid), 15_000), 'the old process is gone')

  // Stop it.
  process.kill(s.child.pid as number, 'SIGTERM')
  await s.waitLog('stopped', before)
  t.equal(await s.exited, 0, 'exits 0')
  t.notOk(alive(Number(after?.[1])), 'the spawned app is stopped with it')
})
