/**
 * Unix socketName lengths against sun_path (108 bytes with the NUL, so 107 usable). The manager
 * binds under a private name in a fresh directory next to the operator's path and renames it into
 * place (listen-socket.ts): that private path is longer than a path with a short last component,
 * and a path that fits sun_path must not fail only because of it; a longer path is a failed start
 * with a stable code, not a bind at a truncated name or a wait for startTimeout. Real peer: php-cgi
 * on fd 0 (handoff self: the Node fixture backend).
 */
import t from 'tap'
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest, type Defer } from './fixtures/guard.js'
import { ensure, manager, nextEvent, nodeBackend, tempDir } from './fixtures/manager.js'
import { peer, phpPid } from './fixtures/fcgi.js'
import { bindListenSocket } from '../../src/spawn/listen-socket.js'

const PHP = '/usr/bin/php-cgi'

/** A directory for a socket `<dir>/a` whose path is exactly `bytes` long. */
function dirForPath (defer: Defer, bytes: number): string {
  let dir = tempDir(defer, 'pc-sunpath-')
  while (dir.length < bytes - 2) dir = join(dir, 'd'.repeat(Math.min(60, bytes - 3 - dir.length)))
  mkdirSync(dir, { recursive: true })
  if (join(dir, 'a').length !== bytes) throw new Error(`fixture: built a ${join(dir, 'a').length}-byte path, wanted ${bytes}`)
  return dir
}

for (const bytes of [100, 107]) {
  leakTest(t, `a ${bytes}-byte unix socketName (fits sun_path) serves; nothing is left in its directory`, async (t, defer) => {
    if (!peer(t, PHP)) return
    const dir = dirForPath(defer, bytes)
    const path = join(dir, 'a')
    const script = join(tempDir(defer), 'pid.php')
    writeFileSync(script, '<?php echo getmypid();')
    const m = manager(defer)
    m.add('php', { binPath: PHP, socketName: path, environment: { PHP_FCGI_CHILDREN: '0' }, restart: { maxStarts: 1 } })
    await m.start()
    await ensure(m, 'php')
    const pid = await phpPid(`unix:${path}`, script)
    t.equal(pid, String(m.status()[0].processes[0].pid), 'served by the spawned php-cgi at the configured path')
    t.same(readdirSync(dir), ['a'], 'only the socket: no private bind name left beside it')
    await m.close()
    t.same(readdirSync(dir), [], 'socket removed at stop')
  })
}

for (const handoff of ['fd0', 'self'] as const) {
  leakTest(t, `handoff ${handoff}: a 108-byte unix socketName is a failed start at once (ERR_SPAWN_BAD_ADDRESS)`, async (t, defer) => {
    const dir = dirForPath(defer, 108)
    const m = manager(defer)
    let spawned = 0
    m.on('spawn', () => { spawned++ })
    const binPath = handoff === 'fd0' ? PHP : nodeBackend()
    m.add('long', { binPath, socketName: join(dir, 'a'), handoff, startTimeout: 60_000, restart: { initialDelay: 1, maxStarts: 1 } })
    const failed = nextEvent(m, 'failed', () => true, 20_000)
    const t0 = Date.now()
    await m.start()
    t.match((await failed).reason, /^start-limit-hit.*108 bytes, longer than the 107 bytes/)
    // Not a wait for startTimeout (60 s) per attempt: refused before anything runs.
    t.ok(Date.now() - t0 < 20_000, `failed in ${Date.now() - t0} ms`)
    t.equal(spawned, 0, 'no process was started')
    t.match(m.status()[0].lastCrash, { pid: null, error: /longer than the 107 bytes/ })
    await t.rejects(ensure(m, 'long'), { code: 'ERR_SPAWN_FAILED' })
    t.same(readdirSync(dir), [], 'nothing bound in its directory')
  })
}

leakTest(t, 'bindListenSocket refuses a unix path over 107 bytes (a further process\'s <path>-N) before binding', async (t, defer) => {
  const dir = dirForPath(defer, 106)
  await t.rejects(bindListenSocket({ kind: 'unix', path: `${join(dir, 'a')}-1` }), { code: 'ERR_SPAWN_BAD_ADDRESS', message: /108 bytes/ })
  t.same(readdirSync(dir), [], 'nothing bound, no private name left')
})
