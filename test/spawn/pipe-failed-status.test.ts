/**
 * A pipe (CGI) spawn added to a running manager whose start checks refuse it (here: its absolute
 * binPath is missing, ERR_SPAWN_EXEC) emits 'failed', and status() says so: `failed` with the
 * coded reason, as a socket spawn's (docs/guides/spawn.md). It used to stay `running`, reason null.
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { manager, nextEvent, tempDir } from './fixtures/manager.js'

leakTest(t, 'a pipe spawn refused when added while running is failed in status(), with its reason', async (t, defer) => {
  const m = manager(defer)
  await m.start()
  const missing = `${tempDir(defer)}/no-such-interpreter`
  const failed = nextEvent(m, 'failed', (e) => e.spawn === 'cgi', 10_000)
  m.add('cgi', { socketType: 'pipe', binPath: missing })
  const e = await failed
  t.match(e.reason, /^ERR_SPAWN_EXEC: .*not found/)
  t.match(m.status().find((s) => s.name === 'cgi'), { state: 'failed', reason: e.reason })
  // A pipe spawn that passes its checks stays running, reason null.
  m.add('ok', { socketType: 'pipe', binPath: '/usr/bin/perl' })
  t.match(m.status().find((s) => s.name === 'ok'), { state: 'running', reason: null })
  await m.close()
  t.match(m.status().find((s) => s.name === 'cgi'), { state: 'stopped', reason: e.reason }, 'closed; the reason stays, as a socket spawn\'s')
})
