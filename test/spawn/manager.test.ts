import t from 'tap'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { ensure, listed, manager, nodeBackend, tempDir } from './fixtures/manager.js'
import { get } from './fixtures/http.js'
import { processGroup, waitFor } from '../helpers/leaks.js'

leakTest(t, 'fd0 over TCP and unix: one process per address, each its own group', async (t, defer) => {
  const dir = tempDir(defer)
  const m = manager(defer)
  const sock = join(dir, 'app.sock')
  m.add('app', { binPath: nodeBackend(), socketName: ['127.0.0.1:0', sock] })
  await m.start()
  await ensure(m, 'app')
  const src = m.source('app')
  await listed(src, 2)
  const list = src.list()
  t.equal(list.length, 2)
  t.ok(list.some((e) => /^127\.0\.0\.1:[1-9]\d*$/.test(e.address)), 'tcp address with its real port')
  t.ok(list.some((e) => e.address === `unix:${sock}`), 'unix address')
  const pids = await Promise.all(list.map(async (e) => (await get(e.address)).body))
  const st = m.status()[0]
  t.equal(st.state, 'running')
  t.same(st.processes.map((p) => String(p.pid)).sort(), [...pids].sort(), 'status pids are the serving pids')
  for (const p of st.processes) {
    t.equal(p.state, 'ready')
    t.same(processGroup(p.pid as number).map((x) => x.pid), [p.pid], 'own process group')
    t.ok(typeof p.rssBytes === 'number' && p.rssBytes > 0, 'rss from /proc')
  }
  await m.close()
  t.notOk(existsSync(sock), 'unix socket removed after stop')
  t.equal(m.status()[0].state, 'stopped')
})

leakTest(t, 'clean environment: only copyEnvironment + environment + marker', async (t, defer) => {
  process.env.SECRET_TOKEN = 's3cr3t'
  process.env.KEEP_ME = 'kept'
  defer(() => { delete process.env.SECRET_TOKEN; delete process.env.KEEP_ME })
  const m = manager(defer)
  m.add('env', { binPath: nodeBackend(), socketName: '127.0.0.1:0', copyEnvironment: ['KEEP_ME'], environment: { APP: '1' } })
  await m.start()
  await ensure(m, 'env')
  const env = JSON.parse((await get(m.source('env').list()[0].address, '/env')).body) as Record<string, string>
  // tap's processinfo wraps child_process.spawn and injects its own NODE_OPTIONS/_TAPJS_* into
  // every child; those are the harness's, not leaks of the host environment.
  const harness = (k: string): boolean => k.startsWith('_TAPJS_PROCESSINFO_') || (k === 'NODE_OPTIONS' && env[k].includes('@tapjs/processinfo'))
  t.same(Object.keys(env).filter((k) => !harness(k)).sort(), ['APP', 'KEEP_ME', 'PROXYCORE_SPAWN'])
  t.notOk('SECRET_TOKEN' in env)
  t.equal(env.PROXYCORE_SPAWN, 'env')
})

leakTest(t, 'handoff self (PORT/HOST, SOCKET) and systemd (LISTEN_FDS on fd 3)', async (t, defer) => {
  const dir = tempDir(defer)
  const m = manager(defer)
  m.add('selftcp', { binPath: nodeBackend(), socketName: '127.0.0.1:0', handoff: 'self' })
  m.add('selfunix', { binPath: nodeBackend(), socketName: join(dir, 's.sock'), handoff: 'self' })
  m.add('sd', { binPath: nodeBackend(), socketName: '127.0.0.1:0', handoff: 'systemd' })
  await m.start()
  for (const name of ['selftcp', 'selfunix', 'sd']) {
    await ensure(m, name)
    const [ep] = m.source(name).list()
    const res = await get(ep.address)
    t.equal(res.status, 200, `${name} serves at ${ep.address}`)
    t.equal(res.body, String(m.status().find((s) => s.name === name)?.processes[0].pid))
  }
})

leakTest(t, 'minProcs 0: nothing runs until ensure(); idle process stops after idleTimeout', async (t, defer) => {
  const m = manager(defer)
  m.add('lazy', { binPath: nodeBackend(), socketName: '127.0.0.1:0', minProcs: 0, idleTimeout: 200 })
  await m.start()
  t.equal(m.status()[0].state, 'idle')
  t.equal(m.status()[0].processes.length, 0)
  const src = m.source('lazy')
  await src.ensure(AbortSignal.timeout(10_000))
  t.equal(src.list().length, 1)
  const [ep] = src.list()
  src.requestStarted(ep.id)
  t.equal((await get(ep.address)).status, 200)
  src.requestDone(ep.id)
  await listed(src, 0)
  t.pass('scaled to zero after idleTimeout')
  t.ok(await waitFor(() => m.status()[0].processes.length === 0, 5000), 'process reaped')
  t.equal(m.status()[0].state, 'idle')
})

leakTest(t, 'grows while every process is busy, up to maxProcs; extra instances get their own socket', async (t, defer) => {
  const dir = tempDir(defer)
  const m = manager(defer)
  const sock = join(dir, 'g.sock')
  m.add('grow', { binPath: nodeBackend(), socketName: sock, minProcs: 1, maxProcs: 3, idleTimeout: 0 })
  await m.start()
  await ensure(m, 'grow')
  const src = m.source('grow')
  const first = src.list()[0]
  src.requestStarted(first.id)
  await listed(src, 2)
  const second = src.list().find((e) => e.id !== first.id)
  t.equal(second?.address, `unix:${sock}-1`, 'second instance at <path>-1')
  src.requestStarted(second?.id as string)
  await listed(src, 3)
  for (const e of src.list()) src.requestStarted(e.id)
  t.equal(m.status()[0].processes.length, 3, 'never more than maxProcs')
  t.ok(statSync(join(dir, 'g.sock-2')).isSocket(), 'third socket at <path>-2')
  for (const e of src.list()) src.requestDone(e.id)
  src.requestDone(first.id)
  src.requestDone(second?.id as string)
})
