/**
 * A SIGHUP right after `proxycore serve` starts (systemd's `systemctl reload` after `start`): before
 * serve installed its handler, node's default action ended the process, and a HUP while the first
 * generation was being built was logged and dropped. Now it is remembered from the first module
 * loaded on (early-signals.ts) and serve reloads once it is up. The HUP is sent as soon as the
 * process catches SIGHUP at all (SigCgt in /proc), in the middle of its start.
 */
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { catchesHup, ensureBuilt, serveBare } from './run.js'

t.test('a SIGHUP during the start is not fatal and is followed by a reload once serving', async (t) => {
  guardLeaks(t, { timeoutMs: 30_000 })
  await ensureBuilt()
  const dir = mkdtempSync(join(tmpdir(), 'pc-early-hup-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'proxycore.yaml')
  // Many included files: reading the config takes long enough (twice: once before serve installs
  // its handlers, once while the first generation is built) for the HUP to land in the middle.
  mkdirSync(join(dir, 'conf.d'))
  for (let i = 0; i < 600; i++) writeFileSync(join(dir, 'conf.d', `r${i}.yaml`), `routes:\n  - { match: { prefix: /r${i}/ }, protocol: http, backends: ["127.0.0.1:9"] }\n`)
  writeFileSync(file, 'listen: 127.0.0.1:0\ninclude: conf.d/*.yaml\nroutes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n')
  const { child, exited, logged, err } = serveBare(t, file)

  t.ok(await waitFor(() => catchesHup(child.pid as number) || child.exitCode !== null, 10_000, 1), 'the process catches SIGHUP')
  t.notOk(logged('serving'), 'the HUP comes before the proxy is serving')
  child.kill('SIGHUP')
  t.ok(await waitFor(() => logged('reloaded') || child.exitCode !== null || child.signalCode !== null, 20_000), 'a reload followed')
  t.same([child.exitCode, child.signalCode], [null, null], `still running (stderr: ${err().slice(-300)})`)
  t.ok(logged('serving'))
  child.kill('SIGTERM')
  t.same(await exited, [0, null], 'and stops cleanly')
})
