/**
 * Child processes of the bench: each in its own process group (detached), all killed at exit —
 * normal exit, error, SIGINT/SIGTERM — so nothing outlives `npm run bench`.
 */
import { spawn } from 'node:child_process'
import { connect, createServer } from 'node:net'
import { readFileSync, readdirSync } from 'node:fs'

const live = new Set()

function killGroup (child, signal = 'SIGKILL') {
  if (child.exitCode !== null || child.signalCode !== null) return
  try { process.kill(-child.pid, signal) } catch { try { child.kill(signal) } catch {} }
}

export function killAll () {
  for (const c of live) killGroup(c)
  live.clear()
}

let hooked = false
function hookExit () {
  if (hooked) return
  hooked = true
  process.on('exit', killAll)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => { killAll(); process.exit(130) })
  }
  process.on('uncaughtException', (err) => { killAll(); console.error(err); process.exit(1) })
  process.on('unhandledRejection', (err) => { killAll(); console.error(err); process.exit(1) })
}

/**
 * Start `cmd args` in its own process group. `ready`: 'stdout' waits for a line `LISTENING <port>`
 * (our node servers), a number waits until that TCP port accepts, a string path a unix socket.
 * Returns { name, pid, port, child, log(), stop() }.
 */
export async function start (name, cmd, args, { env, cwd, ready = 'stdout', timeoutMs = 15_000 } = {}) {
  hookExit()
  const child = spawn(cmd, args, {
    cwd, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
  })
  live.add(child)
  let out = ''
  let port = typeof ready === 'number' ? ready : 0
  const keep = (c) => { if (out.length < 50_000) out += c.toString() }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  const exited = new Promise((resolve) => child.once('exit', (code, sig) => { live.delete(child); resolve({ code, sig }) }))
  child.once('error', (err) => { out += `\nspawn error: ${err.message}` })
  const proc = {
    name, child, get pid () { return child.pid }, get port () { return port },
    log: () => out,
    async stop (signal = 'SIGTERM', graceMs = 3000) {
      if (child.exitCode !== null || child.signalCode !== null) return
      killGroup(child, signal)
      const t = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs)
      await exited
      clearTimeout(t)
      // the group may hold workers whose master already left
      try { process.kill(-child.pid, 'SIGKILL') } catch {}
    },
  }
  const deadline = Date.now() + timeoutMs
  let dead = null
  exited.then((e) => { dead = e })
  if (ready === 'stdout') {
    for (;;) {
      const m = /LISTENING (\d+)/.exec(out)
      if (m) { port = Number(m[1]); break }
      if (dead) { await proc.stop('SIGKILL'); throw new Error(`${name} exited (${JSON.stringify(dead)}) before it listened:\n${out}`) }
      if (Date.now() > deadline) { await proc.stop('SIGKILL'); throw new Error(`${name} did not listen within ${timeoutMs} ms:\n${out}`) }
      await sleep(10)
    }
  } else if (ready !== null) {
    for (;;) {
      if (dead) { await proc.stop('SIGKILL'); throw new Error(`${name} exited (${JSON.stringify(dead)}):\n${out}`) }
      if (await connectable(ready)) break
      if (Date.now() > deadline) { await proc.stop('SIGKILL'); throw new Error(`${name} not ready within ${timeoutMs} ms:\n${out}`) }
      await sleep(25)
    }
  }
  return proc
}

/**
 * Whether a TCP port (number) or unix socket (path) accepts a connection now. A socket file
 * appears at bind(), before the peer's listen(): waiting for the file alone races ECONNREFUSED.
 */
