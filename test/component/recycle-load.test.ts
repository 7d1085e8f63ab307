/**
 * maxRequests recycling under concurrent load through the whole pipeline (BENCH.md: "max-requests
 * recycling under load: 0 failed requests"): requests that arrive while every process is draining
 * wait for the replacement instead of failing.
 */
import t from 'tap'
import { fileURLToPath } from 'node:url'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

t.test('maxRequests: 5 with 40 concurrent requests, 4 rounds: 0 failures', async (t) => {
  const backend = fileURLToPath(new URL('../spawn/fixtures/backend.mjs', import.meta.url))
  const { url, proxy } = await proxyServer(t, {
    spawns: { app: { binPath: [process.execPath, backend], socketName: '127.0.0.1:0', handoff: 'self', maxRequests: 5, maxProcs: 4, stopTimeout: '2s' } },
    routes: [{ protocol: 'http', spawn: 'app' }],
  })
  const pids = new Set<string>()
  let failed = 0
  for (let round = 0; round < 4; round++) {
    const all = await Promise.all(Array.from({ length: 40 }, () => get(`${url}/?delay=2`).catch(() => null)))
    for (const r of all) {
      if (r === null || r.status !== 200) failed++
      else pids.add(r.body.toString())
    }
  }
  t.equal(failed, 0, 'no request failed')
  t.ok(pids.size >= 160 / 5 / 2, `processes were recycled (${pids.size} pids for 160 requests)`)
  t.equal(proxy.inflight, 0)
})
