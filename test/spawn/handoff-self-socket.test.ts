/**
 * `handoff: self` with a unix socketName: the program binds the name itself, after the host removed
 * a stale socket, so anyone else who can create an entry in the socket's directory could bind it
 * first; the proxy would then send that user the site's requests (audit). Two checks:
 *   1. before exec (Launcher.validate at start()/reload, and again before every start): the
 *      socket's directory must be writable by nobody but root and the spawn's user, sticky or not,
 *      and no directory above it by anyone else (a root-owned sticky one such as /tmp is fine
 *      there): ERR_SPAWN_SOCKET_DIR_UNSAFE, before the stale socket is touched;
 *      A user-switched spawn's socket must also be out of other users' reach: some directory on its
 *      path must deny them search (the program picks the socket's mode; php-cgi -b makes it 0777);
 *   2. once the program answers: the path must be a socket owned by the spawn's uid, else the start
 *      failed (ERR_SPAWN_SOCKET_NOT_OWNED) and nothing is routed to it.
 * Needs root to create users: skipped with the reason locally, a failure under CI=true.
 */
import t from 'tap'
import net from 'node:net'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, chownSync, existsSync, linkSync, lstatSync, mkdirSync, renameSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest, type Defer } from './fixtures/guard.js'
import { backendScript, ensure, manager, nextEvent, tempDir } from './fixtures/manager.js'
import { get } from './fixtures/http.js'
import type { SpawnManager } from '../../src/spawn/manager.js'
import type { SpawnSpec } from '../../src/spawn/types.js'
import { withTestUsers } from '../helpers/users.js'

const V = { name: 'pchsv', id: 2061 } // the spawn's user
const Q = { name: 'pchsq', id: 2062 } // another tenant, the squatter

/** A temp dir the spawn's user can traverse (mkdtemp makes it 0700). */
function base (defer: Defer): string {
  const dir = tempDir(defer, 'pc-hself-')
  chmodSync(dir, 0o755)
  return dir
}

/** `dir` with exactly this owner and mode (mkdir's mode is masked by the umask; sticky needs chmod). */
function dirAt (dir: string, uid: number, mode: number): string {
  mkdirSync(dir, { recursive: true })
  chownSync(dir, uid, uid)
  chmodSync(dir, mode)
  return dir
}

/** A dead socket file at `path` (a previous program's): bound, hard-linked, then closed. */
async function deadSocket (path: string): Promise<void> {
  const srv = net.createServer()
  await new Promise<void>((resolve) => srv.listen(`${path}.tmp`, resolve))
  linkSync(`${path}.tmp`, path)
  await new Promise<void>((resolve) => srv.close(() => resolve()))
}

/** Resolves with whichever of ready / failed the spawn reports first. */
function readyOrFailed (m: SpawnManager): Promise<{ ready: boolean, reason: string }> {
  return Promise.race([
    nextEvent(m, 'ready').then(() => ({ ready: true, reason: '' })),
    nextEvent(m, 'failed').then((e) => ({ ready: false, reason: e.reason })),
  ])
}

const selfSpawn = (path: string, extra: Partial<SpawnSpec> = {}): SpawnSpec =>
  ({ user: V.name, group: V.name, binPath: [process.execPath, backendScript], socketName: path, handoff: 'self', ...extra })

