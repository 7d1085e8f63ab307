/**
 * Embedding API: `createStatus(proxy)` mounted in front of `proxy.handler` reports the requests it
 * answers on `proxy.events`, so `createAccessLog(proxy.events)` logs them (route `status` or
 * `metrics`, no upstream): a 403 for a peer outside `allow`, a 405, the live view's refused upgrade
 * and an accepted one (101, logged when it ends).
 */
import t from 'tap'
import { request } from 'node:http'
import { Writable } from 'node:stream'
import WebSocket from 'ws'
import { createAccessLog, STATUS_ROUTES } from '../../src/status/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend } from '../helpers/servers.js'
import { fetchText, statusRig, type StatusRig } from './harness.js'

function collect (t: { teardown (fn: () => void): void }, rig: StatusRig, format: 'combined' | 'json' = 'json'): { lines: string[] } {
  const out = { lines: [] as string[] }
  const stream = new Writable({ write (chunk: Buffer, _enc, cb) { out.lines.push(...chunk.toString('latin1').split('\n').filter((l) => l !== '')); cb() } })
  const log = createAccessLog(rig.proxy.events, { stream, format })
  t.teardown(() => { log.close() })
  return out
}

const objs = (lines: string[]): Array<Record<string, unknown>> => lines.map((l) => JSON.parse(l) as Record<string, unknown>)

t.test('embedded: 403 to a peer outside allow, 405, page and metrics, each one line', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('backend'))
  const rig = await statusRig(t, { routes: [{ name: 'app', protocol: 'http', backends: [be.address] }] }, { allow: ['127.0.0.2'] })
  const log = collect(t, rig)
  t.equal((await fetchText(`${rig.url}/server-status`, { localAddress: '127.0.0.1' })).status, 403)
  t.equal((await fetchText(`${rig.url}/metrics`, { localAddress: '127.0.0.1' })).status, 403)
  t.equal((await fetchText(`${rig.url}/server-status`, { localAddress: '127.0.0.2', method: 'POST' })).status, 405)
  const page = await fetchText(`${rig.url}/server-status?format=json`, { localAddress: '127.0.0.2' })
  t.equal(page.status, 200)
  t.equal((await fetchText(`${rig.url}/metrics`, { localAddress: '127.0.0.2' })).status, 200)
  t.equal((await fetchText(`${rig.url}/x`, { localAddress: '127.0.0.2' })).body, 'backend')
  t.ok(await waitFor(() => log.lines.length >= 6, 10_000), 'six lines')
  const o = objs(log.lines)
  t.same(o.map((e) => [e.client, e.method, e.url, e.status, e.route, e.upstream]), [
    ['127.0.0.1', 'GET', '/server-status', 403, STATUS_ROUTES.page, null],
    ['127.0.0.1', 'GET', '/metrics', 403, STATUS_ROUTES.metrics, null],
    ['127.0.0.2', 'POST', '/server-status', 405, 'status', null],
    ['127.0.0.2', 'GET', '/server-status?format=json', 200, 'status', null],
    ['127.0.0.2', 'GET', '/metrics', 200, 'metrics', null],
    ['127.0.0.2', 'GET', '/x', 200, 'app', be.address],
  ])
  t.equal(o[3].bytes, Buffer.byteLength(page.body))
  t.equal(o[0].bytes, 14, '"403 Forbidden\\n"')
})

t.test('embedded: live view — a refused upgrade, ws refusing a bad handshake, an accepted view logged as 101 when it ends', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('backend'))
  const rig = await statusRig(t, { routes: [{ name: 'app', protocol: 'http', backends: [be.address] }] }, { allow: ['127.0.0.2'], live: { intervalMs: 60_000 } })
  const log = collect(t, rig, 'combined')

  const ws = new WebSocket(`ws://127.0.0.1:${rig.port}/server-status/live`, { localAddress: '127.0.0.1' })
  const refused = await new Promise<number>((resolve, reject) => {
    ws.once('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); res.resume(); ws.terminate() })
    ws.once('open', () => reject(new Error('live view opened for a refused peer')))
    ws.once('error', () => {})
  })
  t.equal(refused, 403)
  t.ok(await waitFor(() => log.lines.length >= 1, 10_000), 'the refused upgrade is logged')
  t.match(log.lines[0], /^127\.0\.0\.1 - - \[[^\]]+\] "GET \/server-status\/live HTTP\/1\.1" 403 - "-" "-" route=status upstream=- upstream_status=- rt=\d+\.\d{3} uht=- code=-$/)

  // An upgrade without Sec-WebSocket-Key: ws answers 400 itself.
  const bad = await new Promise<number>((resolve, reject) => {
    const req = request(`${rig.url}/server-status/live`, { localAddress: '127.0.0.2', agent: false, headers: { connection: 'upgrade', upgrade: 'websocket', 'sec-websocket-version': '13' } })
    req.on('response', (res) => { res.resume(); resolve(res.statusCode ?? 0) })
    req.on('upgrade', () => reject(new Error('upgraded without a key')))
    req.on('error', reject)
    req.end()
  })
  t.equal(bad, 400)
  t.ok(await waitFor(() => log.lines.length >= 2, 10_000), 'the bad handshake is logged')
  t.match(log.lines[1], /^127\.0\.0\.2 .* "GET \/server-status\/live HTTP\/1\.1" 400 - .* route=status .* code=ERR_BAD_REQUEST$/)

  const live = new WebSocket(`ws://127.0.0.1:${rig.port}/server-status/live`, { localAddress: '127.0.0.2' })
  t.teardown(() => { live.terminate() })
  await new Promise<void>((resolve, reject) => { live.once('message', () => resolve()); live.once('error', reject) })
  t.equal(log.lines.length, 2, 'an open view is not logged yet')
  await new Promise<void>((resolve) => { live.once('close', () => resolve()); live.close() })
  t.ok(await waitFor(() => log.lines.length >= 3, 10_000), 'logged once it ended')
  const m = /^127\.0\.0\.2 .* "GET \/server-status\/live HTTP\/1\.1" 101 (\d+) "-" "-" route=status upstream=- upstream_status=- rt=\d+\.\d{3} uht=- code=-$/.exec(log.lines[2])
  t.ok(m, log.lines[2])
  t.ok(Number(m?.[1]) > 0, 'bytes: what the view sent after the handshake (the first snapshot at least)')
})
