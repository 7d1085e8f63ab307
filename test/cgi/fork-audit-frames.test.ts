/**
 * Audit of the fork-server protocol with requests no exec can take, with both helpers (the
 * compiled one and the Perl one must behave alike): an argv/environment over ARG_MAX, and one
 * larger than the compiled helper's frame bound (64 MiB). Each must fail that one request with a
 * coded error (E2BIG, as Node's spawn() gives), never the helper: a request in flight meanwhile
 * still gets its exit status, and the helper that served it is the one that serves the next.
 * Also: many programs at once exiting in any order, each exit status (distinct codes, a signal)
 * matched to its own request.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import { guardLeaks } from '../helpers/leaks.js'
import { forkOutcome as outcome, withHelperEnv, type ForkExit as Exit } from './harness.js'
import { ForkServer, findForkServer } from '../../src/spawn/fork-server.js'
import { realClock } from '../../src/spawn/backoff.js'


const compiled = withHelperEnv(undefined, () => findForkServer())
const perl = withHelperEnv('perl', () => findForkServer())

for (const [kind, helper] of [['compiled', compiled], ['perl', perl]] as const) {
  const skip = helper?.kind === kind ? false : `no ${kind} fork server here`
  const server = (t: { teardown: (fn: () => unknown) => void }): ForkServer => {
    const fs = new ForkServer({ helper: helper as NonNullable<typeof helper>, clock: realClock })
    t.teardown(() => fs.close())
    return fs
  }
  const sh = (script: string, env: Record<string, string> = {}) => ({ file: '/bin/sh', args: ['-c', script], env, cwd: '/' })

  t.test(`${kind}: an environment over ARG_MAX fails that request with E2BIG; the helper stays`, { skip }, async (t) => {
    guardLeaks(t)
    const fs = server(t)
    const first = outcome(fs.spawn(sh('exit 3'), true))
    t.same(await first, { code: 3, signal: null })
    const pid = fs.pid
    // 40 values of 100 KiB each (each under MAX_ARG_STRLEN, together over 2 MiB).
    const env: Record<string, string> = {}
    for (let i = 0; i < 40; i++) env[`V${i}`] = 'x'.repeat(100 * 1024)
    const big = await outcome(fs.spawn(sh('exit 0', env), true))
    t.equal('error' in big && big.error.code, 'E2BIG', 'E2BIG for the request')
    t.same(await outcome(fs.spawn(sh('exit 4'), true)), { code: 4, signal: null }, 'the next one runs')
    t.equal(fs.pid, pid, 'by the same helper')
  })

  t.test(`${kind}: a request larger than the frame bound fails alone with E2BIG; one in flight is not lost`, { skip }, async (t) => {
    guardLeaks(t)
    const fs = server(t)
    const running = fs.spawn(sh('read x; exit 5'), false)
    const runningOut = outcome(running)
    await once(running, 'spawn')
    const pid = fs.pid
    const huge = await outcome(fs.spawn(sh('exit 0', { BIG: 'y'.repeat(65 << 20) }), true))
    t.equal('error' in huge && huge.error.code, 'E2BIG', 'E2BIG for the huge request')
    running.stdin?.end('go\n')
    t.same(await runningOut, { code: 5, signal: null }, 'the program in flight still reports its own exit')
    t.same(await outcome(fs.spawn(sh('exit 6'), true)), { code: 6, signal: null }, 'the next one runs')
    t.equal(fs.pid, pid, 'by the same helper')
    t.equal(fs.starts, 1, 'never restarted')
  })

  t.test(`${kind}: the helper out of descriptors fails that request (ERR_CGI_FORK_SERVER_NO_DESCRIPTORS), and recovers`, { skip }, async (t) => {
    guardLeaks(t)
    const fs = server(t)
    t.same(await outcome(fs.spawn(sh('exit 7'), true)), { code: 7, signal: null })
    const pid = fs.pid as number
    const open = readdirSync(`/proc/${pid}/fd`).length
    const soft = /^Max open files\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1] ?? '1024'
    // Room for one more descriptor: the second stdio connection (or the Perl exec pipe) fails.
    // The soft limit only: the hard one, once lowered, could not be raised again.
    execFileSync('prlimit', [`--pid=${pid}`, `--nofile=${open + 1}:`])
    const short = await outcome(fs.spawn(sh('exit 0'), true))
    t.equal('error' in short && short.error.code, 'ERR_CGI_FORK_SERVER_NO_DESCRIPTORS', 'the fork server\'s shortage, not the proxy\'s, for the request')
    t.equal(readdirSync(`/proc/${pid}/fd`).length, open, 'the helper closed what it had opened for it')
    execFileSync('prlimit', [`--pid=${pid}`, `--nofile=${soft}:`])
    t.same(await outcome(fs.spawn(sh('exit 8'), true)), { code: 8, signal: null }, 'the next one runs')
    t.equal(fs.pid, pid, 'by the same helper')
  })

  t.test(`${kind}: 200 programs at once, exiting in any order: each status is its own`, { skip }, async (t) => {
    guardLeaks(t, { timeoutMs: 20_000 })
    const fs = server(t)
    const N = 200
    const outs: Array<Promise<Exit>> = []
    for (let i = 0; i < N; i++) {
      // Codes 0-199, every fifth killed by a signal instead; the order of exits is scrambled.
      const delay = ((i * 37) % 11) / 100
      const script = i % 5 === 4 ? `sleep ${delay}; kill -TERM $$` : `sleep ${delay}; exit ${i}`
      outs.push(outcome(fs.spawn(sh(script), true)))
    }
    const got = await Promise.all(outs)
    let bad = 0
    for (let i = 0; i < N; i++) {
      const want = i % 5 === 4 ? { code: null, signal: 'SIGTERM' } : { code: i, signal: null }
      if (JSON.stringify(got[i]) !== JSON.stringify(want)) { bad++; t.fail(`request ${i}: ${JSON.stringify(got[i])}`) }
    }
    t.equal(bad, 0, 'every exit status matched to its request')
  })
}
