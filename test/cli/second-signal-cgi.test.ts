/**
 * A second SIGTERM during a long CGI request leaves no process behind: the CGI child's whole group
 * (the script and the `sleep` it runs) and the CGI fork server die with proxycore, with either
 * launcher. The real CLI, a real shell script; /proc is polled with deadlines.
 */
import t from 'tap'
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { serve } from './run.js'

interface Teardown { teardown (fn: () => void | Promise<void>): void }

// Headers and a line first, so the response head tells the CGI child runs; then a long wait in a
// process of its own (not exec'd), so there is more than the leader in the child's group.
const SCRIPT = `#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\nstarted\\n'
sleep 300
`

/** A process as found in /proc; `start` (clock ticks after boot) tells a reused pid apart. */
interface Proc { pid: number, ppid: number, pgid: number, state: string, comm: string, start: string }

function stat (pid: number): Proc | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const close = s.lastIndexOf(')')
    const rest = s.slice(close + 2).split(' ')
    return { pid, comm: s.slice(s.indexOf('(') + 1, close), state: rest[0], ppid: Number(rest[1]), pgid: Number(rest[2]), start: rest[19] }
  } catch {
    return null
  }
}

/** Every descendant of `root` (zombies included). */
function descendants (root: number): Proc[] {
  const all = readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map((n) => stat(Number(n))).filter((p): p is Proc => p !== null)
  const out: Proc[] = []
  const parents = new Set([root])
  for (let grew = true; grew;) {
    grew = false
    for (const p of all) if (parents.has(p.ppid) && !parents.has(p.pid)) { parents.add(p.pid); out.push(p); grew = true }
  }
  return out
}

/** Still the same process, and not a zombie (an orphaned zombie holds nothing; PID 1 may not reap). */
function running (p: Proc): boolean {
  const now = stat(p.pid)
  return now !== null && now.start === p.start && now.state !== 'Z'
}

/** A request whose head and first line came back and whose body never ends. */
async function hold (url: string, t: Teardown): Promise<string> {
  return await new Promise<string>((resolve, reject) => {
    const req = request(url, (res) => {
      res.setEncoding('utf8')
      res.once('data', (c: string) => resolve(c))
      res.on('error', () => {})
    })
    req.on('error', reject)
    req.end()
    t.teardown(() => { req.destroy() })
  })
}

interface Case {
  readonly launcher: 'direct' | 'fork-server'
  /** The fork server's build (status `forkServer`), when it is used. */
  readonly helper?: 'compiled' | 'perl'
  /** Swap the config (SIGHUP) while the request runs: its spawn is retired, still draining. */
  readonly reload?: boolean
}

function writeConfig (file: string, docroot: string, c: Case, tag: string): void {
  // The default launcher is the fork server where one can run (it is asserted below).
  writeFileSync(file, `listen: 127.0.0.1:0
drainTimeout: 60s
status: { path: /server-status }
spawns:
  cgi:
    socketType: pipe
    copyEnvironment: [PATH]
    environment: { TAG: ${tag} }
${c.launcher === 'direct' ? '    launcher: direct\n' : ''}routes:
  - match: { prefix: /cgi-bin/ }
    protocol: cgi
    spawn: cgi
    docroot: ${JSON.stringify(docroot)}
    stripPrefix: true
`)
}

const cases: Case[] = [
  { launcher: 'direct' },
  { launcher: 'fork-server' },
  { launcher: 'fork-server', helper: 'perl' },
  { launcher: 'direct', reload: true },
  { launcher: 'fork-server', reload: true },
]

