/**
 * scripts/build-native.mjs, run on a copy of the package's two files in a temporary directory (the
 * script finds its source and output next to itself, so the repo's own helper stays untouched):
 * with a compiler it builds an executable helper; without one, or when the compiler fails (an
 * error, a signal, an output directory it cannot make), it says why, exits 0 (npm install goes on)
 * and leaves no helper behind — not even an older one. CC may carry arguments, as make takes it.
 */
import t from 'tap'
import { accessSync, constants, copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { leakTest } from './fixtures/guard.js'
import { tempDir } from './fixtures/manager.js'
import { runNode } from '../helpers/run-node.js'

const repo = fileURLToPath(new URL('../..', import.meta.url))
const hasCc = (() => {
  for (const d of (process.env.PATH ?? '').split(':')) if (d !== '' && existsSync(join(d, 'cc'))) return true
  return false
})()

/** A package skeleton with the script and the C source; returns its root and the helper's path. */
function skeleton (dir: string): { root: string, helper: string } {
  mkdirSync(join(dir, 'scripts'))
  mkdirSync(join(dir, 'native'))
  copyFileSync(join(repo, 'scripts', 'build-native.mjs'), join(dir, 'scripts', 'build-native.mjs'))
  copyFileSync(join(repo, 'native', 'fork-server.c'), join(dir, 'native', 'fork-server.c'))
  return { root: dir, helper: join(dir, 'native', 'build', 'proxycore-fork-server') }
}

const build = (root: string, cc?: string): ReturnType<typeof runNode> =>
  runNode([join(root, 'scripts', 'build-native.mjs')], { cwd: root, env: { ...process.env, ...(cc === undefined ? {} : { CC: cc }) } })

leakTest(t, 'no compiler: it says so, exits 0, and leaves no helper (an older one is removed)', async (t, defer) => {
  const { root, helper } = skeleton(tempDir(defer))
  mkdirSync(join(root, 'native', 'build'))
  writeFileSync(helper, '#!/bin/sh\necho stale\n', { mode: 0o755 })
  const r = await build(root, join(root, 'no-such-cc'))
  t.equal(r.code, 0, 'npm install goes on')
  t.match(r.stdout, /proxycore: no C compiler \(.*no-such-cc\); CGI uses the Perl fork server/)
  t.notOk(existsSync(helper), 'no helper, not even the stale one')
})

leakTest(t, 'a compiler that fails: its reason is shown, exit 0, no helper', async (t, defer) => {
  const { root, helper } = skeleton(tempDir(defer))
  writeFileSync(join(root, 'failing-cc'), '#!/bin/sh\necho "fork-server.c:1: error: this compiler refuses" >&2\nexit 1\n', { mode: 0o755 })
  const r = await build(root, join(root, 'failing-cc'))
  t.equal(r.code, 0)
  t.match(r.stdout, /failing-cc failed: fork-server\.c:1: error: this compiler refuses; CGI uses the Perl fork server/)
  t.notOk(existsSync(helper))
})

// Without cc: skipped locally, run (and failed) under CI, where install-peers.sh installs gcc.
leakTest(t, 'with cc: an executable helper that speaks (it says its usage without a socket path)', async (t, defer) => {
  const { root, helper } = skeleton(tempDir(defer))
  const r = await build(root)
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, '', 'nothing to say when it works')
  t.doesNotThrow(() => accessSync(helper, constants.X_OK), 'built and executable')
  const child = spawn(helper, [], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const [code] = await once(child, 'close') as [number | null]
  t.same([code, stderr], [1, 'fork server: usage: proxycore-fork-server <socket path>\n'])
}, { skip: hasCc || process.env.CI === 'true' ? false : 'no cc on PATH' })

leakTest(t, 'the output directory cannot be made: it says why and exits 0 (npm install goes on)', async (t, defer) => {
  const { root } = skeleton(tempDir(defer))
  // A file where native/build should be: mkdir fails as it would in a package directory we cannot write.
  writeFileSync(join(root, 'native', 'build'), '')
  const r = await build(root, 'cc')
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stderr, '', 'no stack trace')
  t.match(r.stdout, /^proxycore: the compiled fork server could not be built \(EEXIST: .*native\/build.*\); CGI uses the Perl fork server/)
})

leakTest(t, 'CC with arguments, as make takes it (cc -std=gnu11): the helper is built', async (t, defer) => {
  const { root, helper } = skeleton(tempDir(defer))
  const r = await build(root, ' cc  -std=gnu11 -DPROXYCORE_CC_ARGS=1 ')
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, '', 'nothing to say when it works')
  t.doesNotThrow(() => accessSync(helper, constants.X_OK), 'built and executable')
}, { skip: hasCc || process.env.CI === 'true' ? false : 'no cc on PATH' })

leakTest(t, 'a compiler killed by a signal: exit 0, a reason, no helper', async (t, defer) => {
  const { root, helper } = skeleton(tempDir(defer))
  writeFileSync(join(root, 'killed-cc'), '#!/bin/sh\nkill -9 $$\n', { mode: 0o755 })
  const r = await build(root, join(root, 'killed-cc'))
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /killed-cc failed: .*; CGI uses the Perl fork server/)
  t.notOk(existsSync(helper))
})
