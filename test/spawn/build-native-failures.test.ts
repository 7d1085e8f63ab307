/**
 * scripts/build-native.mjs (npm install's script) beyond a missing or failing compiler: whatever
 * goes wrong, it says why and exits 0, and CC may carry arguments as make takes it. Run on a copy of
 * the script and the C source in a temporary directory, as build-native.test.ts does.
 */
import t from 'tap'
import { accessSync, constants, copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { leakTest } from './fixtures/guard.js'
import { tempDir } from './fixtures/manager.js'
import { runNode } from '../helpers/run-node.js'

const repo = fileURLToPath(new URL('../..', import.meta.url))
const hasCc = (() => {
  for (const d of (process.env.PATH ?? '').split(':')) if (d !== '' && existsSync(join(d, 'cc'))) return true
  return false
})()

function skeleton (dir: string): { root: string, helper: string } {
  mkdirSync(join(dir, 'scripts'))
  mkdirSync(join(dir, 'native'))
  copyFileSync(join(repo, 'scripts', 'build-native.mjs'), join(dir, 'scripts', 'build-native.mjs'))
  copyFileSync(join(repo, 'native', 'fork-server.c'), join(dir, 'native', 'fork-server.c'))
  return { root: dir, helper: join(dir, 'native', 'build', 'proxycore-fork-server') }
}

const build = (root: string, cc?: string): ReturnType<typeof runNode> =>
  runNode([join(root, 'scripts', 'build-native.mjs')], { cwd: root, env: { ...process.env, ...(cc === undefined ? {} : { CC: cc }) } })

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
  const r = await build(root, ' cc  -std=gnu11 -DPROXYCORE_AUDIT=1 ')
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
