/** Run `node bench/run.mjs …` from the repo root; its exit code and both outputs. */
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { runNode } from '../helpers/run-node.js'
import { ensureBuilt } from '../cli/run.js'

export const repo = fileURLToPath(new URL('../..', import.meta.url))

export async function runBench (args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null, out: string, err: string }> {
  const r = await runNode(['bench/run.mjs', ...args], { cwd: repo, env })
  return { code: r.code, out: r.stdout, err: r.stderr }
}

/** The bench runs against dist/: (re)build it as the CLI tests do (stale check, one build at a time). 0 = there. */
export async function ensureDist (): Promise<number | null> {
  await ensureBuilt()
  return existsSync(`${repo}/dist/index.js`) ? 0 : 1
}

/** Processes a bench run left behind: their command line names its temp dir, or they inherited TMPDIR=tmp from it. */
export function benchLeftovers (tmp: string): string[] {
  const found: string[] = []
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')
      if (cmd.includes(tmp) || readFileSync(`/proc/${pid}/environ`, 'utf8').includes(`TMPDIR=${tmp}\0`)) found.push(`${pid} ${cmd.slice(0, 120)}`)
    } catch {}
  }
  return found
}
