/**
 * Audit H8: maxRequests recycling, and growing and shrinking a pool, under concurrent load for a
 * user-switched spawn with limits (so every start goes through the prlimit and umask wrappers and
 * the suEXEC re-check): no request fails, every retired process drains and is reaped (no zombie,
 * no child left: the leak oracle), and every process ran as the target user with the limits.
 * Needs root to create a user: skipped with the reason locally, a failure under CI=true.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, nextEvent, userSafeBackend } from './fixtures/manager.js'
import { drive } from './fixtures/drive.js'
import { get } from './fixtures/http.js'
import { childrenOf, waitFor } from '../helpers/leaks.js'
import { withTestUsers } from '../helpers/users.js'

const U = { name: 'pcaurcy', id: 2183 }

/** Uid and open-files limit of a live pid, or null once it is gone. */
function identityOf (pid: number): string | null {
  try {
    const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    const nofile = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1]
    return `${uid ?? '?'}/${nofile ?? '?'}`
  } catch { return null }
}

if (withTestUsers(t, 'recycle identity audit', [U])) {
  leakTest(t, 'user-switched recycling under load: 0 failures, retired processes drain and are reaped', async (tt, defer) => {
    const { script } = userSafeBackend(defer)
    const m = manager(defer)
    m.add('r', { binPath: [process.execPath, script], user: U.name, group: U.name, limits: { nofile: 256 }, socketName: '127.0.0.1:0', maxRequests: 7, minProcs: 2, maxProcs: 2, idleTimeout: 0 })
    const exits: Array<{ expected: boolean }> = []
    m.on('exit', (e) => { exits.push({ expected: e.expected }) })
    const seen = new Map<number, string | null>()
    m.on('spawn', (e) => { if (e.pid !== null) seen.set(e.pid, null) })
    await m.start()
    await ensure(m, 'r')
    const res = await drive(m.source('r'), 150, 15, async (address) => {
      const r = await get(address, '/?delay=3')
      if (r.status !== 200) throw new Error(`status ${r.status}`)
      const pid = Number(r.body)
      if (seen.get(pid) === null || !seen.has(pid)) seen.set(pid, identityOf(pid))
      return r.body
    })
    tt.equal(res.failed, 0, 'no failed request', { errors: res.errors })
    tt.equal(res.ok, 150)
    const pids = new Set(res.bodies)
    tt.ok(pids.size >= 15, `recycled: ${pids.size} distinct backend pids`)
    tt.same([...new Set([...seen.values()].filter((v) => v !== null))], [`${U.id}/256`], 'every process that answered ran as the user with its limits')
    // Every retired process drained and exited, expected, not as a crash.
    tt.ok(await waitFor(() => exits.length >= pids.size - 2, 20_000), `retired processes exited (${exits.length})`)
    tt.same(exits.filter((e) => !e.expected), [], 'every exit was the manager\'s own stop')
    tt.ok(await waitFor(() => childrenOf().filter((p) => p.state === 'Z').length === 0, 10_000), 'no zombie')
    tt.equal(m.status()[0].processes.filter((p) => p.state === 'ready').length, 2, 'two processes serve on')
  }, { timeoutMs: 30_000 })

  leakTest(t, 'user-switched pool grows under load and shrinks when idle, without a failed request', async (tt, defer) => {
    const { script } = userSafeBackend(defer)
    const m = manager(defer)
    m.add('g', { binPath: [process.execPath, script], user: U.name, group: U.name, socketName: '127.0.0.1:0', minProcs: 1, maxProcs: 4, maxLoadPerProc: 2, idleTimeout: 300 })
    await m.start()
    await ensure(m, 'g')
    let most = 0
    const count = (): number => m.status()[0].processes.filter((p) => p.state === 'ready').length
    const res = await drive(m.source('g'), 120, 12, async (address) => {
      most = Math.max(most, count())
      const r = await get(address, '/?delay=20')
      if (r.status !== 200) throw new Error(`status ${r.status}`)
      return r.body
    })
    tt.equal(res.failed, 0, 'no failed request', { errors: res.errors })
    tt.ok(most > 1, `grew under load (up to ${most} ready)`)
    tt.ok(most <= 4, 'never past maxProcs')
    tt.ok(await waitFor(() => m.status()[0].processes.length === 1, 20_000), 'shrank back to minProcs once idle')
    for (const p of m.status()[0].processes) tt.equal(identityOf(p.pid as number)?.split('/')[0], String(U.id), 'the one left runs as the user')
  }, { timeoutMs: 30_000 })

  leakTest(t, 'a user-switched child that ignores SIGTERM is SIGKILLed after stopTimeout, through the wrappers', async (tt, defer) => {
    const { script } = userSafeBackend(defer)
    const m = manager(defer)
    // handoff self: ready means listening, so its SIGTERM handler is installed by then.
    m.add('s', { binPath: [process.execPath, script, 'ignore-term'], user: U.name, group: U.name, limits: { nofile: 256 }, socketName: '127.0.0.1:0', handoff: 'self', stopTimeout: 400 })
    await m.start()
    await ensure(m, 's')
    const pid = m.status()[0].processes[0].pid as number
    tt.equal(identityOf(pid), `${U.id}/256`, 'the program itself (the wrappers exec\'d) runs as the user')
    const exit = nextEvent(m, 'exit')
    const t0 = Date.now()
    await m.close()
    const e = await exit
    tt.equal(e.signal, 'SIGKILL', 'killed')
    tt.equal(e.expected, true)
    tt.ok(Date.now() - t0 >= 400, 'after the grace period')
    tt.equal(identityOf(pid), null, 'gone')
  })
}
