/**
 * Per-process accounting from /proc (proc(5)): CPU time of the process and of its reaped children
 * (utime+stime+cutime+cstime, so a php-cgi master that forks workers reports their work too) and
 * resident set size. Linux only; elsewhere the fields are null rather than invented.
 */
import { readFileSync } from 'node:fs'

/** USER_HZ. Linux fixes it at 100 for userspace ABI reasons (times(2), /proc/PID/stat). */
const CLOCK_TICKS = 100

export interface ProcStats {
  readonly cpuMs: number
  readonly rssBytes: number
}

export function procStats (pid: number): ProcStats | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, starting at field 3 (state); utime is field 14.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const rss = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status)
    return { cpuMs: (ticks * 1000) / CLOCK_TICKS, rssBytes: rss === null ? 0 : Number(rss[1]) * 1024 }
  } catch {
    return null
  }
}
