/**
 * Audit (H7): the shared wait for a routable backend (src/core/spawn-wait.ts waitRoutable) with a
 * deadline node's setTimeout cannot hold: Infinity (no limit but the caller's signal, what a route
 * with `timeouts.headers: 0` means) or one more than 2^31-1 ms away. Node fires such a timer after
 * 1 ms, so before the fix the wait gave up at once with ERR_SPAWN_NOT_READY. Against a real spawn
 * (a node:http program that listens 1.5 s after it starts, on demand: minProcs 0): the wait
 * resolves once it is routable; and a caller's abort still ends it, leaving no listener.
 */
import t, { type Test } from 'tap'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { getEventListeners } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { waitRoutable } from '../../src/core/spawn-wait.js'
import type { CreateProxyOptions } from '../../src/index.js'

guardLeaks(t, { timeoutMs: 10_000 })

/** A proxy with one route on a spawn whose program listens `delayMs` after it starts. */
async function slowSpawn (t: Test, delayMs: number, route: Record<string, unknown> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'pc-h7-wait-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const sock = join(dir, 'app.sock')
  const bin = join(dir, 'slow.mjs')
  writeFileSync(bin, `#!${process.execPath}\nimport { createServer } from 'node:http'\nsetTimeout(() => createServer((q, s) => s.end('up')).listen(${JSON.stringify(sock)}), ${delayMs})\n`)
  chmodSync(bin, 0o755)
  const config = {
    spawns: { slow: { binPath: bin, socketName: sock, handoff: 'self', minProcs: 0, startTimeout: 20_000 } },
    routes: [{ protocol: 'http', spawn: 'slow', ...route }],
  } as unknown as CreateProxyOptions
  return proxyServer(t, config)
}

for (const [name, deadline] of [['Infinity', () => Infinity], ['2^32 ms away', () => Date.now() + 2 ** 32]] as const) {
  t.test(`waitRoutable with a deadline of ${name} waits for the spawn to be routable`, async (t) => {
    const { proxy, url } = await slowSpawn(t, 1500)
    const pool = proxy.routes[0].pool
    t.equal(pool.backends.length, 0, 'nothing started yet')
    const ac = new AbortController()
    const started = Date.now()
    const outcome = await waitRoutable(pool, ac.signal, deadline(), Date.now, () => false).then(() => 'ready', (err: Error & { code?: string }) => err.code ?? err.message)
    t.equal(outcome, 'ready', `resolved (after ${Date.now() - started} ms)`)
    t.ok(pool.backends.length > 0, 'a backend is routable')
    t.equal(getEventListeners(ac.signal, 'abort').length, 0, 'no abort listener left')
    t.equal((await get(`${url}/`)).body.toString(), 'up')
  })
}

t.test('waitRoutable with an Infinity deadline still ends when the caller aborts', async (t) => {
  const { proxy } = await slowSpawn(t, 60_000)
  const pool = proxy.routes[0].pool
  const ac = new AbortController()
  const waiting = waitRoutable(pool, ac.signal, Infinity, Date.now, () => false).then(() => 'ready', (err: Error & { code?: string }) => err.code ?? err.message)
  // Still waiting a turn later (before the fix it had failed after 1 ms).
  const early = await Promise.race([waiting, new Promise<string>((resolve) => setTimeout(() => resolve('waiting'), 200))])
  t.equal(early, 'waiting')
  ac.abort()
  t.equal(await waiting, 'ERR_SPAWN_NOT_READY', 'the abort ends it with ensure()\'s error')
  t.equal(getEventListeners(ac.signal, 'abort').length, 0, 'no abort listener left')
})

t.test('a route with timeouts.headers 0 waits for an on-demand spawn past 1 s (0 is no limit)', async (t) => {
  // Before, the wait was max(headers, 1000) from the request: 0 gave 1 s, then 503 ERR_SPAWN_NOT_READY.
  const { url } = await slowSpawn(t, 2500, { timeouts: { headers: 0 } })
  const started = Date.now()
  const res = await get(`${url}/`)
  t.equal(res.status, 200, `served after ${Date.now() - started} ms`)
  t.equal(res.body.toString(), 'up')
})
