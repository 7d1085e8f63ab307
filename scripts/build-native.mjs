#!/usr/bin/env node
// Builds the compiled CGI fork server (native/fork-server.c → native/build/proxycore-fork-server)
// when a C compiler is there; run by `npm install` (the package's install script) and `npm run
// build`. It is optional: without a compiler, or when the build fails, pipe spawns use the Perl
// fork server instead, and this script says so and exits 0 (whatever went wrong: npm install must
// go on), with the command that builds it later: `npm rebuild proxycore` in an app that installed
// the package (under node_modules/), `npm run build` in a checkout. CC picks the compiler (default
// cc), with arguments as make takes it (CC='ccache gcc').
import { execFileSync } from 'node:child_process'
import { mkdirSync, renameSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const src = join(root, 'native', 'fork-server.c')
const out = join(root, 'native', 'build', 'proxycore-fork-server')
const cc = (process.env.CC ?? '').trim() || 'cc'
const [ccFile, ...ccArgs] = cc.split(/\s+/)

if (process.platform !== 'linux') {
  console.log(`proxycore: the compiled fork server is built on Linux only, not ${process.platform}; CGI uses the Perl one`)
  process.exit(0)
}
const tmp = `${out}.${process.pid}`
try {
  // In the try too: a package directory we may not write (read-only, another user's) is no reason
  // to fail npm install.
  mkdirSync(dirname(out), { recursive: true })
  execFileSync(ccFile, [...ccArgs, '-O2', '-Wall', '-Wextra', '-o', tmp, src], { stdio: ['ignore', 'inherit', 'pipe'] })
  renameSync(tmp, out)
} catch (err) {
  // No helper rather than one older than its source: the Perl one speaks the current protocol.
  for (const f of [tmp, out]) { try { rmSync(f, { force: true }) } catch {} }
  const spawned = typeof err.syscall === 'string' && err.syscall.startsWith('spawn')
  const why = spawned && err.code === 'ENOENT'
    ? `no C compiler (${cc})`
    : spawned || err.status != null || err.signal != null
      ? `${cc} failed: ${String(err.stderr?.length ? err.stderr : err.message).trim()}`
      : `the compiled fork server could not be built (${err.message})`
  // Where this runs decides the advice: an app has no `npm run build` of ours, a checkout has.
  const installed = root.split(/[\\/]/).includes('node_modules')
  const again = installed ? '`npm rebuild proxycore` in your app' : '`npm run build`'
  console.log(`proxycore: ${why}; CGI uses the Perl fork server (install gcc and run ${again} to build the compiled one)`)
}
