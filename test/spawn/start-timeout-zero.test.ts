/**
 * startTimeout is judged after a readiness probe, not before the first one: with `fd0` the socket
 * proxycore bound is connectable the moment the program runs, yet a `startTimeout: 0` (which the
 * config accepts) failed every start ("not connectable within 0 ms": the deadline had passed
 * before the child's pid was known, so nothing was ever probed), a crash loop into FAILED. A
 * short one did the same whenever the spawn event came late. Real peer: php-cgi on fd 0.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, tempDir } from './fixtures/manager.js'
import { peer, phpPid } from './fixtures/fcgi.js'

const PHP = '/usr/bin/php-cgi'

leakTest(t, 'fd0, startTimeout 0: php-cgi is ready at once and serves', async (t, defer) => {
  if (!peer(t, PHP)) return
  const script = join(tempDir(defer), 'pid.php')
  writeFileSync(script, '<?php echo getmypid();')
  const m = manager(defer)
  let restarts = 0
  m.on('restart', () => { restarts++ })
  m.add('php', { binPath: PHP, socketName: '127.0.0.1:0', environment: { PHP_FCGI_CHILDREN: '0' }, startTimeout: 0, restart: { maxStarts: 0 } })
  await m.start()
  await ensure(m, 'php')
  const [ep] = m.source('php').list()
  t.equal(await phpPid(ep.address, script), String(m.status()[0].processes[0].pid), 'served by the spawned php-cgi')
  t.equal(restarts, 0, 'no failed start')
  t.match(m.status()[0], { state: 'running', lastCrash: null })
})
