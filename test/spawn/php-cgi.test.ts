/**
 * Real peers: php-cgi and fcgiwrap accept on the fd 0 socket the manager binds (FastCGI §2.2).
 */
import t from 'tap'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { ensure, listed, manager, tempDir } from './fixtures/manager.js'
import { cgiEnv, fcgiRequest, peer, phpPid } from './fixtures/fcgi.js'
import { drive } from './fixtures/drive.js'
import { processGroup, waitFor } from '../helpers/leaks.js'

const PHP = '/usr/bin/php-cgi'
const FCGIWRAP = '/usr/sbin/fcgiwrap'

function phpScript (dir: string): string {
  const script = join(dir, 'pid.php')
  writeFileSync(script, '<?php echo getmypid();')
  return script
}

leakTest(t, 'php-cgi on fd 0 over unix and TCP', async (t, defer) => {
  if (!peer(t, PHP)) return
  const dir = tempDir(defer)
  const script = phpScript(dir)
  const m = manager(defer)
  m.add('php', { binPath: PHP, socketName: [join(dir, 'php.sock'), '127.0.0.1:0'], environment: { PHP_FCGI_CHILDREN: '0' } })
  await m.start()
  await ensure(m, 'php')
  await listed(m.source('php'), 2)
  for (const ep of m.source('php').list()) {
    const pid = await phpPid(ep.address, script)
    t.ok(m.status()[0].processes.some((p) => String(p.pid) === pid), `${ep.address} served by its own php-cgi`)
  }
})

leakTest(t, 'php-cgi PHP_FCGI_CHILDREN=0 recycled by the manager: 0 failures under load', async (t, defer) => {
  if (!peer(t, PHP)) return
  const dir = tempDir(defer)
  const script = phpScript(dir)
  const m = manager(defer)
  // No PHP_FCGI_MAX_REQUESTS: php-cgi's own limit would exit mid-queue and drop requests
  // (RELIABILITY.md §4.5 [VERIFIED]); the manager recycles instead.
  m.add('php', { binPath: PHP, socketName: join(dir, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '0' }, maxRequests: 5, minProcs: 2, maxProcs: 2, idleTimeout: 0 })
  await m.start()
  await ensure(m, 'php')
  const t0 = Date.now()
  const res = await drive(m.source('php'), 200, 20, (address) => phpPid(address, script))
  t.comment(`200 php requests, 20 concurrent, recycling every 5: ${Date.now() - t0} ms`)
  t.equal(res.failed, 0, 'no failed request', { errors: res.errors })
  t.ok(new Set(res.bodies).size >= 40, `>= 40 distinct php-cgi pids (got ${new Set(res.bodies).size})`)
})

// AC-12 (php-cgi part): stop reaches the PHP_FCGI_CHILDREN=2 workers, no zombie.
leakTest(t, 'php-cgi PHP_FCGI_CHILDREN=2: stop removes the master and every worker', async (t, defer) => {
  if (!peer(t, PHP)) return
  const dir = tempDir(defer)
  const script = phpScript(dir)
  const m = manager(defer)
  m.add('php', { binPath: PHP, socketName: '127.0.0.1:0', environment: { PHP_FCGI_CHILDREN: '2' } })
  await m.start()
  await ensure(m, 'php')
  const master = m.status()[0].processes[0].pid as number
  t.ok(await waitFor(() => processGroup(master).length === 3, 5000), 'master + 2 workers in one group')
  const worker = await phpPid(m.source('php').list()[0].address, script)
  t.not(worker, String(master), 'a worker answered')
  await m.close()
  t.same(processGroup(master).filter((p) => p.state !== 'Z'), [], 'whole group gone')
})

// AC-12 (fcgiwrap -c 2 variant): stopping the group reaches both workers.
leakTest(t, 'fcgiwrap -c 2 on fd 0 runs a CGI script; stop reaches its workers', async (t, defer) => {
  if (!peer(t, FCGIWRAP)) return
  const dir = tempDir(defer)
  const script = join(dir, 'env.sh')
  writeFileSync(script, '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n"\necho "ok $$"\n')
  chmodSync(script, 0o755)
  const m = manager(defer)
  m.add('cgi', { binPath: [FCGIWRAP, '-c', '2'], socketName: join(dir, 'fcgiwrap.sock') })
  await m.start()
  await ensure(m, 'cgi')
  const r = await fcgiRequest(m.source('cgi').list()[0].address, cgiEnv(script))
  t.match(r.stdout, /\r\n\r\nok \d+\n$/)
  const leader = m.status()[0].processes[0].pid as number
  t.ok(await waitFor(() => processGroup(leader).length >= 3, 5000), 'fcgiwrap forked its workers into the group')
  await m.close()
  t.same(processGroup(leader).filter((p) => p.state !== 'Z'), [], 'workers stopped with the parent (signalled as a group)')
})

leakTest(t, 'php-cgi is not left to its compiled-in 500-request exit (PHP_FCGI_MAX_REQUESTS defaults to 0)', async (t, defer) => {
  if (!peer(t, PHP)) return
  const dir = tempDir(defer)
  const script = phpScript(dir)
  const m = manager(defer)
  m.add('php', { binPath: PHP, socketName: join(dir, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '0' } })
  let exits = 0
  m.on('exit', () => { exits++ })
  await m.start()
  await ensure(m, 'php')
  const [ep] = m.source('php').list()
  const pids = new Set<string>()
  for (let i = 0; i < 505; i++) pids.add(await phpPid(ep.address, script))
  t.equal(pids.size, 1, 'one process served all 505 requests')
  t.equal(exits, 0, 'it never exited on its own')
})
