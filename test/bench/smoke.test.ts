/**
 * The bench harness end to end in --smoke mode (1 s, HTTP only, direct vs proxycore): it completes,
 * every server it started is gone, and wrk's output parses. Not a performance test — no numbers are
 * asserted beyond "some requests went through".
 */
import t from 'tap'
import { ensureDist, runBench } from './run-bench.js'
import { guardLeaks } from '../helpers/leaks.js'
import { findWrk, parseWrk } from '../../bench/lib/load.mjs'

guardLeaks(t)


const WRK_SAMPLE = `Running 5s test @ http://127.0.0.1:40000/100
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  601.11us  17.99ms   92.10%
    Req/Sec    21.41k     1.29k   23.14k    80.00%
  Latency Distribution
     50%    1.39ms
     75%    1.58ms
     90%    1.88ms
     99%    3.66ms
  106545 requests in 5.00s, 28.14MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  21304.77
Transfer/sec:      5.63MB
`

t.test('parseWrk reads rate, latency percentiles and errors', async (t) => {
  const r = parseWrk(WRK_SAMPLE)
  t.equal(r.rps, 21304.77)
  t.equal(r.requests, 106545)
  t.equal(r.seconds, 5)
  t.equal(r.p50, 1.39)
  t.equal(r.p99, 3.66)
  t.equal(r.maxMs, 17.99)
  t.equal(r.errors, 3)
  t.equal(r.non2xx, 7)
  t.equal(Math.round(r.transferPerSec), Math.round(5.63 * 1024 * 1024))
  t.throws(() => parseWrk('wrk: connection refused'))
})

const noWrk = findWrk() === null
if (noWrk && process.env.CI === 'true') throw new Error('wrk missing in CI (scripts/install-peers.sh installs it)')

t.test('npm run bench -- --smoke: direct vs proxycore completes', { skip: noWrk ? 'wrk not installed' : false, timeout: 60_000 }, async (t) => {
  t.equal(await ensureDist(), 0, 'dist/ is built')
  const { code, out, err } = await runBench(['--smoke', '--json'])
  t.equal(code, 0, `exit 0\n${err}`)
  const report = JSON.parse(out.trim().split('\n').pop() ?? '{}') as {
    tool: string
    scenarios: Array<{ id: string, rows: Array<{ id: string, bySize: Record<string, { runs: number, median: number, errors: number }> }> }>
  }
  t.equal(report.tool, 'wrk')
  const http = report.scenarios.find((s) => s.id === 'http')
  t.ok(http, 'HTTP scenario ran')
  for (const id of ['direct', 'proxycore']) {
    const row = http?.rows.find((r) => r.id === id)
    t.ok(row, `${id} measured`)
    t.equal(row?.bySize['100'].runs, 1, `${id}: one run`)
    t.ok((row?.bySize['100'].median ?? 0) > 0, `${id}: requests went through`)
    t.equal(row?.bySize['100'].errors, 0, `${id}: no errors`)
  }
})
