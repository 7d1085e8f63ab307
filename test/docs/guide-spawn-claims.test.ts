/**
 * docs/guides/spawn.md, walked as a new user: the opening snippet run as written (from a scratch
 * project importing 'proxycore', its /run and /var/log paths moved to a temp dir) with real
 * php-cgi, then the guide's claims one by one against the SpawnManager: the hand-off table, the
 * per-process socket names, `handoff: self` refusing /tmp, make-before-break recycling
 * (`standby`, `held`, the `recycle` event), the SPAWN_DEFAULTS table, the backoff, bad specs,
 * dependsOn, the log file, and the list of error codes.
 */
import t from 'tap'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { havePeer, PHP_CGI } from '../fastcgi/helpers/peers.js'
import { leakTest } from '../spawn/fixtures/guard.js'
import { ensure, manager, nextEvent, nodeBackend, tempDir } from '../spawn/fixtures/manager.js'
import { SPAWN_DEFAULTS } from '../../src/spawn/spec.js'
import { ERRORS } from '../../src/core/errors.js'
import { root } from '../cli/run.js'
import { get } from '../spawn/fixtures/http.js'
import { project, run } from './snippets.js'

const GUIDE = readFileSync(join(root, 'docs/guides/spawn.md'), 'utf8')

function section (heading: string): string {
  const at = GUIDE.indexOf(`\n## ${heading}\n`)
  if (at < 0) throw new Error(`spawn.md has no "## ${heading}"`)
  const next = GUIDE.indexOf('\n## ', at + 4)
  return GUIDE.slice(at, next < 0 ? undefined : next)
}

function must (text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`the guide's snippet no longer contains ${from}`)
  return text.split(from).join(to)
}

async function envOf (address: string): Promise<Record<string, string>> {
  return JSON.parse((await get(address, '/env')).body) as Record<string, string>
}

t.test('the opening snippet, as written, with php-cgi', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, PHP_CGI)) return
  const dir = project(t)
  const m = /```ts\n([\s\S]*?)```/.exec(GUIDE)
  if (m === null) throw new Error('spawn.md has no ts block')
  let script = m[1]
  script = must(script, "'/run/proxycore/php.sock'", JSON.stringify(join(dir, 'run', 'php.sock')))
  script = must(script, "'/run/proxycore'", JSON.stringify(join(dir, 'run')))
  script = must(script, "'/var/log/proxycore'", JSON.stringify(join(dir, 'log')))
  t.match(script, "binPath: '/usr/bin/php-cgi'")
  script = must(script, "binPath: '/usr/bin/php-cgi'", `binPath: ${JSON.stringify(PHP_CGI)}`)
  // What the guide leaves to the reader, before close(): wait for the group, then print what it runs.
  script = must(script, 'await spawns.close()', `await source.ensure(AbortSignal.timeout(20_000))
await new Promise((resolve) => { const tick = () => spawns.status()[0].processes.filter((p) => p.state === 'ready').length === 2 ? resolve() : setTimeout(tick, 20); tick() })
const { readFileSync } = await import('node:fs')
const ps = spawns.status()[0].processes
console.log('STATUS ' + JSON.stringify(ps.map((p) => ({ id: p.id, pid: p.pid, state: p.state, address: p.address, env: readFileSync('/proc/' + p.pid + '/environ', 'utf8').split('\\0').filter(Boolean) }))))
console.log('LIST ' + JSON.stringify(source.list()))
await spawns.close()
console.log('CLOSED')`)
  writeFileSync(join(dir, 'snippet.mjs'), script)
  const r = run(t, dir, ['snippet.mjs'], { PATH: process.env.PATH, TZ: 'Europe/Paris', SECRET_HOST_VAR: 'leak?' })
  const exit = await r.exited
  t.same(exit, { code: 0, signal: null }, 'the snippet runs to its end', { out: r.out() })
  const status = JSON.parse(/^STATUS (.*)$/m.exec(r.out())?.[1] ?? '[]') as Array<{ id: string, pid: number, state: string, address: string, env: string[] }>
  t.equal(status.length, 2, 'minProcs: 2 → two php-cgi processes')
  t.same(status.map((p) => p.address).sort(), [`unix:${join(dir, 'run', 'php.sock')}`, `unix:${join(dir, 'run', 'php.sock')}-1`],
    'the first on the configured path, the second on <path>-1')
  t.same(JSON.parse(/^LIST (.*)$/m.exec(r.out())?.[1] ?? '[]').map((e: { address: string }) => e.address).sort(), status.map((p) => p.address).sort(), 'source().list() shows the same real addresses')
  for (const p of status) {
    // tap's process-info hook (loaded in the snippet's node through NODE_OPTIONS) adds its own
    // variables to every child the snippet spawns; a user's run has none of them.
    t.same(p.env.filter((e) => !/^(PROXYCORE_SPAWN|NODE_OPTIONS|_TAPJS_PROCESSINFO_\w+)=/.test(e)).sort(), ['PHP_FCGI_CHILDREN=0', 'PHP_FCGI_MAX_REQUESTS=0', 'TZ=Europe/Paris'],
      'environment + copyEnvironment + PHP_FCGI_MAX_REQUESTS=0, nothing else of the host (no PATH, no SECRET_HOST_VAR)')
  }
  t.match(r.out(), /^CLOSED$/m)
  t.ok(await waitFor(() => status.every((p) => !alive(p.pid)), 10_000), 'close(): no php-cgi left')
})

