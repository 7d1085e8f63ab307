/**
 * A spawn whose `dependsOn` spawn is FAILED can never start until an operator acts (clear(), a
 * reload): its requests are answered 503 `ERR_SPAWN_FAILED` naming the dependency as soon as the
 * dependency fails, not held until the route's headers timeout (60 s by default, for ever with
 * `timeouts.headers: 0`) and then answered `ERR_SPAWN_NOT_READY`. Clearing the dependency once its
 * fault is fixed brings both up. Real node backends over HTTP, behind createProxy.
 */
import t from 'tap'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'node:http'
import { guardLeaks } from '../helpers/leaks.js'
import { proxyServer } from '../helpers/servers.js'
import { backendScript, tempDir } from './fixtures/manager.js'

interface Answer { status: number, body: string, ms: number }

function get (url: string): Promise<Answer> {
  const t0 = Date.now()
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), ms: Date.now() - t0 }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('a dependency in FAILED: the dependent answers 503 ERR_SPAWN_FAILED at once, for a direct and a transitive dependency; clear() brings them back', { timeout: 60_000 }, async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = tempDir((fn) => t.teardown(fn))
  // The dependency fails at once (before it listens: handoff self) until the flag file exists.
  const db = join(dir, 'db.sh')
  writeFileSync(db, `#!/bin/sh\n[ -f ${join(dir, 'fixed')} ] || exit 1\nexec ${process.execPath} ${backendScript} serve\n`)
  chmodSync(db, 0o755)
  const app = [process.execPath, backendScript, 'serve']
  const { proxy, url } = await proxyServer(t, {
    spawns: {
      db: { binPath: db, socketName: '127.0.0.1:0', handoff: 'self', minProcs: 1, restart: { initialDelay: 20, maxDelay: 40, maxStarts: 2, window: 60_000 } },
      app: { binPath: app, socketName: '127.0.0.1:0', handoff: 'self', minProcs: 0, dependsOn: ['db'] },
      // Waits for app, which waits for db: FAILED two levels down.
      front: { binPath: app, socketName: '127.0.0.1:0', handoff: 'self', minProcs: 0, dependsOn: ['app'] },
    },
    routes: [
      { protocol: 'http', spawn: 'app', match: { prefix: '/app/' }, timeouts: { headers: '30s' } },
      { protocol: 'http', spawn: 'front', match: { prefix: '/front/' }, timeouts: { headers: 0 } },
    ],
  })
  const spawns = proxy.spawns
  if (spawns === undefined || spawns === null) throw new Error('no spawn manager')
  const state = (name: string): string | undefined => spawns.status().find((s) => s.name === name)?.state
  // Sent while db still restarts: they wait, and are answered once db goes FAILED.
  const early = [get(`${url}/app/x`), get(`${url}/front/x`)]
  const settled = await Promise.all(early)
  t.equal(state('db'), 'failed', 'db went FAILED')
  for (const a of settled) {
    t.equal(a.status, 503, 'a request sent meanwhile: 503')
    t.match(a.body, /ERR_SPAWN_FAILED/, 'with the FAILED code')
    t.ok(a.ms < 20_000, `answered when db failed, not at the headers timeout (${a.ms} ms)`)
  }
  // Sent after: answered at once.
  for (const path of ['/app/x', '/front/x']) {
    const a = await get(`${url}${path}`)
    t.equal(a.status, 503, `${path}: 503`)
    t.match(a.body, /ERR_SPAWN_FAILED/, `${path}: ERR_SPAWN_FAILED`)
    t.ok(a.ms < 5000, `${path}: at once (${a.ms} ms), not at the headers timeout`)
  }
  // The operator fixes db and clears it: the dependents start on demand and serve.
  writeFileSync(join(dir, 'fixed'), '')
  spawns.clear('db')
  for (const path of ['/app/x', '/front/x']) {
    const a = await get(`${url}${path}`)
    t.equal(a.status, 200, `${path}: served after clear()`)
    t.match(a.body, /^\d+$/, `${path}: by a spawned process`)
  }
})
