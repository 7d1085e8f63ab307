/**
 * `proxycore serve` hands the config's trustedProxies to its status page: a request from a
 * trusted front proxy (here the test itself, on 127.0.0.1) is let in only when the client it
 * forwards for is allowed too (test/status/audit-status-trusted-front.test.ts has the page's rule
 * with nginx in front).
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { getText, serveKilled } from '../cli/run.js'

t.test('serve: behind a trusted peer, the forwarded-for client must be in status.allow', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tempDir(t, 'pc-status-trusted-')
  const config = join(dir, 'proxycore.yaml')
  writeFileSync(config, `listen: 127.0.0.1:0
trustedProxies: [127.0.0.1]
status: { allow: [127.0.0.1] }
routes:
  - { match: { prefix: / }, protocol: static, docroot: ${JSON.stringify(dir)} }
`)
  const { s } = await serveKilled(t, config)
  await s.waitLog('serving')
  const status = async (headers: Record<string, string>): Promise<number> => (await fetch(`${s.url}/server-status?format=json`, { headers })).status
  t.equal(await status({}), 200, 'the trusted peer forwarding for nobody: itself, allowed')
  t.equal(await status({ 'x-forwarded-for': '127.0.0.1' }), 200, 'forwarding for an allowed client')
  t.equal(await status({ 'x-forwarded-for': '203.0.113.7' }), 403, 'forwarding for a client outside allow: 403')
  t.equal((await getText(`${s.url}/metrics`)).status, 200)
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})