leakTest(t, 'hand-off table: fd0, systemd and self give the program what the guide says', async (t, defer) => {
  const dir = tempDir(defer)
  const m = manager(defer)
  m.add('zero', { binPath: nodeBackend(), socketName: '127.0.0.1:0' })
  m.add('sd', { binPath: nodeBackend(), socketName: '127.0.0.1:0', handoff: 'systemd' })
  m.add('tcp', { binPath: nodeBackend(), socketName: '127.0.0.1:0', handoff: 'self' })
  m.add('unix', { binPath: nodeBackend(), socketName: join(dir, 'self.sock'), handoff: 'self' })
  await m.start()
  for (const n of ['zero', 'sd', 'tcp', 'unix']) await ensure(m, n)
  const at = (n: string): { address: string, pid: number } => {
    const p = m.status().find((s) => s.name === n)?.processes[0]
    if (p?.address === undefined || p.pid === null) throw new Error(`no process for ${n}`)
    return { address: p.address, pid: p.pid }
  }
  t.notMatch(at('zero').address, /:0$/, 'status() shows the real, kernel-chosen port')
  const zero = await envOf(at('zero').address)
  t.notOk('LISTEN_FDS' in zero || 'HOST' in zero || 'PORT' in zero || 'SOCKET' in zero, 'fd0 (default): nothing in the environment, the socket is fd 0')
  const sd = await envOf(at('sd').address)
  t.same([sd.LISTEN_FDS, sd.LISTEN_PID, sd.LISTEN_FDNAMES], ['1', String(at('sd').pid), 'sd'], 'systemd: LISTEN_FDS=1, LISTEN_PID, LISTEN_FDNAMES=<name>')
  const tcp = await envOf(at('tcp').address)
  t.equal(`${tcp.HOST}:${tcp.PORT}`, at('tcp').address, 'self: HOST + PORT')
  const ux = await envOf(at('unix').address)
  t.equal(`unix:${ux.SOCKET}`, at('unix').address, 'self with a unix path: SOCKET')
  t.notOk('HOST' in ux, 'and no HOST')
  t.ok(statSync(join(dir, 'self.sock')).isSocket(), 'the program bound the name itself')
})