for (const c of cases) {
  const name = `${c.launcher}${c.helper !== undefined ? ` (${c.helper})` : ''}${c.reload === true ? ', its generation retired by a reload' : ''}`
  t.test(`a second SIGTERM during a CGI request leaves no process behind: ${name}`, async (t) => {
    guardLeaks(t, { timeoutMs: 15_000 })
    const dir = mkdtempSync(join(tmpdir(), 'pc-second-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const docroot = join(dir, 'cgi-bin')
    mkdirSync(docroot)
    writeFileSync(join(docroot, 'wait.sh'), SCRIPT)
    chmodSync(join(docroot, 'wait.sh'), 0o755)
    const file = join(dir, 'proxycore.yaml')
    writeConfig(file, docroot, c, 'v1')
    const s = await serve(file, c.helper === 'perl' ? { PROXYCORE_FORK_SERVER: 'perl' } : {})
    const serverPid = s.child.pid as number
    let seen: Proc[] = []
    // Should proxycore leave anything behind, the test fails but still cleans up after itself.
    t.teardown(() => {
      try { process.kill(-serverPid, 'SIGKILL') } catch {}
      for (const p of seen) if (running(p)) { try { process.kill(p.pid, 'SIGKILL') } catch {} }
    })

    const st = await (await fetch(`${s.url}/server-status?format=json`)).json() as { spawns: Array<{ name: string, launcher?: string | null, forkServer?: string | null }> }
    const cgi = st.spawns.find((x) => x.name === 'cgi')
    t.equal(cgi?.launcher, c.launcher, `the spawn runs its children with ${c.launcher}`)
    if (c.helper !== undefined) t.equal(cgi?.forkServer, c.helper, `the ${c.helper} fork server`)

    t.equal(await hold(`${s.url}/cgi-bin/wait.sh`, t), 'started\n', 'the CGI answered its head and is waiting')
    t.ok(await waitFor(() => { seen = descendants(serverPid); return seen.some((p) => p.comm === 'sleep') }, 10_000), 'the CGI child runs its sleep')
    const sleep = seen.find((p) => p.comm === 'sleep') as Proc
    const script = seen.find((p) => p.pid === sleep.ppid) as Proc
    t.ok(script !== undefined && script.pgid === script.pid && sleep.pgid === script.pid, 'the CGI child leads its own group, the sleep is in it')
    const forkServer = seen.find((p) => p.ppid === serverPid && p.pid === script.ppid)
    if (c.launcher === 'fork-server') {
      t.ok(forkServer !== undefined && forkServer.pgid === forkServer.pid, 'the fork server started it, in a group of its own')
    } else {
      t.equal(script.ppid, serverPid, 'proxycore started it itself')
    }

    if (c.reload === true) {
      // A changed spawn: a new manager serves, the old one drains the held request (60s).
      writeConfig(file, docroot, c, 'v2')
      s.child.kill('SIGHUP')
      await s.waitLog('reloaded')
      t.ok(running(script) && running(sleep), 'the retired generation\'s CGI child still runs')
      // And one more held request, in the new generation (with a fork server of its own, if any).
      t.equal(await hold(`${s.url}/cgi-bin/wait.sh`, t), 'started\n', 'the new generation\'s CGI is waiting too')
      t.ok(await waitFor(() => { seen = descendants(serverPid); return seen.filter((p) => p.comm === 'sleep').length === 2 }, 10_000), 'both CGI children run their sleep')
      if (c.launcher === 'fork-server') t.equal(seen.filter((p) => p.ppid === serverPid).length, 2, 'two fork servers: the retired generation\'s and the current one\'s')
    }

    // The first drains (60s, the request is held); the second is the operator wanting out now.
    s.child.kill('SIGTERM')
    await s.waitLog('stopping: draining requests and stopping spawned processes')
    s.child.kill('SIGTERM')
    await s.waitLog('second signal: exiting now')
    t.equal(await s.exited, 1, 'exit 1 at once')
    const left = (): string => seen.filter(running).map((p) => `${p.pid} ${p.comm}`).join(', ')
    t.ok(await waitFor(() => seen.every((p) => !running(p)), 10_000), `no process proxycore started outlives it${left() === '' ? '' : `: ${left()}`}`)
  })
}
