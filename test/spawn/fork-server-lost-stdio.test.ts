/**
 * A fork-server child one of whose stdio connections never reached the proxy (the proxy out of
 * descriptors: libuv accepts and closes what is pending). The helper reported it exec'd (S, with
 * its pid), so it runs, but 'spawn' never comes. It must still be stopped at once when its
 * exchange is killed (client gone, timeout), fail with ERR_CGI_FORK_SERVER when nobody kills it,
 * and never hold up close(). The loss is made with a test seam that drops the connection as it
 * arrives (no descriptor exhaustion). fork-server-lost-stdio-perl.test.ts runs this file again with
 * the Perl helper.
 */
import t, { type Test } from 'tap'
import { leakTest, type Defer } from './fixtures/guard.js'
import { manager } from './fixtures/manager.js'
import { processGroup, waitFor } from '../helpers/leaks.js'
import { ForkChild, findForkServer, forkServerSeams } from '../../src/spawn/fork-server.js'
import type { SpawnManager } from '../../src/spawn/manager.js'

const helper = findForkServer()
const wantPerl = process.env.PROXYCORE_FORK_SERVER === 'perl'
const skip = helper === null
  ? 'no fork server on this machine'
  : wantPerl !== (helper.kind === 'perl') ? `the ${wantPerl ? 'Perl' : 'compiled'} helper is not the one that runs` : false

/** Gone: no member of the group left but zombies. */
const groupGone = (pgid: number): boolean => processGroup(pgid).every((p) => p.state === 'Z')

/**
 * A program (and a backgrounded sleep in its group) that runs for 300 s unless stopped, whose
 * stderr connection is dropped on arrival. Whatever the test leaves is SIGKILLed at the end.
 */
async function lostStderr (t: Test, defer: Defer): Promise<{ m: SpawnManager, child: ForkChild, pid: number, errors: string[] }> {
  forkServerSeams.dropStdio = (fd) => fd === 2
  defer(() => { forkServerSeams.dropStdio = null })
  const m = manager(defer)
  m.add('sh', { socketType: 'pipe', binPath: '/bin/sh', stopTimeout: 300 })
  await m.start()
  const child = m.pipeStarter('sh').launch({ argv: ['-c', 'sleep 300 & wait'], env: {}, cwd: '/', stdin: 'null' }) as ForkChild
  const errors: string[] = []
  child.on('error', (err: NodeJS.ErrnoException) => errors.push(`${err.code}: ${err.message}`))
  child.once('spawn', () => errors.push('spawn'))
  if (!await waitFor(() => child.pid !== undefined, 5000)) throw new Error('the helper never reported the exec')
  const pid = child.pid as number
  // A failed run must not leave a sleeping group behind (or a close() hanging on it).
  defer(() => { try { process.kill(-pid, 'SIGKILL') } catch {} })
  t.ok(await waitFor(() => processGroup(pid).some((p) => p.comm === 'sleep'), 5000), 'the program runs, its sleep in its group')
  return { m, child, pid, errors }
}

leakTest(t, 'a child whose stdio was lost is stopped, group and all, as soon as it is killed (client gone, timeout)', async (t, defer) => {
  const { m, pid, child, errors } = await lostStderr(t, defer)
  const killedAt = Date.now()
  m.pipeStarter('sh').kill(child)
  t.ok(await waitFor(() => groupGone(pid), 1500), `its group is gone at once (${Date.now() - killedAt} ms), not when 'spawn' comes (never)`)
  t.notOk(errors.includes('spawn'), "'spawn' never came")
  t.ok(await waitFor(() => m.status()[0].pipeChildren === 0, 5000), 'and it is forgotten')
  t.match(errors, [/^ERR_CGI_FORK_SERVER: \/bin\/sh \(pid \d+\): 1 of its 2 stdio connections never reached the proxy/], 'it failed with a coded error')
}, { skip })

leakTest(t, 'a child whose stdio was lost and that nobody kills fails with ERR_CGI_FORK_SERVER, and its group is stopped', async (t, defer) => {
  const { m, pid, child, errors } = await lostStderr(t, defer)
  const failed = new Promise<number>((resolve) => child.once('error', () => resolve(Date.now())))
  const started = Date.now()
  const deadline = new Promise<null>((resolve) => { const tm = setTimeout(() => resolve(null), 6000); defer(() => clearTimeout(tm)) })
  const at = await Promise.race([failed, deadline])
  t.ok(at !== null && at - started < 4000, `failed ${at === null ? 'never (6 s)' : `${at - started} ms after the exec`}: LATE_STDIO_MS from S, not from its exit`)
  t.match(errors, [/^ERR_CGI_FORK_SERVER: .*1 of its 2 stdio connections never reached the proxy$/])
  t.ok(await waitFor(() => groupGone(pid), 3000), 'its group was stopped')
  t.ok(await waitFor(() => m.status()[0].pipeChildren === 0, 5000))
}, { skip })

leakTest(t, 'close() with a child whose stdio was lost stops it and resolves promptly', async (t, defer) => {
  const { m, pid } = await lostStderr(t, defer)
  const started = Date.now()
  const closed = await Promise.race([m.close().then(() => true), new Promise<false>((resolve) => {
    const tm = setTimeout(() => resolve(false), 6000)
    defer(() => clearTimeout(tm))
  })])
  t.ok(closed, `close() resolved ${closed ? `in ${Date.now() - started} ms` : 'not within 6 s (it waited for the program to exit by itself)'}`)
  t.ok(groupGone(pid), 'the program and its sleep are gone')
}, { skip })

leakTest(t, 'a hello read late (a proxy too busy to read it) is not a lost connection: the program runs', async (t, defer) => {
  // Every hello read 3 s after its connection arrived, past LATE_STDIO_MS (2 s) from the exec.
  forkServerSeams.helloDelayMs = 3000
  defer(() => { forkServerSeams.helloDelayMs = 0 })
  const m = manager(defer)
  m.add('sh', { socketType: 'pipe', binPath: '/bin/sh', stopTimeout: 300 })
  await m.start()
  const child = m.pipeStarter('sh').launch({ argv: ['-c', 'echo late-but-there'], env: {}, cwd: '/', stdin: 'null' }) as ForkChild
  const events: string[] = []
  child.on('error', (err: NodeJS.ErrnoException) => events.push(`${err.code}: ${err.message}`))
  const spawned = new Promise<void>((resolve) => child.once('spawn', () => { events.push('spawn'); resolve() }))
  const deadline = new Promise<void>((resolve) => { const tm = setTimeout(resolve, 10_000); defer(() => clearTimeout(tm)) })
  await Promise.race([spawned, deadline])
  t.same(events, ['spawn'], 'spawned once its hellos were read, no ERR_CGI_FORK_SERVER meanwhile')
  let out = ''
  child.stdout?.on('data', (c: Buffer) => { out += c.toString() })
  t.ok(await waitFor(() => out === 'late-but-there\n', 5000), `its output arrives (${JSON.stringify(out)})`)
  t.ok(await waitFor(() => m.status()[0].pipeChildren === 0, 5000), 'and it is reaped')
}, { skip })
