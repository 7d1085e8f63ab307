/**
 * DNS rebinding: a page on `rebind.attacker.example`, whose name a browser on the proxy's host
 * re-resolves to 127.0.0.1, is same-origin with the status page as far as the browser knows. The
 * peer check (loopback) lets it in; only the Host it sends names the attacker's domain. The status
 * handler answers only the Host names of `hosts` (default: IP literals and `localhost`), as
 * Django's ALLOWED_HOSTS and the dev servers' host checks do: on the page, its JSON, the live view
 * and /metrics.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import WebSocket from 'ws'
import { createAccessLog, createStatus } from '../../src/status/index.js'
import { createProxy, silentLogger } from '../../src/index.js'
import { ConfigError } from '../../src/core/errors.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, rawRequest } from '../helpers/servers.js'
import { tempDir } from '../helpers/tmp.js'
import { runCli, serveKilled } from '../cli/run.js'
import { statusRig } from './harness.js'

const REBIND = 'rebind.attacker.example'

/** One GET on a fresh connection with exactly this Host (none when null): status and body. */
async function raw (port: number, target: string, host: string | null): Promise<{ status: number, body: string }> {
  const out = await rawRequest(port, `GET ${target} HTTP/1.1\r\n${host === null ? '' : `Host: ${host}\r\n`}Connection: close\r\n\r\n`)
  const m = /^HTTP\/1\.1 (\d{3})/.exec(out)
  return { status: m === null ? 0 : Number(m[1]), body: out.slice(out.indexOf('\r\n\r\n') + 4) }
}

/** Open the live view with this Host and Origin: 101 (a snapshot was pushed) or the refusal's status. */
function live (port: number, host: string, origin: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/server-status/live`, { origin, headers: { host } })
    ws.once('unexpected-response', (_req, res) => { res.resume(); ws.terminate(); resolve(res.statusCode ?? 0) })
    ws.once('message', () => { ws.once('close', () => resolve(101)); ws.close() })
    ws.once('error', (err) => { if (ws.readyState !== ws.CLOSED) reject(err) })
  })
}

/** The four status endpoints answered for `host`: page, JSON, metrics (status codes), live view. */
async function four (port: number, host: string): Promise<{ page: number, json: number, metrics: number, live: number, bodies: string[] }> {
  const page = await raw(port, '/server-status', host)
  const json = await raw(port, '/server-status?format=json', host)
  const metrics = await raw(port, '/metrics', host)
  return { page: page.status, json: json.status, metrics: metrics.status, live: await live(port, host, `http://${host}`), bodies: [page.body, json.body, metrics.body] }
}

t.test('default: a rebinding Host gets 403 on the page, JSON, metrics and live view, and is logged', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('backend'))
  const rig = await statusRig(t, { routes: [{ name: 'app', protocol: 'http', backends: [be.address] }] }, { live: { intervalMs: 60_000 } })
  const lines: string[] = []
  const stream = new Writable({ write (chunk: Buffer, _enc, cb) { lines.push(...chunk.toString('latin1').split('\n').filter((l) => l !== '')); cb() } })
  const log = createAccessLog(rig.proxy.events, { stream, format: 'json' })
  t.teardown(() => { log.close() })

  for (const host of [`${REBIND}:${rig.port}`, REBIND, `${REBIND.toUpperCase()}.:${rig.port}`, `localhost.${REBIND}:${rig.port}`]) {
    const r = await four(rig.port, host)
    t.same([r.page, r.json, r.metrics, r.live], [403, 403, 403, 403], `Host ${host}: refused on all four`)
    for (const b of r.bodies) t.notMatch(b, /"routes"|proxycore_|<table/, `Host ${host}: no data in the refusal`)
  }
  for (const host of ['a:b:c', '[::1', '[::1]x', `127.0.0.1:${rig.port}x`, '::1']) {
    t.equal((await raw(rig.port, '/server-status?format=json', host)).status, 403, `malformed Host ${JSON.stringify(host)}: refused`)
  }
  t.equal((await raw(rig.port, '/other', `${REBIND}:${rig.port}`)).body.includes('backend'), true, 'other paths still reach the routes')
  t.ok(await waitFor(() => lines.some((l) => l.includes('"/metrics"') && l.includes('403')), 10_000), 'the refusals are logged')
  const o = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  t.same(o.slice(0, 4).map((e) => [e.url, e.status, e.route]), [
    ['/server-status', 403, 'status'],
    ['/server-status?format=json', 403, 'status'],
    ['/metrics', 403, 'metrics'],
    ['/server-status/live', 403, 'status'],
  ], 'logged like other status requests')
})

t.test('default: IP literals (v4, [v6]) and localhost are answered, with or without a port', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('backend'))
  const rig = await statusRig(t, { routes: [{ name: 'app', protocol: 'http', backends: [be.address] }] }, { live: { intervalMs: 60_000 } })
  for (const host of [`127.0.0.1:${rig.port}`, '127.0.0.1', '10.1.2.3:9', `[::1]:${rig.port}`, '[::1]', '[::ffff:7f00:1]:1', `localhost:${rig.port}`, 'LocalHost', 'localhost.']) {
    const r = await four(rig.port, host)
    t.same([r.page, r.json, r.metrics, r.live], [200, 200, 200, 101], `Host ${host}: answered`)
  }
  t.equal((await raw(rig.port, '/server-status?format=json', null)).status, 400, 'HTTP/1.1 without Host: refused by node:http itself')
  const h10 = await rawRequest(rig.port, 'GET /server-status?format=json HTTP/1.0\r\n\r\n')
  t.match(h10, /^HTTP\/1\.1 200 /, 'HTTP/1.0 without Host (not a browser): answered')
})