leakTest(t, 'handoff self: a unix socket in /tmp is refused (ERR_SPAWN_SOCKET_DIR_UNSAFE)', async (t, defer) => {
  const spec = { binPath: nodeBackend(), socketName: `/tmp/pc-doc-spawn-${process.pid}.sock`, handoff: 'self' as const }
  const m = manager(defer)
  m.add('tmp', spec)
  await t.rejects(m.start(), { code: 'ERR_SPAWN_SOCKET_DIR_UNSAFE', message: /\/tmp: .*writable by group or others \(mode 1777\), sticky or not/ }, 'start() rejects')
  t.equal(m.status()[0].processes.length, 0, 'nothing was started')
  // Added to a manager already started: the spawn goes failed, with the code in reason.
  const running = manager(defer)
  await running.start()
  const failed = nextEvent(running, 'failed', (e) => e.spawn === 'tmp')
  running.add('tmp', spec)
  t.match((await failed).reason, /^ERR_SPAWN_SOCKET_DIR_UNSAFE: /)
  t.equal(running.status()[0].state, 'failed')
  t.equal(running.status()[0].processes.length, 0)
})

leakTest(t, 'maxRequests: the replacement starts a tenth before the limit, waits as standby, swaps at the limit', async (t, defer) => {
  const m = manager(defer)
  m.add('rc', { binPath: nodeBackend(), socketName: '127.0.0.1:0', maxRequests: 20, idleTimeout: 0 })
  await m.start()
  await ensure(m, 'rc')
  const src = m.source('rc')
  const [old] = src.list()
  const states = (): string[] => m.status()[0].processes.map((p) => `${p.id}:${p.state}`).sort()
  for (let i = 0; i < 17; i++) { src.requestStarted(old.id); src.requestDone(old.id) }
  t.same(states(), [`${old.id}:ready`], 'after 17 of 20 requests: no replacement yet')
  src.requestStarted(old.id); src.requestDone(old.id)
  t.equal(m.status()[0].processes.length, 2, 'at 18 (a tenth before 20) the replacement starts')
  t.ok(await waitFor(() => m.status()[0].processes.some((p) => p.id !== old.id && p.state === 'standby'), 10_000), 'it waits, ready, as standby')
  t.same(src.list().map((e) => e.id), [old.id], 'out of rotation: only the old process is listed')
  src.requestStarted(old.id); src.requestDone(old.id)
  const recycled = nextEvent(m, 'recycle')
  src.requestStarted(old.id)
  const e = await recycled
  t.same([e.id, e.requests], [old.id, 20], 'the recycle event fires at the hand-over, with the requests the old process served')
  t.notOk(src.list().some((x) => x.id === old.id), 'the old process gets no new request')
  t.equal(src.list().length, 1, 'the replacement is in rotation, in the same step')
  const exited = nextEvent(m, 'exit', (x) => x.id === old.id)
  t.equal(m.status()[0].processes.find((p) => p.id === old.id)?.state, 'draining', 'the old one finishes its last request')
  src.requestDone(old.id)
  t.equal((await exited).expected, true, 'then it is stopped')
})

leakTest(t, 'maxRequests: at the limit while the replacement boots, the old process is held', async (t, defer) => {
  const m = manager(defer)
  m.add('h', { binPath: nodeBackend('slow-listen'), socketName: '127.0.0.1:0', maxRequests: 3, idleTimeout: 0 })
  await m.start()
  await ensure(m, 'h')
  const src = m.source('h')
  const [old] = src.list()
  src.requestStarted(old.id); src.requestDone(old.id)
  src.requestStarted(old.id); src.requestDone(old.id)
  src.requestStarted(old.id)
  t.equal(m.status()[0].processes.find((p) => p.id === old.id)?.state, 'held', 'held out of rotation at its limit, not stopped')
  t.equal(src.list().length, 0, 'requests wait')
  await ensure(m, 'h')
  t.equal(src.list().length, 1, 'then the replacement is up')
  src.requestDone(old.id)
})