export function connectable (where) {
  return new Promise((resolve) => {
    const s = typeof where === 'number' ? connect({ host: '127.0.0.1', port: where }) : connect({ path: where })
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * A loopback port nothing listens on now, for a peer the bench (or a test: test/helpers/ports.ts)
 * configures with it before anything listens on it. Asking the kernel (listen on 0, close, hand out
 * the number) races: the next listen(0) or connect of any other process may get the same number
 * before the peer binds it (CI once saw `proxycore serve` fail with EADDRINUSE that way, and
 * `start(..., { ready: port })` would take someone else's listener for the peer's). The kernel picks
 * those ports from net.ipv4.ip_local_port_range only, so this draws at random from below that range
 * and checks the port is bindable: only another caller of this function could pick the same one.
 */
export async function freePort () {
  const floor = 10_000
  let low = 32_768
  try {
    const v = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    if (Number.isInteger(v) && v > floor + 1000) low = v
  } catch {}
  for (let i = 0; i < 200; i++) {
    const port = floor + Math.floor(Math.random() * (low - floor))
    const ok = await new Promise((resolve) => {
      const s = createServer()
      s.once('error', () => resolve(false))
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
    })
    if (ok) return port
  }
  throw new Error(`no free port found in ${floor}-${low - 1} after 200 tries`)
}

/** Run a command to completion (bounded), capturing output. */
export function run (cmd, args, { timeoutMs = 60_000, env, cwd } = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    live.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c) => { stdout += c })
    child.stderr.on('data', (c) => { stderr += c })
    const t = setTimeout(() => killGroup(child), timeoutMs)
    child.once('error', (err) => { stderr += err.message })
    child.once('close', (code, signal) => { clearTimeout(t); live.delete(child); resolve({ code, signal, stdout, stderr }) })
  })
}

// --- /proc ----------------------------------------------------------------------------------

function statOf (pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const close = s.lastIndexOf(')')
    const rest = s.slice(close + 2).split(' ')
    return { pid, comm: s.slice(s.indexOf('(') + 1, close), ppid: Number(rest[1]), utime: Number(rest[11]), stime: Number(rest[12]) }
  } catch { return null }
}

export function rssKiB (pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) : 0
  } catch { return 0 }
}

/**
 * pid and all its descendants, minus processes whose comm matches `exclude` (backends it spawned).
 * `preExec`: a child with its parent's comm is a CGI program between fork and exec (a copy of
 * lighttpd, or of proxycore's fork-server helper, about to become the script), so it is left out
 * like the script it becomes: its pages are the parent's, shared copy-on-write, and summing its
 * VmRSS counted them twice (10–20 MiB at 32 connections). Not for servers whose workers share the
 * master's name (nginx).
 */
export function tree (pid, exclude = null, preExec = false) {
  const all = []
  for (const n of readdirSync('/proc')) if (/^\d+$/.test(n)) { const st = statOf(Number(n)); if (st) all.push(st) }
  const out = []
  const want = new Set([pid])
  let grew = true
  while (grew) {
    grew = false
    for (const p of all) if (!want.has(p.pid) && want.has(p.ppid)) { want.add(p.pid); grew = true }
  }
  const commOf = preExec ? new Map(all.map((p) => [p.pid, p.comm])) : null
  for (const p of all) {
    if (!want.has(p.pid)) continue
    if (p.pid !== pid && exclude !== null && exclude.test(p.comm)) continue
    if (p.pid !== pid && commOf !== null && commOf.get(p.ppid) === p.comm) continue
    out.push(p)
  }
  return out
}

/** Sum of VmRSS over the tree, KiB. */
export function treeRssKiB (pid, exclude = null, preExec = false) {
  let sum = 0
  for (const p of tree(pid, exclude, preExec)) sum += rssKiB(p.pid)
  return sum
}

/** Sample RSS every `everyMs` until stopped; returns { stop(): maxKiB }. */
export function sampleRss (pids, everyMs = 100) {
  let max = 0
  const tick = () => {
    let sum = 0
    for (const { pid, exclude, preExec } of pids) sum += treeRssKiB(pid, exclude, preExec)
    if (sum > max) max = sum
  }
  tick()
  const t = setInterval(tick, everyMs)
  return { stop () { clearInterval(t); tick(); return max } }
}

/** CPU ticks (utime+stime) of a tree — for the CPU share of a proxy during a run. */
export function treeCpuTicks (pid, exclude = null, preExec = false) {
  let sum = 0
  for (const p of tree(pid, exclude, preExec)) sum += p.utime + p.stime
  return sum
}
