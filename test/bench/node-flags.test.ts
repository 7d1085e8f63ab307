/**
 * The V8 flags `proxycore serve` runs with live in three places: the CLI's shebang, the `start`
 * script and the bench (which gives every Node proxy the same flags, so ratios stay fair). They
 * must say the same thing, and the shebang must really start Node with them.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { guardLeaks } from '../helpers/leaks.js'

const root = fileURLToPath(new URL('../../', import.meta.url))

t.test('shebang, start script and bench agree on the V8 flags', async (t) => {
  guardLeaks(t)
  const shebang = readFileSync(`${root}src/cli/main.ts`, 'utf8').split('\n')[0]
  const m = /^#!\/usr\/bin\/env -S node (.+)$/.exec(shebang)
  t.ok(m, `shebang passes flags through env -S: ${shebang}`)
  const flags = (m?.[1] ?? '').split(' ')
  const scenarios: string = '../../bench/lib/scenarios.mjs' // plain JS, no types
  const bench = await import(scenarios) as { NODE_PROXY_FLAGS: string[] }
  t.same(bench.NODE_PROXY_FLAGS, flags, 'bench Node proxies use the CLI flags')
  const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { scripts: Record<string, string> }
  t.match(pkg.scripts.start, `node ${flags.join(' ')} dist/cli/main.js serve`, 'npm start uses them')
  // env -S really splits the line: this host's env starts node with the flag set.
  const out = execFileSync('/usr/bin/env', ['-S', `node ${flags.join(' ')} -p process.execArgv.slice(0,${flags.length}).join()`], { encoding: 'utf8' }).trim()
  t.equal(out, flags.join(','), 'node sees the flags')
})