leakTest(t, 'maxRequests: a replacement that cannot start leaves the old process serving; at the start limit failed, not stopped', async (t, defer) => {
  const dir = tempDir(defer)
  const marker = join(dir, 'started-once')
  // The first start serves; every later one exits at once (a broken deploy). handoff self: the
  // program's own socket, so a start that exits is never ready.
  const prog = ['/bin/sh', '-c', `[ -e ${marker} ] && exit 1; /usr/bin/touch ${marker}; exec ${process.execPath} ${nodeBackend()[1]}`]
  const m = manager(defer)
  m.add('rc', { binPath: prog, socketName: '127.0.0.1:0', handoff: 'self', maxRequests: 2, idleTimeout: 0 })
  await m.start()
  await ensure(m, 'rc')
  const src = m.source('rc')
  const [old] = src.list()
  const failed = nextEvent(m, 'failed', (e) => e.spawn === 'rc', 30_000)
  const successorExit = nextEvent(m, 'exit', (e) => e.id !== old.id)
  src.requestStarted(old.id); src.requestDone(old.id)
  src.requestStarted(old.id); src.requestDone(old.id)
  t.equal(m.status()[0].processes.find((p) => p.id === old.id)?.state, 'held', 'at its limit with the replacement still booting: held')
  await successorExit
  t.ok(await waitFor(() => src.list().some((x) => x.id === old.id), 5000), 'once the replacement failed to start, the old process serves again')
  src.requestStarted(old.id); src.requestDone(old.id)
  t.same(src.list().map((x) => x.id), [old.id], 'past its limit (3 of 2), still in rotation')
  const e = await failed
  t.match(e.reason, `recycle of ${old.id} failed: start-limit-hit`, 'at the start limit: failed, with the reason the guide gives')
  t.equal(m.status()[0].state, 'failed')
  t.same(src.list().map((x) => x.id), [old.id], 'the process that works is not stopped')
  t.equal((await get(old.address)).status, 200, 'and it serves')
})

t.test('SPAWN_DEFAULTS is the table', async (t) => {
  const table = section('Supervision defaults (`SPAWN_DEFAULTS`)')
  const row = (key: string): string => {
    const line = table.split('\n').find((l) => l.startsWith(`| ${key} |`))
    if (line === undefined) throw new Error(`no row ${key}`)
    return line.split('|')[2].trim()
  }
  const r = SPAWN_DEFAULTS.restart
  t.equal(row('`restart.initialDelay` / `maxDelay`'), `${r.initialDelay} / ${r.maxDelay} ms`)
  t.equal(row('`restart.stableAfter`'), `${r.stableAfter} ms`)
  t.equal(row('`restart.maxStarts` / `window`'), `${r.maxStarts} / ${r.window} ms`)
  t.equal(row('`startTimeout`'), `${SPAWN_DEFAULTS.startTimeout} ms`)
  t.equal(row('`killSignal` / `stopTimeout`'), `${SPAWN_DEFAULTS.killSignal} / ${SPAWN_DEFAULTS.stopTimeout} ms`)
  const h = SPAWN_DEFAULTS.healthCheck
  t.match(table, `interval ${h.interval}, timeout ${h.timeout}, failures ${h.failures}`)
  t.equal(row('`minProcs` / `maxProcs` / `maxLoadPerProc`'), `${SPAWN_DEFAULTS.minProcs} / ${SPAWN_DEFAULTS.maxProcs} / ${SPAWN_DEFAULTS.maxLoadPerProc}`)
  t.equal(row('`idleTimeout`'), `${SPAWN_DEFAULTS.idleTimeout} ms`)
  t.match(section('Hand-off (`handoff`)'), `| \`${SPAWN_DEFAULTS.handoff}\` (default) |`)
})

leakTest(t, 'backoff: doubles from 100 ms per crash; 5 restarts within 10 s → failed; clear() resets', async (t, defer) => {
  const m = manager(defer)
  m.add('crash', { binPath: nodeBackend('exit1'), socketName: '127.0.0.1:0' })
  const delays: number[] = []
  m.on('restart', (e) => { delays.push(e.delay) })
  const failed = nextEvent(m, 'failed', (e) => e.spawn === 'crash', 30_000)
  const t0 = Date.now()
  await m.start()
  const e = await failed
  t.comment(`failed after ${Date.now() - t0} ms`)
  t.same(delays, [100, 200, 400, 800, 1600], 'restart delays')
  t.match(e.reason, /^start-limit-hit/)
  t.equal(m.status()[0].state, 'failed')
  t.equal(m.status()[0].restarts, 5)
  const again = nextEvent(m, 'spawn', (x) => x.spawn === 'crash')
  m.clear('crash')
  t.not(m.status()[0].state, 'failed', 'clear(name) leaves failed')
  await again
  t.pass('and starts it again')
  const restarted = nextEvent(m, 'restart', (x) => x.spawn === 'crash')
  t.equal((await restarted).delay, 100, 'with the backoff reset')
})

