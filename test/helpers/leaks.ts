/**
 * Leak oracle for tests that start processes or sockets: at teardown, no child process of this
 * test process, no zombie, and no more open fds than at the start. Polls with a deadline; never sleeps
 * a fixed time.
 *
 *   import { guardLeaks } from '../helpers/leaks.js'
 *   guardLeaks(t)            // first line of a test file (or of a subtest)
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

interface Tap {
  teardown (fn: () => void | Promise<void>): void
}

export function openFds (): Map<number, string> {
  const fds = new Map<number, string>()
  for (const name of readdirSync('/proc/self/fd')) {
    let target = '?'
    try { target = readlinkSync(`/proc/self/fd/${name}`) } catch { continue } // the readdir fd itself
    fds.set(Number(name), target)
  }
  return fds
}

export interface ProcInfo { pid: number, ppid: number, state: string, comm: string, pgid: number }

export function readProc (pid: number): ProcInfo | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const close = stat.lastIndexOf(')')
    const comm = stat.slice(stat.indexOf('(') + 1, close)
    const rest = stat.slice(close + 2).split(' ')
    return { pid, comm, state: rest[0], ppid: Number(rest[1]), pgid: Number(rest[2]) }
  } catch {
    return null
  }
}

/** Processes whose parent is `parent` (zombies included, state 'Z'). */
export function childrenOf (parent = process.pid): ProcInfo[] {
  const out: ProcInfo[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const info = readProc(Number(name))
    if (info && info.ppid === parent) out.push(info)
  }
  return out
}

/** Every process in process group `pgid` (to prove a whole group was stopped). */
export function processGroup (pgid: number): ProcInfo[] {
  const out: ProcInfo[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const info = readProc(Number(name))
    if (info && info.pgid === pgid) out.push(info)
  }
  return out
}

/** Poll `check` until it returns true or the deadline passes. */
export async function waitFor (check: () => boolean | Promise<boolean>, timeoutMs = 5000, stepMs = 10): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return true
    if (Date.now() >= deadline) return false
    await new Promise((resolve) => setTimeout(resolve, stepMs))
  }
}

/** Is a process alive (not a zombie, not gone)? */
export function alive (pid: number): boolean {
  const info = readProc(pid)
  return info !== null && info.state !== 'Z'
}

/**
 * Register teardown checks on `t`: after everything else in the test tore down (tap runs teardowns
 * last-registered first, so call this first), the fd table is back to where it started and there is
 * no child or zombie left. A leak throws, which fails the test with the list of what leaked.
 */
export function guardLeaks (t: Tap, opts: { timeoutMs?: number } = {}): void {
  const before = openFds()
  const timeoutMs = opts.timeoutMs ?? 5000
  t.teardown(async () => {
    let extra: string[] = []
    const fdsOk = await waitFor(() => {
      const now = openFds()
      extra = [...now].filter(([fd, target]) => before.get(fd) !== target).map(([fd, target]) => `${fd} -> ${target}`)
      return extra.length === 0
    }, timeoutMs)
    let kids: ProcInfo[] = []
    const kidsOk = await waitFor(() => { kids = childrenOf(); return kids.length === 0 }, timeoutMs)
    // tap allows no assertion after a test ended; an error thrown in teardown fails the test.
    if (!fdsOk) throw new Error(`leaked fd(s): ${extra.join(', ')}`)
    if (!kidsOk) throw new Error(`leaked child/zombie process(es): ${kids.map((k) => `${k.pid} ${k.comm} ${k.state}`).join(', ')}`)
  })
}

/** Pids of live processes whose working directory is `dir` (a spawn's program and its workers run in its cwd). */
export function processesIn (dir: string): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try { if (readlinkSync(`/proc/${name}/cwd`) === dir && alive(Number(name))) out.push(Number(name)) } catch {}
  }
  return out
}
