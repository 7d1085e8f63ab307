/** Run `node bench/run.mjs …` from the repo root; its exit code and both outputs. */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export const repo = fileURLToPath(new URL('../..', import.meta.url))

export async function runBench (args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null, out: string, err: string }> {
  const child = spawn(process.execPath, ['bench/run.mjs', ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'], env })
  let out = ''
  let err = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { err += c.toString() })
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
  return { code, out, err }
}

/** The bench runs against dist/: build it if a fresh checkout has none. Resolves tsc's exit code. */
export async function ensureDist (): Promise<number | null> {
  if (existsSync(`${repo}/dist/index.js`)) return 0
  return await new Promise<number | null>((resolve) => {
    spawn(process.execPath, [`${repo}/node_modules/typescript/bin/tsc`, '-p', 'tsconfig.build.json'], { cwd: repo, stdio: 'ignore' }).once('exit', resolve)
  })
}
