/**
 * Pid files, so that a host restarted after a crash (kill -9, OOM) finds the backends its
 * predecessor left behind. A FastCGI child whose fd 0 is the listening socket never sees EOF and
 * keeps its port or socket forever [VERIFIED, RELIABILITY.md §4.7].
 *
 * Policy: clean up, never adopt (procer/daemontools style). An orphan was configured by a config we
 * may no longer have, its in-flight counts are unknown, and it is not our child so we could not
 * reap it or see its exit. A pid file's process is killed (its whole group) only if it is still
 * alive, started at the recorded time (pid reuse), and carries our marker `PROXYCORE_SPAWN=<name>`
 * in its environment; anything else is just a stale file and is removed.
 */
import { closeSync, constants, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Clock } from './types.js'
import { escalation, liveGroupMembers, stopGroup } from './group-kill.js'
import { MARKER_ENV } from './spec.js'

/**
 * `hostPid`/`hostStartTime`: the host that spawned the process (absent in files of older
 * versions). While that host still runs, its processes are not orphans, whoever else reads runDir.
 */
interface PidRecord { spawn: string, pid: number, pgid: number, startTime: string, address: string, hostPid?: number, hostStartTime?: string }

/** Field 22 of /proc/PID/stat (start time in clock ticks since boot): tells a reused pid apart. */
export function processStartTime (pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return rest[0] === 'Z' ? null : rest[19]
  } catch {
    return null
  }
}

/**
 * Whether `pid` leads its own process group (pgrp = pid). Spawned processes are group leaders, and
 * only a verified leader's own group is ever killed: the `pgid` a pid file names is not trusted,
 * so whoever can write runDir cannot steer root into killing another group.
 */
function leadsOwnGroup (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]) === pid
  } catch {
    return false
  }
}

function carriesMarker (pid: number, spawn: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`${MARKER_ENV}=${spawn}`)
  } catch {
    return false
  }
}

/**
 * The group a pid file names outlived its leader: the parent-death signal (launcher.ts) reaches
 * only the program the host spawned, and a program that leaves its forked workers behind when it
 * gets SIGTERM (fcgiwrap -c N [VERIFIED, RELIABILITY.md §4.5]) leaves them holding the listening
 * socket, so the next host could never bind it (start-limit-hit, AC-13). While any member lives,
 * no new process gets the leader's pid, so the group id is still that group's; it is ours only if
 * every live member carries our marker and started no earlier than the recorded leader.
 */
function leaderlessOrphans (rec: PidRecord, spawn: string): boolean {
  if (processStartTime(rec.pid) !== null || !/^\d+$/.test(rec.startTime)) return false
  const members = liveGroupMembers(rec.pid)
  return members.length > 0 && members.every((pid) => {
    const started = processStartTime(pid)
    return pid !== process.pid && started !== null && Number(started) >= Number(rec.startTime) && carriesMarker(pid, spawn)
  })
}

/**
 * Whether the host that wrote `rec` still runs (same pid, same start time): this process itself
 * (a reload starts the changed spawn's new manager while the old generation still serves) or
 * another instance sharing runDir. Its processes are then not orphans and are never signalled.
 * A host that is gone (crashed, kill -9), or a pid reused since, does not protect them.
 */
function hostAlive (rec: PidRecord): boolean {
  if (typeof rec.hostPid !== 'number' || !Number.isSafeInteger(rec.hostPid) || rec.hostPid <= 0 || typeof rec.hostStartTime !== 'string') return false
  return processStartTime(rec.hostPid) === rec.hostStartTime
}

/**
 * Whether `name` is exactly `<spawn>.<digits>.pid`. Spawn names may contain dots, so a prefix
 * test would hand spawn `a` the files of spawn `a.b` (`a.b.123.pid`), which it would then delete
 * without killing (wrong marker), leaving `a.b`'s orphans holding its address.
 */
export function isPidFileOf (name: string, spawn: string): boolean {
  return name.startsWith(`${spawn}.`) && /^\d+\.pid$/.test(name.slice(spawn.length + 1))
}

/** Bigger than any record: more is not ours. */
const MAX_RECORD = 4096

