/**
 * `npm run bench -- --survivors` and `--allocations`: the sums by allocation site and by area (on a
 * hand-made profile), and both modes end to end: proxycore sampled under wrk at both body sizes,
 * one .heapprofile per size, every process it started gone afterwards. Not a performance test: no byte count is asserted beyond
 * "something was sampled".
 */
import t from 'tap'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { aggregateSurvivors, type SamplingHeapProfileNode } from '../../bench/lib/survivors.mjs'
import { findWrk } from '../../bench/lib/load.mjs'
import { guardLeaks } from '../helpers/leaks.js'
import { ensureDist, repo, runBench } from './run-bench.js'

guardLeaks(t)

const node = (functionName: string, url: string, line: number, selfSize: number, children: SamplingHeapProfileNode[] = []): SamplingHeapProfileNode =>
  ({ callFrame: { functionName, url, lineNumber: line - 1 }, selfSize, children })

// (root) → handle (dist/core/runtime.js:63) → kDispatch (undici client.js:340) 3000 B
//                                            → Socket (node:net:359) 1000 B
//        → onconnection (node:net:2168) 600 B → Socket (node:net:359) 400 B
const PROFILE = {
  head: node('(root)', '', 0, 0, [
    node('handle', 'file:///repo/dist/core/runtime.js', 63, 0, [
      node('', 'file:///repo/node_modules/undici/lib/dispatcher/client.js', 340, 3000),
      node('Socket', 'node:net', 359, 1000),
    ]),
    node('onconnection', 'node:net', 2168, 600, [node('Socket', 'node:net', 359, 400)]),
  ]),
}

t.test('aggregateSurvivors sums self sizes by allocation site and divides by the requests', async (t) => {
  const r = aggregateSurvivors(PROFILE, { requests: 100, root: '/repo/' })
  t.equal(r.bytes, 5000)
  t.equal(r.perRequest, 50)
  t.same(r.sites.map((s) => [s.site, s.bytes, s.perRequest, s.share]), [
    ['(anonymous) node_modules/undici/lib/dispatcher/client.js:340 ← handle dist/core/runtime.js:63', 3000, 30, 0.6],
    ['Socket node:net:359 ← handle dist/core/runtime.js:63', 1000, 10, 0.2],
    ['onconnection node:net:2168', 600, 6, 0.12],
    ['Socket node:net:359 ← onconnection node:net:2168', 400, 4, 0.08],
  ])
  // by the allocating frame's area, as --profile counts them
  t.same(r.areas, [
    { area: 'undici', bytes: 3000, perRequest: 30 },
    { area: 'node internals', bytes: 2000, perRequest: 20 },
  ])
  // depth 1: the allocating frame alone, so both Socket sites are one
  const flat = aggregateSurvivors(PROFILE, { requests: 100, root: '/repo/', depth: 1, n: 2 })
  t.same(flat.sites.map((s) => [s.site, s.bytes]), [
    ['(anonymous) node_modules/undici/lib/dispatcher/client.js:340', 3000],
    ['Socket node:net:359', 1400],
  ])
  t.equal(aggregateSurvivors(PROFILE, { requests: 0 }).perRequest, 0, 'no requests: no division by zero')
})

const noWrk = findWrk() === null
if (noWrk && process.env.CI === 'true') throw new Error('wrk missing in CI (scripts/install-peers.sh installs it)')

for (const kind of ['survivors', 'allocations']) {
  t.test(`npm run bench -- --${kind} samples proxycore at both sizes`, { skip: noWrk ? 'wrk not installed' : false, timeout: 120_000 }, async (t) => {
    t.equal(await ensureDist(), 0, 'dist/ is built')
    const { code, out, err } = await runBench([`--${kind}`, '--duration', '1'])
    t.equal(code, 0, `exit 0\n${err}`)
    const text = out + err
    for (const size of [100, 65536]) {
      const m = new RegExp(`http at ${size} B: (\\d+) requests .* = ([\\d.]+) B per request \\((bench/results/${kind}-http-${size}-[^)]+\\.heapprofile)\\)\\n   by area: (.*)`).exec(text)
      if (m === null) { t.fail(`no line for ${size} B in the output:\n${text}`); continue }
      t.ok(Number(m[1]) > 0, 'requests went through')
      // everything a request allocates includes proxycore's own objects; what survives may not
      t.match(m[4], kind === 'allocations' ? /\bproxycore \d+ B\b/ : /\d+ B\b/, 'bytes by area are shown')
      const file = join(repo, m[3])
      t.ok(existsSync(file), `${m[3]} written`)
      const profile = JSON.parse(readFileSync(file, 'utf8')) as { head: SamplingHeapProfileNode }
      t.ok(aggregateSurvivors(profile, { requests: Number(m[1]) }).bytes > 0, 'something was sampled')
      rmSync(file)
    }
  })
}
