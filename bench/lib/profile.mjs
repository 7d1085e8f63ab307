/**
 * --profile: proxycore's HTTP path under `node --cpu-prof` (100 B then 64 KiB), the profile saved in
 * bench/results/, and the top self-time functions printed.
 */
import { readdirSync, readFileSync, writeFileSync, mkdtempSync, renameSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { load } from './load.mjs'
import { start } from './proc.mjs'
import { startProxycore } from './scenarios.mjs'

/** Aggregate a .cpuprofile by function (name + file + line): self ms, % of samples. */
export function topSelf (profile, n = 15, root = '') {
  const dt = profile.samples.length > 0 ? (profile.endTime - profile.startTime) / profile.samples.length / 1000 : 0
  const byId = new Map(profile.nodes.map((x) => [x.id, x]))
  const counts = new Map()
  for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1)
  const agg = new Map()
  let total = 0
  for (const [id, c] of counts) {
    const node = byId.get(id)
    const f = node.callFrame
    let url = f.url.replace(/^file:\/\//, '')
    if (root && url.startsWith(root)) url = relative(root, url)
    const key = `${f.functionName || '(anonymous)'} ${url}:${f.lineNumber + 1}`
    agg.set(key, (agg.get(key) ?? 0) + c)
    total += c
  }
  return [...agg].sort((a, b) => b[1] - a[1]).slice(0, n).map(([fn, c]) => ({ fn, ms: c * dt, pct: c / total * 100 }))
}

export async function runProfile ({ ctx, tool, seconds, connections, resultsDir, log }) {
  const profDir = mkdtempSync(join(ctx.tmp, 'prof-'))
  const be = await start('backend', process.execPath, [fileURLToPath(new URL('../servers/backend.mjs', import.meta.url))])
  const pc = await startProxycore({ ...ctx, cpuProf: profDir }, 'proxycore-profile', { routes: [{ protocol: 'http', backends: [`127.0.0.1:${be.port}`] }] })
  for (const n of [100, 65536]) {
    const r = await load(tool, `http://127.0.0.1:${pc.port}/${n}`, { connections, seconds })
    log(`profile load ${n} B: ${r.rps.toFixed(0)} req/s`)
  }
  await pc.stop('SIGTERM', 10_000)
  await be.stop()
  const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'))
  if (!file) throw new Error(`no .cpuprofile written:\n${pc.log()}`)
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const dest = join(resultsDir, `proxycore-http-${stamp}.cpuprofile`)
  renameSync(join(profDir, file), dest)
  const repo = fileURLToPath(new URL('../..', import.meta.url))
  const top = topSelf(JSON.parse(readFileSync(dest, 'utf8')), 15, repo)
  const lines = ['self ms   self %  function', ...top.map((t) => `${t.ms.toFixed(0).padStart(7)}  ${t.pct.toFixed(1).padStart(6)}  ${t.fn}`)]
  writeFileSync(dest.replace(/\.cpuprofile$/, '.top.txt'), `${lines.join('\n')}\n`)
  log(`\nprofile: ${relative(repo, dest)} (open in Chrome DevTools › Performance, or speedscope)\n`)
  log(lines.join('\n'))
  return top
}
