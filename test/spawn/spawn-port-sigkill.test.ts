/**
 * Real php-cgi (fd 0, `127.0.0.1:0`) behind a FastCGI route, under steady load, killed with
 * SIGKILL several times: every restart keeps the slot's kernel-assigned port (group.ts,
 * "Address of each process"), and what the clients saw is counted by status and error code
 * (docs/guides/spawn.md, "Restarts and addresses", quotes these counts).
 */
import t from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'node:http'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { proxyServer } from '../helpers/servers.js'
import { tempDir } from './fixtures/manager.js'
import type { Logger } from '../../src/core/types.js'

const PHP = '/usr/bin/php-cgi'
const KILLS = 4
const CLIENTS = 8
/** Bound of every client loop: it stops at the end of the kills, or here. */
const MAX_PER_CLIENT = 3000

interface Outcome { status: number, code: string, ms: number }

function get (url: string): Promise<Outcome> {
  const t0 = Date.now()
  return new Promise((resolve) => {
    const req = request(url, { agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString()
        resolve({ status: res.statusCode ?? 0, code: /ERR_[A-Z_]+/.exec(body)?.[0] ?? (res.statusCode === 200 ? 'ok' : 'other'), ms: Date.now() - t0 })
      })
      res.on('error', () => resolve({ status: 0, code: 'client-error', ms: Date.now() - t0 }))
    })
    req.on('error', () => resolve({ status: 0, code: 'client-error', ms: Date.now() - t0 }))
    req.end()
  })
}

t.test('php-cgi on 127.0.0.1:0 killed under load: the address stays, failures counted', { skip: process.env.CI !== 'true' && !existsSync(PHP) ? 'php-cgi not installed' : false }, async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = tempDir((fn) => t.teardown(fn))
  writeFileSync(join(dir, 'index.php'), '<?php usleep(2000); echo getmypid();')
  const logged: Array<Record<string, unknown>> = []
  const collect = (level: string) => (obj: object, msg?: string): void => { logged.push({ level, msg, ...obj }) }
  const logger: Logger = { debug: () => {}, info: collect('info'), warn: collect('warn'), error: collect('error') }
  const { proxy, url } = await proxyServer(t, {
    logger,
    spawns: { php: { binPath: PHP, socketName: '127.0.0.1:0', environment: { PHP_FCGI_CHILDREN: '0' }, restart: { maxStarts: 50 } } },
    routes: [{ protocol: 'fastcgi', spawn: 'php', docroot: dir, index: ['index.php'] }],
  })
  const spawns = proxy.spawns
  if (spawns === undefined || spawns === null) throw new Error('no spawn manager')
  t.equal((await get(`${url}/index.php`)).status, 200, 'first request served')

  const ready = (): { pid: number, address: string } | null => {
    const p = spawns.status()[0].processes.find((q) => q.state === 'ready')
    return p === undefined || p.pid === null ? null : { pid: p.pid, address: p.address }
  }
  let stop = false
  const outcomes: Outcome[] = []
  /** Requests sent while no process was ready (the crashed one gone, its restart not up yet). */
  const meanwhile: Outcome[] = []
  let okSince = 0
  const client = async (): Promise<void> => {
    for (let i = 0; i < MAX_PER_CLIENT && !stop; i++) {
      const down = ready() === null
      const o = await get(`${url}/index.php`)
      outcomes.push(o)
      if (down) meanwhile.push(o)
      if (o.status === 200) okSince++
    }
  }
  const clients = Promise.all(Array.from({ length: CLIENTS }, async () => await client()))

  const addresses: string[] = []
  for (let k = 0; k < KILLS; k++) {
    // Steady load on the current process first: 30 requests served since the last restart.
    okSince = 0
    t.ok(await waitFor(() => okSince >= 30 && ready() !== null, 20_000), `kill ${k + 1}: load is served`)
    const victim = ready()
    if (victim === null) break
    addresses.push(victim.address)
    process.kill(victim.pid, 'SIGKILL')
    t.ok(await waitFor(() => { const r = ready(); return r !== null && r.pid !== victim.pid }, 20_000), `kill ${k + 1}: a new process is ready`)
  }
  okSince = 0
  t.ok(await waitFor(() => okSince >= 30, 20_000), 'load is served after the last restart')
  const last = ready()
  if (last !== null) addresses.push(last.address)
  stop = true
  await clients

  const counts: Record<string, number> = {}
  for (const o of outcomes) counts[`${o.status} ${o.code}`] = (counts[`${o.status} ${o.code}`] ?? 0) + 1
  const failed = outcomes.filter((o) => o.status !== 200).length
  t.comment(`${outcomes.length} requests, ${CLIENTS} clients, ${KILLS} SIGKILLs: ${failed} failed ${JSON.stringify(counts)}`)
  t.comment(`addresses: ${addresses.join(' ')}`)
  // Sent while no process was ready: they wait in the proxy for the restarted one.
  const served = meanwhile.filter((o) => o.status === 200)
  t.comment(`sent while no process was ready: ${meanwhile.length}, served ${served.length}, longest ${Math.max(0, ...served.map((o) => o.ms))} ms`)
  t.equal(served.length, meanwhile.length, 'requests sent while the process restarts wait for it and are served')
  t.equal(new Set(addresses).size, 1, `every restart kept the address (${addresses.join(' ')})`)
  t.ok(outcomes.every((o) => o.status === 200 || o.status === 502 || o.status === 503), 'failures are 502/503 answers, no hang or reset')
  t.equal(spawns.status()[0].restarts, KILLS, 'one restart per kill')
})