leakTest(t, 'startTimeout: not connectable by then → killed, a failed start; with fd0 the socket is connectable at once', async (t, defer) => {
  const m = manager(defer)
  // Neither program ever accepts a connection.
  m.add('fd0', { binPath: ['/bin/sleep', '100'], socketName: '127.0.0.1:0', startTimeout: 500 })
  m.add('self', { binPath: ['/bin/sleep', '100'], socketName: '127.0.0.1:0', handoff: 'self', startTimeout: 500, restart: { maxStarts: 0 } })
  const ready = nextEvent(m, 'ready', (e) => e.spawn === 'fd0')
  const failed = nextEvent(m, 'failed', (e) => e.spawn === 'self')
  const killed = nextEvent(m, 'exit', (e) => e.spawn === 'self')
  await m.start()
  await ready
  t.pass('fd0: ready, though the program never accepts (proxycore bound its socket)')
  t.equal((await killed).signal, 'SIGTERM', 'self: killed')
  t.match((await failed).reason, /not connectable at 127\.0\.0\.1:\d+ within 500 ms/, 'counted as a failed start')
  t.equal(m.status().find((s) => s.name === 'fd0')?.state, 'running', 'fd0 still running')
})

leakTest(t, 'bad specs are ERR_SPAWN_BAD_SPEC at add(); undefined fields take the default', async (t, defer) => {
  const m = manager(defer)
  const bad: Array<[string, Record<string, unknown>]> = [
    ['negative', { restart: { initialDelay: -1 } }],
    ['non-finite', { stopTimeout: Infinity }],
    ['interval 0', { healthCheck: { type: 'connect', interval: 0 } }],
    ['timeout 0', { healthCheck: { type: 'connect', timeout: 0 } }],
    ['failures 0', { healthCheck: { type: 'connect', failures: 0 } }],
  ]
  for (const [what, spec] of bad) {
    t.throws(() => m.add(`b${what.replace(/\W/g, '')}`, { binPath: nodeBackend(), socketName: '127.0.0.1:0', ...spec }), { code: 'ERR_SPAWN_BAD_SPEC' }, what)
  }
  t.doesNotThrow(() => m.add('ok', { binPath: nodeBackend(), socketName: '127.0.0.1:0', restart: { initialDelay: undefined }, healthCheck: { type: 'connect', interval: undefined } }), 'undefined fields are fine')
  t.same(m.status().map((s) => s.name), ['ok'], 'no bad spec was registered')
})