/**
 * A pid file's text, read without following a symlink and without blocking: a FIFO or a link
 * to one planted in runDir would hang the host's start (readFileSync blocks in open(2)).
 */
function readRecord (file: string): string {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  try {
    const st = fstatSync(fd)
    if (!st.isFile() || st.size > MAX_RECORD) throw new Error('not a pid file')
    const buf = Buffer.alloc(st.size)
    return buf.toString('utf8', 0, readSync(fd, buf, 0, st.size, 0))
  } finally {
    closeSync(fd)
  }
}

export class PidFiles {
  private readonly dir: string | undefined

  constructor (dir: string | undefined) {
    this.dir = dir
    if (dir !== undefined) mkdirSync(dir, { recursive: true, mode: 0o750 })
  }

  private file (spawn: string, pid: number): string {
    return join(this.dir as string, `${spawn}.${pid}.pid`)
  }

  /**
   * Record a process just spawned. Best effort, never throws (it runs in the child's 'spawn'
   * handler, where a throw would be an uncaught exception): a runDir removed meanwhile (tmpfiles,
   * an operator) is made again; a file that cannot be written leaves the process without one.
   * The file is created anew (O_EXCL, which never follows a symlink): whoever can write runDir
   * must not make root write through a symlink or a hard link planted at the next pid's name.
   * Returns whether the file was written.
   */
  write (spawn: string, pid: number, address: string): boolean {
    if (this.dir === undefined) return false
    const rec: PidRecord = { spawn, pid, pgid: pid, startTime: processStartTime(pid) ?? '', address, hostPid: process.pid, hostStartTime: processStartTime(process.pid) ?? '' }
    const file = this.file(spawn, pid)
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o750 })
      rmSync(file, { force: true })
      writeFileSync(file, JSON.stringify(rec) + '\n', { mode: 0o640, flag: 'wx' })
      return true
    } catch {
      return false
    }
  }

  remove (spawn: string, pid: number): void {
    if (this.dir === undefined) return
    try { rmSync(this.file(spawn, pid), { force: true }) } catch { /* runDir unreadable: nothing to remove */ }
  }

  private records (spawn: string): Array<{ file: string, rec: PidRecord | null }> {
    const dir = this.dir as string
    const out: Array<{ file: string, rec: PidRecord | null }> = []
    let names: string[]
    try {
      names = readdirSync(dir)
    } catch (err) {
      // Removed since the constructor made it: no previous host left anything there.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out
      throw err
    }
    for (const name of names) {
      if (!isPidFileOf(name, spawn)) continue
      const file = join(dir, name)
      let rec: PidRecord | null = null
      try { rec = JSON.parse(readRecord(file)) as PidRecord } catch { /* torn write, not a plain file: stale */ }
      out.push({ file, rec: rec !== null && rec.spawn === spawn ? rec : null })
    }
    return out
  }

  /**
   * Kill the process groups a previous host left for `spawn` and remove their pid files. Returns
   * the pids that were killed. Runs before any socket of the spawn is bound.
   */
  async cleanOrphans (spawn: string, clock: Clock, grace: number): Promise<number[]> {
    if (this.dir === undefined) return []
    const killed: number[] = []
    for (const { file, rec } of this.records(spawn)) {
      // A live host's process (a reload's old generation, another instance): not ours to touch.
      if (rec !== null && hostAlive(rec)) continue
      if (rec !== null && rec.pid !== process.pid && processStartTime(rec.pid) === rec.startTime && carriesMarker(rec.pid, spawn) && leadsOwnGroup(rec.pid)) {
        await stopGroup(rec.pid, { signals: escalation('SIGTERM'), grace, clock, leaderExited: Promise.resolve() })
        killed.push(rec.pid)
      } else if (rec !== null && rec.pid !== process.pid && leaderlessOrphans(rec, spawn)) {
        await stopGroup(rec.pid, { signals: escalation('SIGTERM'), grace, clock, leaderExited: Promise.resolve() })
        killed.push(rec.pid)
      }
      rmSync(file, { force: true })
    }
    return killed
  }
}
