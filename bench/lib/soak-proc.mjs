/** /proc readings for the soak: process table with states, descendants, RSS, open descriptors. */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

export function procTable () {
  const all = []
  for (const n of readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue
    try {
      const s = readFileSync(`/proc/${n}/stat`, 'utf8')
      const close = s.lastIndexOf(')')
      const rest = s.slice(close + 2).split(' ')
      all.push({ pid: Number(n), comm: s.slice(s.indexOf('(') + 1, close), state: rest[0], ppid: Number(rest[1]) })
    } catch {}
  }
  return all
}

/** Every descendant of `root` (not root itself), zombies included. */
export function descendants (root, table = procTable()) {
  const want = new Set([root])
  const out = []
  let grew = true
  while (grew) {
    grew = false
    for (const p of table) if (!want.has(p.pid) && want.has(p.ppid)) { want.add(p.pid); out.push(p); grew = true }
  }
  return out
}

/**
 * Long-lived processes under `root` by comm: per-request ones (`transient` comms) and copies of
 * their parent between fork and exec (same comm as the parent: CGI scripts the fork server is
 * about to exec) left out, as bench/lib/proc.mjs `tree(…, preExec)` does.
 */
export function countByComm (root, transient, table = procTable(), includeRoot = false) {
  const byPid = new Map(table.map((p) => [p.pid, p]))
  const counts = {}
  const list = descendants(root, table)
  if (includeRoot && byPid.has(root)) list.unshift(byPid.get(root))
  for (const p of list) {
    if (p.state === 'Z') continue
    if (transient.test(p.comm)) continue
    if (FORK_SERVER.test(p.comm) && byPid.get(p.ppid)?.comm === p.comm) continue
    counts[p.comm] = (counts[p.comm] ?? 0) + 1
  }
  return counts
}

/** proxycore's CGI fork server: the compiled one, or the Perl one. */
const FORK_SERVER = /^(proxycore-fork|perl)/

export function rssKiB (pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) : 0
  } catch { return 0 }
}

export function fdCount (pid) {
  try { return readdirSync(`/proc/${pid}/fd`).length } catch { return -1 }
}

/** Open descriptors by kind (socket, pipe, anon_inode:…, file), to tell what a drift is made of. */
export function fdKinds (pid) {
  const out = {}
  let names = []
  try { names = readdirSync(`/proc/${pid}/fd`) } catch { return out }
  for (const n of names) {
    let target
    try { target = readlinkSync(`/proc/${pid}/fd/${n}`) } catch { continue }
    const kind = /^(socket|pipe):/.exec(target)?.[1] ?? (target.startsWith('anon_inode:') ? target : target.startsWith('/dev/') ? target : 'file')
    out[kind] = (out[kind] ?? 0) + 1
  }
  return out
}

export function isAlive (pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3) !== 'Z'
  } catch { return false }
}

/** Processes whose command line or environment names `needle` (the soak's temp dir). */
export function processesNaming (needle, exceptPids = new Set()) {
  const found = []
  for (const n of readdirSync('/proc')) {
    if (!/^\d+$/.test(n) || exceptPids.has(Number(n))) continue
    try {
      const cmd = readFileSync(`/proc/${n}/cmdline`, 'utf8').replace(/\0/g, ' ')
      let env = ''
      try { env = readFileSync(`/proc/${n}/environ`, 'utf8') } catch {}
      if (cmd.includes(needle) || env.includes(needle)) found.push({ pid: Number(n), cmd: cmd.slice(0, 160) })
    } catch {}
  }
  return found
}