leakTest(t, 'dependsOn: waiting for db; an unknown dependency or a cycle is thrown by add() (started manager) or start()', async (t, defer) => {
  // db binds its socket itself (handoff self) and exits first: it never runs.
  const m = manager(defer)
  m.add('db', { binPath: nodeBackend('exit1'), socketName: '127.0.0.1:0', handoff: 'self', restart: { initialDelay: 60_000 } })
  m.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['db'] })
  const crashed = nextEvent(m, 'exit', (e) => e.spawn === 'db')
  await m.start()
  await crashed
  const web = m.status().find((s) => s.name === 'web')
  t.equal(web?.state, 'waiting')
  t.equal(web?.reason, 'waiting for db')
  t.equal(web?.processes.length, 0, 'nothing of web started')

  // A db that goes failed: the reason says so.
  const dead = manager(defer)
  dead.add('db', { binPath: nodeBackend('exit1'), socketName: '127.0.0.1:0', handoff: 'self', restart: { initialDelay: 10, maxStarts: 1 } })
  dead.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['db'] })
  const dbFailed = nextEvent(dead, 'failed', (e) => e.spawn === 'db')
  await dead.start()
  await dbFailed
  t.equal(dead.status().find((s) => s.name === 'web')?.reason, 'waiting for db (failed)')

  // With fd0 (or systemd) proxycore binds db's socket, which accepts as soon as db is started: db
  // counts as running (ready) at once, so web starts even though db exits right after.
  const fd0 = manager(defer)
  fd0.add('db', { binPath: nodeBackend('exit1'), socketName: '127.0.0.1:0', restart: { initialDelay: 60_000 } })
  fd0.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['db'] })
  const webReady = nextEvent(fd0, 'ready', (e) => e.spawn === 'web')
  await fd0.start()
  await webReady
  t.pass('fd0: web starts once db was started, whatever db does next')

  t.throws(() => m.add('x', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['nope'] }), { code: 'ERR_SPAWN_UNKNOWN_DEPENDENCY' }, 'unknown dependency: thrown by add()')
  t.throws(() => m.add('loop', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['loop'] }), { code: 'ERR_SPAWN_DEPENDENCY_CYCLE' }, 'cycle: thrown by add()')
  t.same(m.status().map((s) => s.name).sort(), ['db', 'web'], 'neither was registered')

  // Not started yet: add() takes them, start() rejects and starts nothing.
  const fresh = manager(defer)
  fresh.add('ok', { binPath: nodeBackend(), socketName: '127.0.0.1:0' })
  fresh.add('a', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['nope'] })
  await t.rejects(fresh.start(), { code: 'ERR_SPAWN_UNKNOWN_DEPENDENCY' }, 'before start(): start() rejects')
  const cyc = manager(defer)
  cyc.add('a', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['b'] })
  cyc.add('b', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['a'] })
  await t.rejects(cyc.start(), { code: 'ERR_SPAWN_DEPENDENCY_CYCLE' })
  t.same([...fresh.status(), ...cyc.status()].flatMap((s) => s.processes), [], 'and nothing was started')
})

leakTest(t, 'logs: <log.dir>/<name>.log, the directory made when missing', async (t, defer) => {
  const dir = tempDir(defer)
  const logDir = join(dir, 'log')
  const prog = ['/bin/sh', '-c', `echo to-stderr >&2; echo to-stdout; exec ${process.execPath} ${nodeBackend()[1]}`]
  const m = manager(defer, { log: { dir: logDir } })
  m.add('x', { binPath: prog, socketName: '127.0.0.1:0' })
  const ends = Promise.all([nextEvent(m, 'output-end', (e) => e.stream === 'stdout'), nextEvent(m, 'output-end', (e) => e.stream === 'stderr')])
  await m.start()
  await ensure(m, 'x')
  await m.close()
  await ends
  t.equal(m.status()[0].droppedOutputBytes, 0, 'log.dir missing: made, nothing dropped')
  t.ok(await waitFor(() => { try { return readFileSync(join(logDir, 'x.log'), 'utf8').length === 20 } catch { return false } }, 5000), 'stdout and stderr in <log.dir>/x.log')
  t.same(readFileSync(join(logDir, 'x.log'), 'utf8').split('\n').sort(), ['', 'to-stderr', 'to-stdout'])
  t.equal(statSync(logDir).mode & 0o777, 0o750, 'made 0750, as runDir')
})

t.test('Error codes: the list is every ERR_SPAWN_* code', async (t) => {
  const listed = new Set(section('Error codes').match(/ERR_SPAWN_[A-Z_]+/g))
  const defined = new Set(Object.keys(ERRORS).filter((k) => k.startsWith('ERR_SPAWN_')))
  t.same([...defined].filter((c) => !listed.has(c)).sort(), [], 'no code missing from the guide')
  t.same([...listed].filter((c) => !defined.has(c)).sort(), [], 'no code the guide names that does not exist')
})
