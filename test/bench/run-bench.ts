/** Run `node bench/run.mjs …` from the repo root; its exit code and both outputs. */
import { existsSync } from 'node:fs'
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
