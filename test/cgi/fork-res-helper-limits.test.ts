/**
 * The fork server's own resource limits, with both helpers where each has the case: the helper
 * (not the proxy) out of memory or out of file descriptors must fail the one request it was
 * starting, with a code that says it was the helper, and go on serving.
 *
 * - Out of memory (RLIMIT_AS lowered on the compiled helper, then a request whose frame needs more
 *   than is left): the request fails alone with ENOMEM (step `memory`); a program in flight still
 *   gets its exit status and the same helper serves the next. Before, the helper exited at its
 *   first failed malloc and every request in flight failed with ERR_CGI_FORK_SERVER. The Perl
 *   helper dies at a failed allocation whatever it does (perl's "Out of memory!"): not tested.
 * - Out of descriptors (RLIMIT_NOFILE lowered on the helper): ERR_CGI_FORK_SERVER_NO_DESCRIPTORS
 *   (503), its message naming the fork server, never EMFILE: that code is the proxy's own shortage
 *   (503 ERR_NO_DESCRIPTORS, "the proxy ran out of file descriptors"), which it was reported as.
 *
 * Limits are lowered with prlimit(1) on the helper's pid, soft limit only (a lowered hard limit
 * could not be raised again), and raised back before the next request.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import { get } from '../helpers/servers.js'
import { childrenOf, guardLeaks } from '../helpers/leaks.js'
import { forkOutcome as outcome, scriptsProxy, withHelperEnv, type ForkExit as Exit } from './harness.js'
import { ForkServer, findForkServer } from '../../src/spawn/fork-server.js'
import { realClock } from '../../src/spawn/backoff.js'


const compiled = withHelperEnv(undefined, () => findForkServer())
const perl = withHelperEnv('perl', () => findForkServer())
let prlimitOk = true
try { execFileSync('prlimit', ['--version'], { stdio: 'ignore' }) } catch { prlimitOk = false }

/** A soft limit of `pid` (prlimit's resource name), as /proc/PID/limits shows it. */
function softLimit (pid: number, row: string): string {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith(row)) ?? ''
  return line.slice(row.length).trim().split(/\s+/)[0] ?? 'unlimited'
}

const sh = (script: string, env: Record<string, string> = {}) => ({ file: '/bin/sh', args: ['-c', script], env, cwd: '/' })

