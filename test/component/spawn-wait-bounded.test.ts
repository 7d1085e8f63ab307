/**
 * A request waiting for a spawn that never gets ready is answered 503 ERR_SPAWN_NOT_READY at its
 * limit, never held: on the upgrade path (timeouts.headers, at least 1 s) and on the authorizer
 * path (the authorizer's timeout, at least 1 s). The spawn is a `handoff: self` program that never
 * listens (`sleep 300`), startTimeout 3000 under the default start limit, so it cycles through
 * start and backoff and never goes FAILED: nothing but the deadline ends SpawnGroup.ensure().
 * Then the shared wait (src/core/spawn-wait.ts) against that real spawn group: no timer and no
 * abort listener left on the caller's signal, however it ends. AC-17 in acceptance-spawn.test.ts
 * covers the plain request.
 */
import t, { type Test } from 'tap'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { getEventListeners } from 'node:events'
import { request } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer } from '../helpers/servers.js'
import { waitRoutable } from '../../src/core/spawn-wait.js'
import type { BackendPool } from '../../src/core/pool.js'
import type { SpawnManager } from '../../src/spawn/manager.js'
import type { CreateProxyOptions } from '../../src/index.js'

/** A temp dir (0700: a `handoff: self` socket's directory must be private) with the never-ready program. */
function never (t: Test): { dir: string, spawn: Record<string, unknown> } {
  const dir = mkdtempSync(join(tmpdir(), 'pc-spawn-wait-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const bin = join(dir, 'never.sh')
  writeFileSync(bin, '#!/bin/sh\nexec sleep 300\n')
  chmodSync(bin, 0o755)
  return { dir, spawn: { binPath: bin, socketName: join(dir, 'never.sock'), handoff: 'self', minProcs: 0, startTimeout: 3000, restart: { initialDelay: 10 } } }
}

/** Raw bytes to the proxy; everything it sent until it closed, or 'no answer' after `ms`. */
function rawWithin (port: number, bytes: string, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port })
    let out = ''
    const timer = setTimeout(() => { s.destroy(); resolve(out === '' ? 'no answer' : out) }, ms)
    s.on('data', (d: Buffer) => { out += d.toString('latin1') })
    s.on('close', () => { clearTimeout(timer); resolve(out) })
    s.on('error', (err) => { clearTimeout(timer); reject(err) })
    s.write(bytes)
  })
}

/** GET within `ms`: status, retry-after and body, or 'no answer'. */
function getWithin (url: string, ms: number): Promise<{ status: number, retryAfter: string | undefined, body: string } | 'no answer'> {
  return new Promise((resolve, reject) => {
    let timedOut = false
    const req = request(url, { agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => { clearTimeout(timer); resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'], body }) })
    })
    const timer = setTimeout(() => { timedOut = true; req.destroy(); resolve('no answer') }, ms)
    req.on('error', (err) => { clearTimeout(timer); if (!timedOut) reject(err) })
    req.end()
  })
}

const UPGRADE = 'GET /ws/chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'

t.test('upgrade to a spawn that never gets ready: 503 ERR_SPAWN_NOT_READY with Retry-After at timeouts.headers', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const n = never(t)
  const { port } = await proxyServer(t, {
    spawns: { never: n.spawn },
    routes: [{ match: { prefix: '/ws/' }, protocol: 'http', spawn: 'never', timeouts: { headers: 1500 } }],
  } as CreateProxyOptions)
  const t0 = Date.now()
  const raw = await rawWithin(port, UPGRADE, 12_000)
  const took = Date.now() - t0
  t.match(raw, /^HTTP\/1\.1 503 /, `503, not held (${JSON.stringify(raw.slice(0, 40))} after ${took} ms)`)
  t.match(raw, /\r\nretry-after: \d+\r\n/i, 'with Retry-After')
  t.match(raw, /\r\n\r\n503 [^\n]*\nERR_SPAWN_NOT_READY\n$/, 'the body names ERR_SPAWN_NOT_READY')
  t.ok(took >= 1400 && took < 1500 + 2500, `answered at the headers timeout, within a margin (${took} ms)`)
})