if (withTestUsers(t, 'handoff self socket tests', [V, Q])) {

  leakTest(t, 'a socket directory others can write (world-writable, sticky, or an ancestor) is refused before anything is touched', async (tt, defer) => {
    const dir = base(defer)
    const cases: Array<{ what: string, sock: string, spec: Partial<SpawnSpec>, message: RegExp }> = []
    const open = dirAt(join(dir, 'open'), 0, 0o777)
    cases.push({ what: 'world-writable (0777)', sock: join(open, 'app.sock'), spec: {}, message: new RegExp(`^spawns\\.v\\.socketName ${open}/app\\.sock: ${open}: the socket's directory is writable by group or others \\(mode 0777\\)\\. .*only ${V.name} \\(or root\\) can write`) })
    const sticky = dirAt(join(dir, 'sticky'), 0, 0o1777)
    cases.push({ what: 'world-writable and sticky (1777, like /tmp)', sock: join(sticky, 'app.sock'), spec: {}, message: new RegExp(`^spawns\\.v\\.socketName ${sticky}/app\\.sock: ${sticky}: the socket's directory is writable by group or others \\(mode 1777\\), sticky or not`) })
    const group = dirAt(join(dir, 'group'), V.id, 0o775)
    cases.push({ what: 'the spawn user\'s own but group-writable (0775)', sock: join(group, 'app.sock'), spec: {}, message: /the socket's directory is writable by group or others \(mode 0775\)/ })
    const above = dirAt(join(dir, 'above'), 0, 0o777)
    const own = dirAt(join(above, 'v'), V.id, 0o755)
    cases.push({ what: 'own directory below a world-writable one', sock: join(own, 'app.sock'), spec: {}, message: new RegExp(`: ${above}: directory above the socket is writable by group or others`) })
    const other = dirAt(join(dir, 'other'), Q.id, 0o755)
    cases.push({ what: 'owned by another tenant', sock: join(other, 'app.sock'), spec: {}, message: new RegExp(`${other}: the socket's directory is owned by uid ${Q.id}, not ${V.id} or root`) })
    // Writable by the spawn's user alone, but others can search it: they could connect, and the
    // program picks the socket's mode (php-cgi -b: 0777).
    const searchable = dirAt(join(dir, 'searchable'), V.id, 0o755)
    cases.push({ what: 'the spawn user\'s own 0755 directory, on a path others can search', sock: join(searchable, 'app.sock'), spec: {}, message: new RegExp(`^spawns\\.v\\.socketName ${searchable}/app\\.sock: ${searchable}: other users can reach a socket there \\(no directory on its path denies them search\\)\\. .*runs code as ${V.name}: .*mode 0700, or use handoff fd0`) })
    const groupOpen = dirAt(join(dir, 'group-open'), 0, 0o750)
    chownSync(groupOpen, 0, Q.id)
    const belowGroupOpen = dirAt(join(groupOpen, 'v'), V.id, 0o755)
    cases.push({ what: 'below a directory another group can search', sock: join(belowGroupOpen, 'app.sock'), spec: {}, message: /other users can reach a socket there/ })
    cases.push({ what: 'a spawn without user switching (its user is root) in a sticky 1777 directory', sock: join(sticky, 'root.sock'), spec: { user: undefined, group: undefined }, message: /the socket's directory is writable by group or others \(mode 1777\).*only root can write, .* owned by root/ })

    for (const c of cases) {
      await deadSocket(c.sock)
      const m = manager(defer)
      let spawned = false
      m.on('spawn', () => { spawned = true })
      m.add('v', selfSpawn(c.sock, c.spec))
      await tt.rejects(m.start(), { code: 'ERR_SPAWN_SOCKET_DIR_UNSAFE', message: c.message }, `${c.what}: refused`)
      tt.same(m.status()[0].processes, [], `${c.what}: nothing spawned`)
      tt.notOk(spawned, `${c.what}: no exec`)
      tt.ok(lstatSync(c.sock).isSocket(), `${c.what}: the stale socket was not touched`)
      await m.close()
    }
  })

  leakTest(t, 'a directory only the spawn user can write: starts and serves; made writable later, the next start is refused', async (tt, defer) => {
    const dir = base(defer)
    // Others cannot search the directory above (root's, group the spawn's own): none can connect.
    const shut = dirAt(join(dir, 'shut'), 0, 0o750)
    chownSync(shut, 0, V.id)
    const own = dirAt(join(shut, 'run-v'), V.id, 0o755)
    const sock = join(own, 'app.sock')
    const m = manager(defer)
    m.add('v', selfSpawn(sock, { restart: { initialDelay: 10, maxDelay: 20, maxStarts: 1, window: 60_000 } }))
    await m.start()
    await ensure(m, 'v')
    const [ep] = m.source('v').list()
    tt.equal(ep.address, `unix:${sock}`)
    const pid = m.status()[0].processes[0].pid as number
    const res = await get(ep.address)
    tt.equal(res.status, 200, 'serves')
    tt.equal(res.body, String(pid), 'answered by the spawned program')
    const st = lstatSync(sock)
    tt.ok(st.isSocket() && st.uid === V.id, `the program bound it as ${V.name}`)

    // The directory becomes writable by others after start: the restart is refused before the
    // (now stale) socket is removed, and nothing is exec'd.
    chmodSync(own, 0o777)
    let respawned = false
    m.on('spawn', () => { respawned = true })
    const failed = nextEvent(m, 'failed')
    process.kill(pid, 'SIGKILL')
    const e = await failed
    tt.match(e.reason, new RegExp(`ERR_SPAWN_SOCKET_DIR_UNSAFE: refused before exec: spawns\\.v\\.socketName ${sock}: ${own}: the socket's directory is writable by group or others`), `FAILED with the code and the directory: ${e.reason}`)
    tt.notOk(respawned, 'nothing was exec\'d')
    tt.ok(existsSync(sock), 'the stale socket was left alone')
    tt.equal(m.status()[0].state, 'failed')
    await m.close()
  })

  leakTest(t, 'a socket another uid bound at the path before the program did is a failed start; nothing is routed to it', async (tt, defer) => {
    const dir = base(defer)
    const own = dirAt(join(dir, 'run-v'), V.id, 0o700)
    const sock = join(own, 'app.sock')
    // The squatter: a process of tenant Q listening on a socket of its own, in its own directory.
    const sqDir = dirAt(join(dir, 'sq'), Q.id, 0o700)
    const squatter: ChildProcess = spawn(process.execPath, ['-e', `
      const net = require('node:net')
      net.createServer((s) => { s.on('data', (d) => process.stdout.write('data ' + d.length + '\\n')); s.on('error', () => {}) })
        .listen(process.argv[1], () => process.stdout.write('listening\\n'))`, join(sqDir, 's')], { uid: Q.id, gid: Q.id, stdio: ['ignore', 'pipe', 'inherit'] })
    defer(async () => {
      if (squatter.exitCode === null && squatter.signalCode === null) { squatter.kill('SIGKILL'); await once(squatter, 'exit') }
    })
    let out = ''
    squatter.stdout?.setEncoding('utf8')
    await new Promise<void>((resolve, reject) => {
      squatter.stdout?.on('data', (c: string) => { out += c; if (out.includes('listening')) resolve() })
      squatter.once('exit', () => reject(new Error(`squatter exited: ${out}`)))
    })
    tt.equal(lstatSync(join(sqDir, 's')).uid, Q.id, 'the squatter\'s socket is owned by the other tenant')

    // The program does not bind: `sleep` stands for one that lost the race. The moment it is
    // exec'd (after the stale-socket removal), the squatter's socket appears at the path.
    const m = manager(defer)
    m.add('v', { user: V.name, group: V.name, binPath: ['/bin/sleep', '60'], socketName: sock, handoff: 'self', startTimeout: 5000, restart: { maxStarts: 0 } })
    m.on('spawn', () => { renameSync(join(sqDir, 's'), sock) })
    const outcome = readyOrFailed(m)
    await m.start()
    const r = await outcome
    tt.notOk(r.ready, 'never ready')
    tt.match(r.reason, new RegExp(`ERR_SPAWN_SOCKET_NOT_OWNED: unix:${sock} is owned by uid ${Q.id}, not uid ${V.id} the program runs as`), `failed start with the code: ${r.reason}`)
    tt.same(m.source('v').list(), [], 'not routable')
    tt.equal(m.status()[0].processes.length, 0, 'the program was stopped')
    tt.notMatch(out, /data/, 'the squatter received no byte')
    tt.ok(lstatSync(sock).isSocket(), 'someone else\'s socket is not unlinked')
    await m.close()
  })
}
