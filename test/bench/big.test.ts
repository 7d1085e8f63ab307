/**
 * `bench/run.mjs --only big` end to end with 4 MiB bodies: every adapter (HTTP, FastCGI via php-fpm
 * and php-cgi, SCGI via uWSGI, CGI via a sh script) carries the upload and the download with sha256
 * intact, the run needs no load generator, and nothing it started outlives it. A backend whose peer
 * is not installed is skipped locally and fails under CI=true (like havePeer). No RSS or speed is
 * asserted: 4 MiB says nothing about memory, the 1 GiB run does.
 * Plus the pure parts: --big-size parsing and the docs section splice (idempotent, rest untouched).
 */
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { benchLeftovers, ensureDist, runBench } from './run-bench.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'

guardLeaks(t)


interface BigRow { backend: string, adapter: string, direction: string, bytes: number, skip?: string, ok?: boolean, error?: string | null }
interface Big { bytes: number, upload: string, rows: BigRow[], recycle: { skip?: string, requests?: number, failed?: number, processes?: number, procs?: number } | null }

t.test('--big-size and the docs splice', async (t) => {
  // plain JS modules without types: a string-typed specifier keeps tsc from looking for them
  const bigMod: string = '../../bench/lib/big.mjs'
  const reportMod: string = '../../bench/lib/report.mjs'
  const { parseBigSize } = await import(bigMod) as { parseBigSize: (s: string) => number }
  t.equal(parseBigSize('1073741824'), 1024 ** 3)
  t.equal(parseBigSize('64MiB'), 64 * 1024 ** 2)
  t.equal(parseBigSize('1GiB'), 1024 ** 3)
  t.equal(parseBigSize('512k'), 512 * 1024)
  t.throws(() => parseBigSize('lots'))

  const { spliceBigSection } = await import(reportMod) as { spliceBigSection: (md: string, big: unknown) => string }
  const md = '# Benchmarks\n\nintro\n\n## Memory: large bodies\n\nNot part of this run.\n\n## Reproduce\n\n```sh\nnpm run bench\n```\n'
  const big = {
    date: '2026-01-01T00:00:00.000Z', bytes: 1024, upload: 'content-length', targetMiB: 32, separate: true,
    rows: [
      { backend: 'cgi', adapter: 'cgi', label: 'a | b', direction: 'upload', bytes: 1024, pattern: 'gen', ok: true, error: null, seconds: 1, rssBeforeKiB: 1024, rssMaxKiB: 2048 },
      { backend: 'uwsgi', adapter: 'scgi', label: 'uWSGI', direction: 'download', bytes: 1024, skip: 'uwsgi not installed' },
    ],
  }
  const once = spliceBigSection(md, big)
  t.equal(spliceBigSection(once, big), once, 'splicing twice changes nothing')
  t.ok(once.startsWith('# Benchmarks\n\nintro\n\n## Memory: large bodies\n'), 'what precedes the section is kept')
  t.ok(once.endsWith('\n\n## Reproduce\n\n```sh\nnpm run bench\n```\n'), 'what follows it is kept')
  t.match(once, '| cgi | a \\| b | upload | intact | 1.0 | 0 | 1.0 | 2.0 | 1.0 | < 32 MiB ✓ |', 'a row per transfer, pipes escaped')
  t.match(once, 'not measured: uwsgi not installed', 'a skipped backend says why')
  t.notMatch(once, 'Not part of this run')
})

t.test('--only big: every adapter, 4 MiB up and down, sha256 intact, nothing left running', { timeout: 120_000 }, async (t) => {
  t.equal(await ensureDist(), 0, 'dist/ is built')
  // The bench's temp dir (configs, sockets, scripts) goes under our own TMPDIR, so any process
  // still running with it on its command line or in its environment afterwards is one the bench
  // failed to stop.
  const tmp = mkdtempSync(join(tmpdir(), 'pc-bench-big-'))
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }))
  const { code, out, err } = await runBench(['--only', 'big', '--big-size', '4MiB', '--no-write', '--json'], { ...process.env, TMPDIR: tmp })
  t.equal(code, 0, `exit 0\n${err}`)
  const report = JSON.parse(out.trim().split('\n').pop() ?? '{}') as { scenarios: unknown[], big: Big }
  t.same(report.scenarios, [], 'no throughput scenario ran')
  t.equal(report.big.bytes, 4 * 1024 * 1024)
  t.equal(report.big.upload, 'content-length', 'uploads carry Content-Length (no spooling)')

  for (const backend of ['http', 'php-fpm', 'php-cgi', 'uwsgi', 'cgi']) {
    for (const direction of ['upload', 'download']) {
      const row = report.big.rows.find((r) => r.backend === backend && r.direction === direction)
      t.ok(row, `${backend} ${direction}: a row`)
      if (row?.skip !== undefined) {
        if (process.env.CI === 'true' || !/not installed|missing/.test(row.skip)) t.fail(`${backend} ${direction}: ${row.skip}`)
        else t.comment(`${backend} ${direction} skipped: ${row.skip}`)
        continue
      }
      t.equal(row?.ok, true, `${backend} (${row?.adapter}) ${direction}: sha256 intact ${row?.error ?? ''}`)
    }
  }

  // Recycling under load: real processes retired and replaced while 32 clients keep asking.
  const rc = report.big.recycle
  if (rc?.skip !== undefined) {
    if (process.env.CI === 'true' || !/not installed/.test(rc.skip)) t.fail(`recycling: ${rc.skip}`)
    else t.comment(`recycling skipped: ${rc.skip}`)
  } else {
    t.equal(rc?.failed, 0, `recycling: 0 of ${rc?.requests} requests failed`)
    t.ok((rc?.processes ?? 0) > (rc?.procs ?? 0), `recycling: ${rc?.processes} processes served (more than the ${rc?.procs} slots)`)
  }

  let left: string[] = []
  t.ok(await waitFor(() => { left = benchLeftovers(tmp); return left.length === 0 }, 5000, 50), `every process the bench started is gone ${left.join('; ')}`)
})