t.test('authorizer spawn that never gets ready: 503 ERR_SPAWN_NOT_READY with Retry-After at the authorizer timeout', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const n = never(t)
  let reached = 0
  const be = await backend(t, (_req, res) => { reached++; res.end('handler') })
  const { url } = await proxyServer(t, {
    spawns: { never: n.spawn },
    routes: [{ match: { prefix: '/app/' }, protocol: 'http', backends: [be.address], authorizer: { spawn: 'never', timeout: 1500 } }],
  } as CreateProxyOptions)
  const t0 = Date.now()
  const r = await getWithin(`${url}/app/x`, 12_000)
  const took = Date.now() - t0
  if (r === 'no answer') {
    t.fail(`no answer after ${took} ms: held past the authorizer timeout`)
    return
  }
  t.equal(r.status, 503, `503 (${took} ms)`)
  t.match(r.retryAfter, /^\d+$/, 'with Retry-After')
  t.match(r.body, /\nERR_SPAWN_NOT_READY\n$/, 'the body names ERR_SPAWN_NOT_READY')
  t.ok(took >= 1400 && took < 1500 + 2500, `answered at the authorizer timeout, within a margin (${took} ms)`)
  t.equal(reached, 0, 'the handler never saw the request')
})

t.test('the shared wait against a real never-ready spawn group: deadline, caller abort, and nothing left behind', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const n = never(t)
  const { proxy } = await proxyServer(t, { spawns: { never: n.spawn }, routes: [{ match: { prefix: '/' }, protocol: 'http', spawn: 'never' }] } as CreateProxyOptions)
  const group = (proxy.spawns as SpawnManager).source('never')
  // The wait reads only these of a pool; the source is the real spawn group.
  const pool = { name: 'never', backends: [], source: group } as unknown as BackendPool
  // Started first, so that the timers made while waitRoutable() is called are its own (it makes
  // its one timer before its first await); every one of them must be cleared once it settled.
  const woke = new AbortController()
  const wake = group.ensure(woke.signal).catch(() => {})
  t.teardown(() => { woke.abort(); return wake })
  const cleared = new Set<unknown>()
  const realSet = globalThis.setTimeout
  const realClear = globalThis.clearTimeout
  globalThis.clearTimeout = ((x: NodeJS.Timeout) => { cleared.add(x); realClear(x) }) as typeof clearTimeout
  t.teardown(() => { globalThis.clearTimeout = realClear })
  const call = (signal: AbortSignal, deadline: number): { wait: Promise<void>, made: unknown[] } => {
    const made: unknown[] = []
    globalThis.setTimeout = ((...a: Parameters<typeof setTimeout>) => { const x = realSet(...a); made.push(x); return x }) as typeof setTimeout
    try { return { wait: waitRoutable(pool, signal, deadline, Date.now, () => signal.aborted), made } } finally { globalThis.setTimeout = realSet }
  }

  const ac = new AbortController()
  const t0 = Date.now()
  const a = call(ac.signal, Date.now() + 1000)
  t.equal(a.made.length, 1, 'one timer')
  t.equal(getEventListeners(ac.signal, 'abort').length, 1, 'one listener on the caller signal while waiting')
  await t.rejects(a.wait, { code: 'ERR_SPAWN_NOT_READY', status: 503, message: /became routable in time/ }, 'deadline: ERR_SPAWN_NOT_READY')
  const took = Date.now() - t0
  t.ok(took >= 950 && took < 1000 + 2500, `at the deadline (${took} ms)`)
  t.equal(getEventListeners(ac.signal, 'abort').length, 0, 'no abort listener left on the caller signal')
  t.ok(a.made.every((x) => cleared.has(x)), 'its timer cleared')

  // The caller's own abort (client gone) ends the wait with ensure()'s error, as before.
  const ac2 = new AbortController()
  const t1 = Date.now()
  const b = call(ac2.signal, Date.now() + 60_000)
  t.equal(getEventListeners(ac2.signal, 'abort').length, 1, 'one listener while waiting')
  setImmediate(() => ac2.abort())
  await t.rejects(b.wait, { code: 'ERR_SPAWN_NOT_READY', message: /^spawn never not ready/ }, 'aborted by the caller: ensure()\'s own error')
  t.ok(Date.now() - t1 < 2000, 'at once, not at the deadline')
  t.equal(getEventListeners(ac2.signal, 'abort').length, 0, 'no abort listener left after the abort')
  t.ok(b.made.length === 1 && b.made.every((x) => cleared.has(x)), 'its 60 s timer cleared')

  // A deadline already passed: at once, and nothing left.
  const ac3 = new AbortController()
  const c = call(ac3.signal, Date.now() - 1)
  await t.rejects(c.wait, { code: 'ERR_SPAWN_NOT_READY' }, 'deadline passed: at once')
  t.equal(getEventListeners(ac3.signal, 'abort').length, 0, 'no abort listener left')
  t.ok(c.made.every((x) => cleared.has(x)), 'no timer left')
})
