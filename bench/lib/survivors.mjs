/**
 * --survivors [--only SCENARIO]: what proxycore's requests leave behind for the old generation.
 *
 * Under the 32-connection load a request's objects should die young, in the semi-space. What a
 * scavenge does not collect is promoted, and promoted garbage grows the old generation until the
 * next mark-compact; V8 lets it grow by at least 8 MB past the live size, so a steady trickle of
 * promotions shows up as megabytes of peak RSS (docs/design/architecture.md, "What HTTP's requests
 * promote"). This runs proxycore with survivors-hook.mjs preloaded, samples for the length of one load
 * per body size, and prints the allocation sites of the surviving bytes per request.
 *
 * --allocations: the same, keeping the objects that died young too. What a request allocates sets
 * how often the scavenger runs, and each scavenge copies whatever the requests in flight still hold.
 */
import { existsSync, mkdtempSync, readFileSync, renameSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { load } from './load.mjs'
import { areaOf, keyOf, startProfiled } from './profile.mjs'

/**
 * Sum a sampling heap profile's self sizes by allocation site: the allocating frame and up to
 * `depth - 1` of its callers. `requests` (served while sampling) turns bytes into bytes per request.
 * Returns { bytes, perRequest, sites: [{ site, bytes, perRequest, share }] (largest first, `n` of
 * them), areas: [{ area, bytes, perRequest }] } — areas by the allocating frame, as --profile's.
 */
export function aggregateSurvivors (profile, { requests, root = '', depth = 3, n = 12 } = {}) {
  const sites = new Map()
  const areas = new Map()
  let bytes = 0
  const walk = (node, stack) => {
    const here = [keyOf(node.callFrame, root), ...stack]
    if (node.selfSize > 0) {
      bytes += node.selfSize
      const key = here.slice(0, depth).join(' ← ')
      sites.set(key, (sites.get(key) ?? 0) + node.selfSize)
      const area = areaOf(node.callFrame)
      areas.set(area, (areas.get(area) ?? 0) + node.selfSize)
    }
    for (const c of node.children ?? []) walk(c, here)
  }
  // the root node is "(root)": its children are the outermost frames
  for (const c of profile.head.children ?? []) walk(c, [])
  const per = (b) => requests > 0 ? b / requests : 0
  return {
    bytes,
    perRequest: per(bytes),
    sites: [...sites].sort((a, b) => b[1] - a[1]).slice(0, n)
      .map(([site, b]) => ({ site, bytes: b, perRequest: per(b), share: bytes === 0 ? 0 : b / bytes })),
    areas: [...areas].sort((a, b) => b[1] - a[1]).map(([area, b]) => ({ area, bytes: b, perRequest: per(b) })),
  }
}

async function waitForFile (file, deadlineMs) {
  const deadline = Date.now() + deadlineMs
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`survivors: ${file} was not written within ${deadlineMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/**
 * `all` (--allocations): every sampled allocation, the objects that died young included, instead
 * of only the survivors: bytes allocated per request by site.
 */
export async function runSurvivors ({ ctx, tool, seconds, connections, resultsDir, log, scenario = null, all = false, sizes = [100, 65536] }) {
  const dir = mkdtempSync(join(ctx.tmp, 'survivors-'))
  const hook = pathToFileURL(fileURLToPath(new URL('survivors-hook.mjs', import.meta.url)))
  hook.searchParams.set('out', dir)
  if (all) hook.searchParams.set('young', '1')
  const kind = all ? 'allocations' : 'survivors'
  const { pc, id, stops } = await startProfiled(ctx, scenario, ['--import', hook.href])
  const repo = fileURLToPath(new URL('../..', import.meta.url))
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const results = []
  try {
    // warm-up: the JIT, the connection pools and their first requests' objects are not the
    // steady state being measured
    for (const n of sizes) await load(tool, pc.url(n), { connections, seconds: 2 })
    let k = 0
    for (const n of sizes) {
      process.kill(pc.pid, 'SIGUSR2')
      const r = await load(tool, pc.url(n), { connections, seconds })
      process.kill(pc.pid, 'SIGUSR2')
      const file = join(dir, `survivors-${pc.pid}-${k++}.heapprofile`)
      await waitForFile(file, 30_000)
      const dest = join(resultsDir, `${kind}-${id}-${n}-${stamp}.heapprofile`)
      renameSync(file, dest)
      const agg = aggregateSurvivors(JSON.parse(readFileSync(dest, 'utf8')), { requests: r.requests, root: repo })
      results.push({ size: n, rps: r.rps, requests: r.requests, ...agg, file: relative(repo, dest) })
    }
  } finally {
    await pc.stop('SIGTERM', 10_000)
    for (const stop of stops) await stop()
  }
  for (const x of results) {
    log(`\n${id} at ${x.size} B: ${x.requests} requests (${x.rps.toFixed(0)} req/s, slowed by the sampling); ` +
      `${(x.bytes / 1024).toFixed(0)} KiB ${all ? 'allocated' : 'survived a scavenge'} = ${x.perRequest.toFixed(1)} B per request (${x.file})`)
    log(`   by area: ${x.areas.map((a) => `${a.area} ${a.perRequest.toFixed(0)} B`).join(', ')}`)
    log('   B/req  share  allocation site ← callers')
    for (const s of x.sites) log(`${s.perRequest.toFixed(1).padStart(8)}  ${(s.share * 100).toFixed(0).padStart(4)} %  ${s.site}`)
  }
  return results
}
