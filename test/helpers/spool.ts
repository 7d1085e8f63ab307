/**
 * A private spool directory for a test file: the spool's directory is os.tmpdir(), which reads
 * TMPDIR on each call, so pointing TMPDIR at a fresh directory makes the listing see only this
 * file's spools. Restored (and removed) at the file's teardown.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openFds, waitFor } from './leaks.js'

interface Teardown { teardown (fn: () => void): void }

export function privateSpoolDir (t: Teardown, prefix: string) {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const savedTmp = process.env.TMPDIR
  process.env.TMPDIR = dir
  t.teardown(() => {
    if (savedTmp === undefined) delete process.env.TMPDIR
    else process.env.TMPDIR = savedTmp
    rmSync(dir, { recursive: true, force: true })
  })
  /** Open fds of spool files (they are unlinked at once: the fd is what is left of them). */
  const spoolFds = (): string[] => [...openFds().values()].filter((p) => p.includes('proxycore-spool-'))
  /** Spool files still in the directory. */
  const spoolFiles = (): string[] => readdirSync(dir).filter((n) => n.startsWith('proxycore-spool-'))
  /** True once no spool fd or file is left (within `ms`). */
  const spoolGone = async (ms = 10_000): Promise<boolean> => await waitFor(() => spoolFds().length === 0 && spoolFiles().length === 0, ms)
  return { dir, spoolFds, spoolFiles, spoolGone }
}
