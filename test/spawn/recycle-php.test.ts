/**
 * Recycling against a real php-cgi (FastCGI, socket on fd 0, PHP_FCGI_CHILDREN=0: one process,
 * one request at a time) with maxProcs 1 under concurrent load: no request fails, every process
 * retires after exactly maxRequests, and the successor started ahead spares most requests a wait
 * (the count that found nothing routable is printed: at 8 connections a successor can still be
 * booting when its predecessor's last requests arrive).
 */
import t, { type Test } from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, tempDir } from './fixtures/manager.js'
import { phpPid } from './fixtures/fcgi.js'
import { drive } from './fixtures/drive.js'
import { childrenOf } from '../helpers/leaks.js'

const PHP = '/usr/bin/php-cgi'

function peer (t: Test): boolean {
  if (existsSync(PHP)) return true
  if (process.env.CI === 'true') t.fail(`${PHP} missing (required in CI)`)
  else t.pass(`${PHP} not installed`, { skip: `${PHP} not installed` })
  return false
}

leakTest(t, 'php-cgi, maxProcs 1, maxRequests 10: 200 requests over 8 connections, 0 failures, every process retired at exactly maxRequests', async (t, defer) => {
  if (!peer(t)) return
  const dir = tempDir(defer)
  const script = join(dir, 'pid.php')
  writeFileSync(script, '<?php echo getmypid();')
  const m = manager(defer)
  m.add('php', { binPath: PHP, socketName: join(dir, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '0' }, maxRequests: 10, minProcs: 1, maxProcs: 1, idleTimeout: 0, stopTimeout: 5000 })
  const recycled: number[] = []
  let maxChildren = 0
  let unexpected = 0
  m.on('recycle', (e) => recycled.push(e.requests))
  m.on('spawn', () => { maxChildren = Math.max(maxChildren, childrenOf().length) })
  m.on('exit', (e) => { if (!e.expected) unexpected++ })
  await m.start()
  await ensure(m, 'php')
  const t0 = Date.now()
  const res = await drive(m.source('php'), 200, 8, (address) => phpPid(address, script))
  t.comment(`200 php requests over 8 connections, recycling at 10: ${Date.now() - t0} ms, ${recycled.length} recycles, ${res.waited} requests found nothing routable`)
  t.equal(res.failed, 0, 'no failed request', { errors: res.errors })
  t.equal(res.ok, 200)
  const pids = new Set(res.bodies)
  t.ok(pids.size >= 200 / 10, `200 / 10 processes or more served (${pids.size} php-cgi pids)`)
  t.ok(recycled.length >= 19, `recycle events (${recycled.length})`)
  t.same([...new Set(recycled)], [10], 'each retired process served exactly maxRequests')
  t.equal(unexpected, 0, 'every exit was the manager stopping a retired process')
  // The routable process, its booting successor, and retired ones finishing their last request.
  t.ok(maxChildren <= 2 + 8, `live children bounded (max seen ${maxChildren})`)
  // Request 200 was the last process's 10th: its successor may still be booting.
  await ensure(m, 'php')
  const st = m.status()[0]
  t.equal(st.state, 'running')
  t.equal(st.processes.filter((p) => p.state === 'ready').length, 1, 'one routable process (maxProcs 1)')
})
