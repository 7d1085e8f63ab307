/**
 * A NUL byte in a config value is refused whatever the config comes from. The file loader
 * refused it (audit35h-nul-values.test.ts), but `createProxy(config)` from a JS object took a
 * docroot, a unix backend, a runDir or a spawn's cwd with a NUL, which then failed on every
 * request or at start. Now checkConfig walks every config: ERR_CONFIG with the issue at its path.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { runCli } from '../cli/run.js'
import { createProxy, type Proxy } from '../../src/proxy.js'
import { checkConfig } from '../../src/config/check.js'
import { silentLogger } from '../../src/logger.js'
import '../../src/index.js'

/** createProxy must reject; a proxy it made anyway is closed (no child left) and the case fails. */
async function refused (config: Record<string, unknown>): Promise<unknown> {
  let proxy: Proxy | undefined
  try {
    proxy = await createProxy({ logger: silentLogger, ...config } as never)
  } catch (err) {
    return err
  }
  await proxy.close(0)
  return null
}

t.test('createProxy refuses a NUL in any value, with or without spawns', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit36-nul-')
  const spawn = { binPath: '/bin/sleep 100', socketName: '127.0.0.1:0' }
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['docroot', { routes: [{ protocol: 'static', docroot: `${dir}\u0000x` }] }, '/routes/0/docroot'],
    ['unix backend', { routes: [{ protocol: 'http', backends: [`unix:${dir}/a\u0000b.sock`] }] }, '/routes/0/backends/0'],
    ['runDir', { runDir: `${dir}/r\u0000b`, spawns: { s: spawn }, routes: [{ protocol: 'http', spawn: 's' }] }, '/runDir'],
    ['cwd', { spawns: { s: { ...spawn, cwd: `${dir}\u0000x` } }, routes: [{ protocol: 'http', spawn: 's' }] }, '/spawns/s/cwd'],
    ['unix listen', { listen: `unix:${dir}/x\u0000y.sock`, routes: [{ protocol: 'http', backends: ['127.0.0.1:9'] }] }, '/listen'],
  ]
  for (const [name, config, path] of cases) {
    const err = await refused(config)
    t.match(err, { code: 'ERR_CONFIG', issues: [{ path, message: /NUL/ }] }, `${name}: ERR_CONFIG at ${path}`)
    t.equal((err as { issues?: unknown[] } | null)?.issues?.length, 1, `${name}: one issue`)
  }
  // A key: the issue is at the key, once (nothing under it is walked).
  const key = await checkConfig({ routes: [{ protocol: 'http', backends: ['127.0.0.1:9'] }], spawns: { s: { ...spawn, environment: { ok: 'x' } } }, x: { 'a\u0000b': { c: 'd\u0000' } } }, { shape: 'embed' })
  t.same(key.map((i) => i.path), ['/x', '/x/a\u0000b'], 'a key with a NUL: one issue at the key (and x is no key of the config)')
  // An unknown top-level key is refused; a cycle under it is not walked forever.
  const cyclic: Record<string, unknown> = { name: 'ok' }
  cyclic.self = cyclic
  t.same((await checkConfig({ routes: [{ protocol: 'http', backends: ['127.0.0.1:9'] }], extra: cyclic }, { shape: 'embed' })).map((i) => i.path), ['/extra'], 'a cyclic object under an unknown key: refused, no hang')
})

t.test('check refuses a NUL in a logDir (no other rule reads it): exit 2, its line, no stack trace', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit36-nul-cli-')
  const file = join(dir, 'log-dir.json')
  writeFileSync(file, '{"routes": [{"protocol": "http", "backends": ["127.0.0.1:9"]}],\n "logDir": "/tmp/l\\u0000x"}\n')
  const check = await runCli(['check', file])
  t.equal(check.code, 2, 'exit 2')
  t.match(check.stderr, /log-dir\.json:2:\d+: \/logDir: .*NUL byte/)
  t.match(check.stderr, /log-dir\.json: 1 problem\(s\)/)
  t.notMatch(check.stderr, /\n\s+at |TypeError|RangeError/)
})
