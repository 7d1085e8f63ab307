/**
 * The V8 flags and the environment `proxycore serve` runs with live in three places: the CLI's
 * shebang (plus the flags `serve` sets at run time with v8.setFlagsFromString, and V8's gc function
 * it takes with gcFromV8, which the bench's `--expose-gc` stands for), the `start` script
 * and the bench (which gives every Node proxy the same flags and environment, so ratios stay
 * fair). They must say the same thing, and the shebang must really start Node with them.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { guardLeaks } from '../helpers/leaks.js'

const root = fileURLToPath(new URL('../../', import.meta.url))

t.test('shebang, start script and bench agree on the V8 flags and the environment', async (t) => {
  guardLeaks(t)
  const main = readFileSync(`${root}src/cli/main.ts`, 'utf8')
  const shebang = main.split('\n')[0]
  const atRunTime = [...main.matchAll(/setFlagsFromString\('([^']+)'\)/g)].map((x) => x[1])
  t.same(atRunTime, ['--no-allocation-site-pretenuring', '--heap-growing-percent=100'], 'serve turns off allocation-site pretenuring and fixes the old generation\'s growing factor at start-up')
  const m = /^#!\/usr\/bin\/env -S ((?:\w+=\S+ )*)node (.+)$/.exec(shebang)
  t.ok(m, `shebang passes the environment and flags through env -S: ${shebang}`)
  const assignments = (m?.[1] ?? '').trim()
  const env = Object.fromEntries(assignments.split(' ').filter(Boolean).map((a) => a.split('=') as [string, string]))
  const flags = (m?.[2] ?? '').split(' ')
  // Never at run time: Node 26's V8 aborted the process at the first WebAssembly compile then.
  t.same(flags.slice(-2), ['--no-liftoff', '--no-wasm-lazy-compilation'], 'the shebang turns off lazy baseline WebAssembly')
  const scenarios: string = '../../bench/lib/scenarios.mjs' // plain JS, no types
  const bench = await import(scenarios) as { NODE_PROXY_FLAGS: string[], NODE_PROXY_ENV: Record<string, string> }
  t.match(main, /const gc = gcFromV8\(\)/, 'serve takes V8\'s gc function')
  t.same(bench.NODE_PROXY_FLAGS, [...flags, ...atRunTime, '--expose-gc'], 'bench Node proxies use the CLI flags, the run-time ones too, and expose gc')
  t.same(bench.NODE_PROXY_ENV, env, 'bench Node proxies use the CLI environment')
  t.ok(Object.keys(env).length > 0, 'the shebang sets the malloc trim threshold')
  const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { scripts: Record<string, string> }
  t.match(pkg.scripts.start, `${assignments} node ${flags.join(' ')} dist/cli/main.js serve`, 'npm start uses them')
  // env -S really splits the line: this host's env starts node with the variables and flags set.
  const probe = `[process.execArgv.slice(0,${flags.length}).join(), ${Object.keys(env).map((k) => `process.env.${k}`).join(', ')}].join(' ')`
  const out = execFileSync('/usr/bin/env', ['-S', `${assignments} node ${flags.join(' ')} -p`, probe], { encoding: 'utf8', env: { PATH: process.env.PATH } }).trim()
  t.equal(out, [flags.join(','), ...Object.values(env)].join(' '), 'node sees the flags and the environment')
})