for (const [kind, helper] of [['compiled', compiled], ['perl', perl]] as const) {
  const skip = !prlimitOk ? 'no prlimit here' : helper?.kind === kind ? false : `no ${kind} fork server here`
  const server = (t: { teardown: (fn: () => unknown) => void }): ForkServer => {
    const fs = new ForkServer({ helper: helper as NonNullable<typeof helper>, clock: realClock })
    t.teardown(() => fs.close())
    return fs
  }

  if (kind === 'compiled') {
    t.test('compiled: the helper out of memory fails that request alone with ENOMEM; one in flight is not lost', { skip }, async (t) => {
      guardLeaks(t)
      const fs = server(t)
      t.same(await outcome(fs.spawn(sh('exit 3'), true)), { code: 3, signal: null })
      const pid = fs.pid as number
      const running = fs.spawn(sh('read x; exit 5'), false)
      const runningOut = outcome(running)
      await once(running, 'spawn')
      const soft = softLimit(pid, 'Max address space')
      const vm = Number(/^VmSize:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
      t.ok(vm > 0, `the helper's address space: ${vm} kB`)
      // 1 MiB to spare: a 6 MiB frame does not fit.
      execFileSync('prlimit', [`--pid=${pid}`, `--as=${(vm + 1024) * 1024}:`])
      try {
        const env: Record<string, string> = {}
        for (let i = 0; i < 60; i++) env[`V${i}`] = 'x'.repeat(100 * 1024)
        const big = await outcome(fs.spawn(sh('exit 0', env), true))
        t.equal('error' in big && big.error.code, 'ENOMEM', 'ENOMEM for the request')
        t.match('error' in big && big.error.message, /fork server.*out of memory/, 'the message says it was the fork server')
        t.equal(fs.pid, pid, 'the helper is still there')
        // More room, step by step: the input buffer fits, then the frame's copy, then the arrays
        // built from it (each a malloc that may fail), until the exec's own E2BIG.
        const got = new Set<string>()
        for (let mib = 2; mib <= 20; mib += 2) {
          execFileSync('prlimit', [`--pid=${pid}`, `--as=${(vm + mib * 1024) * 1024}:`])
          const r = await outcome(fs.spawn(sh('exit 0', env), true))
          got.add('error' in r ? String(r.error.code) : JSON.stringify(r))
        }
        t.same([...got].filter((c) => c !== 'ENOMEM' && c !== 'E2BIG'), [], `each one ENOMEM or E2BIG (${[...got].join(', ')})`)
        t.equal(fs.pid, pid, 'the helper is still there after them')
      } finally {
        // Without the fix the helper is gone by now: nothing to set back.
        try { execFileSync('prlimit', [`--pid=${pid}`, `--as=${soft}:`], { stdio: 'ignore' }) } catch {}
      }
      running.stdin?.end('go\n')
      t.same(await runningOut, { code: 5, signal: null }, 'the program in flight still reports its own exit')
      t.same(await outcome(fs.spawn(sh('exit 6'), true)), { code: 6, signal: null }, 'the next one runs')
      t.equal(fs.pid, pid, 'by the same helper')
      t.equal(fs.starts, 1, 'never restarted')
    })
  }

  t.test(`${kind}: the helper out of descriptors is the helper's shortage, not the proxy's`, { skip }, async (t) => {
    guardLeaks(t)
    const fs = server(t)
    t.same(await outcome(fs.spawn(sh('exit 7'), true)), { code: 7, signal: null })
    const pid = fs.pid as number
    const open = readdirSync(`/proc/${pid}/fd`).length
    const soft = softLimit(pid, 'Max open files')
    // Room for one more descriptor: the second stdio connection (or the Perl exec pipe) fails.
    execFileSync('prlimit', [`--pid=${pid}`, `--nofile=${open + 1}:`])
    let short: Exit
    try {
      short = await outcome(fs.spawn(sh('exit 0'), true))
    } finally {
      execFileSync('prlimit', [`--pid=${pid}`, `--nofile=${soft}:`])
    }
    t.equal('error' in short && short.error.code, 'ERR_CGI_FORK_SERVER_NO_DESCRIPTORS', 'the fork server\'s own code, not EMFILE')
    t.match('error' in short && short.error.message, /EMFILE.*the CGI fork server \(pid \d+\), not the proxy, is out of file descriptors/, 'the message names the helper')
    t.same(await outcome(fs.spawn(sh('exit 8'), true)), { code: 8, signal: null }, 'the next one runs')
    t.equal(fs.pid, pid, 'by the same helper')
  })

  t.test(`${kind}: through the proxy, the helper's EMFILE is 503 ERR_CGI_FORK_SERVER_NO_DESCRIPTORS, not ERR_NO_DESCRIPTORS`, { skip }, async (t) => {
    guardLeaks(t)
    const saved = process.env.PROXYCORE_FORK_SERVER
    if (kind === 'perl') process.env.PROXYCORE_FORK_SERVER = 'perl'
    else delete process.env.PROXYCORE_FORK_SERVER
    let p: Awaited<ReturnType<typeof scriptsProxy>>
    try {
      p = await scriptsProxy(t, { 'hi.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhi'\n" }, {})
    } finally {
      if (saved === undefined) delete process.env.PROXYCORE_FORK_SERVER
      else process.env.PROXYCORE_FORK_SERVER = saved
    }
    const first = await get(`${p.url}/c/hi.sh`)
    t.equal(first.status, 200)
    const helperPid = childrenOf().find((c) => c.comm.startsWith('proxycore-fork') && c.state !== 'Z')?.pid
    if (helperPid === undefined) { t.fail('the helper runs as our child'); return }
    const open = readdirSync(`/proc/${helperPid}/fd`).length
    const soft = softLimit(helperPid, 'Max open files')
    execFileSync('prlimit', [`--pid=${helperPid}`, `--nofile=${open + 1}:`])
    let r: Awaited<ReturnType<typeof get>>
    try {
      r = await get(`${p.url}/c/hi.sh`)
    } finally {
      execFileSync('prlimit', [`--pid=${helperPid}`, `--nofile=${soft}:`])
    }
    t.equal(r.status, 503, '503: a shortage that passes')
    t.equal(r.body.toString(), '503 Service Unavailable\nERR_CGI_FORK_SERVER_NO_DESCRIPTORS\n', 'the fork server\'s code')
    const logged = p.lines.find((l) => l.obj.code === 'ERR_CGI_FORK_SERVER_NO_DESCRIPTORS')
    t.ok(logged !== undefined, 'logged with that code')
    t.notOk(p.lines.some((l) => l.obj.code === 'ERR_NO_DESCRIPTORS'), 'never as the proxy\'s own shortage')
    const again = await get(`${p.url}/c/hi.sh`)
    t.equal(again.status, 200, 'the next request is served')
    t.equal(again.body.toString(), 'hi')
  })
}