t.test('hosts: a listed name is answered (any case and port, trailing dot ignored), others refused', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('backend'))
  const rig = await statusRig(t, { routes: [{ name: 'app', protocol: 'http', backends: [be.address] }] }, { hosts: ['Status.Example.'], live: { intervalMs: 60_000 } })
  for (const host of [`status.example:${rig.port}`, 'STATUS.EXAMPLE', 'status.example.:1', `127.0.0.1:${rig.port}`, 'localhost']) {
    const r = await four(rig.port, host)
    t.same([r.page, r.json, r.metrics, r.live], [200, 200, 200, 101], `Host ${host}: answered`)
  }
  for (const host of [`${REBIND}:${rig.port}`, 'sub.status.example', 'status.example.org', 'status.exampl']) {
    const r = await four(rig.port, host)
    t.same([r.page, r.json, r.metrics, r.live], [403, 403, 403, 403], `Host ${host}: refused`)
  }
})

t.test("hosts: ['*'] answers every Host (the old behaviour)", async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('backend'))
  const rig = await statusRig(t, { routes: [{ name: 'app', protocol: 'http', backends: [be.address] }] }, { hosts: ['*'], live: { intervalMs: 60_000 } })
  for (const host of [`${REBIND}:${rig.port}`, 'anything', `127.0.0.1:${rig.port}`]) {
    const r = await four(rig.port, host)
    t.same([r.page, r.json, r.metrics, r.live], [200, 200, 200, 101], `Host ${host}: answered`)
  }
})

t.test('hosts: entries that are no host name are a ConfigError at /hosts', async (t) => {
  const proxy = await createProxy({ logger: silentLogger, routes: [{ name: 'app', protocol: 'http', backends: ['127.0.0.1:1'] }] })
  t.teardown(() => proxy.close(1000))
  for (const bad of [['status.example:80'], [''], ['http://x'], ['a b'], ['::1'], ['[::g]'], [3 as unknown as string]]) {
    let caught: unknown = null
    try { await createStatus(proxy, { hosts: bad }).close() } catch (err) { caught = err }
    t.ok(caught instanceof ConfigError && caught.issues[0].path === '/hosts/0', `${JSON.stringify(bad)} refused at /hosts/0`)
  }
})

t.test('serve: the default refuses a rebinding Host and answers 127.0.0.1', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tempDir(t, 'pc-status-hosts-')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0\nstatus: {}\nroutes:\n  - { name: files, match: { prefix: / }, protocol: static, docroot: ${JSON.stringify(dir)} }\n`)
  const { s } = await serveKilled(t, file)
  const port = Number(new URL(s.url).port)
  const r = await four(port, `${REBIND}:${port}`)
  t.same([r.page, r.json, r.metrics, r.live], [403, 403, 403, 403], 'rebinding Host refused on all four')
  const ok = await four(port, `127.0.0.1:${port}`)
  t.same([ok.page, ok.json, ok.metrics, ok.live], [200, 200, 200, 101], '127.0.0.1 answered')
})

t.test('serve: status.hosts from the file applies (a listed name answered, others refused)', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tempDir(t, 'pc-status-hosts-')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0\nstatus: { hosts: [proxy.internal] }\nroutes:\n  - { name: files, match: { prefix: / }, protocol: static, docroot: ${JSON.stringify(dir)} }\n`)
  const { s } = await serveKilled(t, file)
  const port = Number(new URL(s.url).port)
  const listed = await four(port, `proxy.internal:${port}`)
  t.same([listed.page, listed.json, listed.metrics, listed.live], [200, 200, 200, 101], 'the listed name answered on all four')
  const other = await four(port, `${REBIND}:${port}`)
  t.same([other.page, other.json, other.metrics, other.live], [403, 403, 403, 403], 'another name refused')
})

t.test('check: status.hosts takes names and ["*"], refuses an entry with a port at /status/hosts/0', async (t) => {
  const dir = tempDir(t, 'pc-status-hosts-check-')
  const routes = 'routes:\n  - { protocol: http, backends: [127.0.0.1:1] }\n'
  writeFileSync(join(dir, 'ok.yaml'), `status: { hosts: ["*", proxy.internal, "[::1]"] }\n${routes}`)
  writeFileSync(join(dir, 'bad.yaml'), `status: { hosts: ["proxy.internal:9000"] }\n${routes}`)
  const ok = await runCli(['check', join(dir, 'ok.yaml')])
  t.equal(ok.code, 0, ok.stderr)
  const bad = await runCli(['check', join(dir, 'bad.yaml')])
  t.equal(bad.code, 2)
  t.match(bad.stdout + bad.stderr, '/status/hosts/0')
})
