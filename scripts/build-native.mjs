#!/usr/bin/env node
// Builds the compiled CGI fork server (native/fork-server.c → native/build/proxycore-fork-server)
// when a C compiler is there; run by `npm install` (the package's install script) and `npm run
// build`. It is optional: without a compiler, or when the build fails, pipe spawns use the Perl
// fork server instead, and this script says so and exits 0. CC picks the compiler (default cc).
import { execFileSync } from 'node:child_process'
import { mkdirSync, renameSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const src = join(root, 'native', 'fork-server.c')
const out = join(root, 'native', 'build', 'proxycore-fork-server')
const cc = process.env.CC || 'cc'

if (process.platform !== 'linux') {
  console.log(`proxycore: the compiled fork server is built on Linux only, not ${process.platform}; CGI uses the Perl one`)
  process.exit(0)
}
mkdirSync(dirname(out), { recursive: true })
const tmp = `${out}.${process.pid}`
try {
  execFileSync(cc, ['-O2', '-Wall', '-Wextra', '-o', tmp, src], { stdio: ['ignore', 'inherit', 'pipe'] })
  renameSync(tmp, out)
} catch (err) {
  // No helper rather than one older than its source: the Perl one speaks the current protocol.
  rmSync(tmp, { force: true })
  rmSync(out, { force: true })
  const why = err.code === 'ENOENT' ? `no C compiler (${cc})` : `${cc} failed: ${String(err.stderr ?? err.message).trim()}`
  console.log(`proxycore: ${why}; CGI uses the Perl fork server (install gcc and run npm run build to build the compiled one)`)
}
