/**
 * `status.metricsPath`: where `proxycore serve` answers Prometheus, or `false` for nowhere. With it
 * moved or off, a request for `/metrics` reaches the routes, so an application behind proxycore that
 * exposes its own `/metrics` is reachable again. A SIGHUP reload picks up a change of it; the default
 * stays `/metrics`. The same through the embedding API (createStatus), and `check` refuses a
 * metrics path that would hide the status page.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { checkConfig } from '../../src/config/check.js'
import { guardLeaks } from '../helpers/leaks.js'
import { backend } from '../helpers/servers.js'
import { runCli, serveKilled } from '../cli/run.js'
import { fetchText, statusRig } from './harness.js'

/** A node:http app with its own metrics at /metrics; every other path echoes itself. */
const app = (req: IncomingMessage, res: ServerResponse): void => {
  res.setHeader('content-type', 'text/plain')
  res.end(req.url === '/metrics' ? 'app_requests_total 7\n' : `app saw ${req.url ?? ''}\n`)
}

/** Prometheus text of proxycore itself (not the app's). */
const isProxycore = (body: string): boolean => body.includes('# TYPE proxycore_inflight gauge')

t.test('proxycore serve: metricsPath moved, off, back to the default, and allow; each by SIGHUP', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const b = await backend(t, app)
  const dir = mkdtempSync(join(tmpdir(), 'pc-metrics-path-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'proxycore.yaml')
  const write = (status: string): void => writeFileSync(file, `listen: 127.0.0.1:0
status: ${status}
routes:
  - { protocol: http, backends: ['${b.address}'] }
`)

  write('{ path: /server-status, metricsPath: /proxycore-metrics }')
  t.equal((await runCli(['check', file])).code, 0, 'check accepts metricsPath')
  const { s } = await serveKilled(t, file)
  const at = (path: string): ReturnType<typeof fetchText> => fetchText(`${s.url}${path}`)

  let r = await at('/metrics')
  t.equal(r.status, 200)
  t.equal(r.body, 'app_requests_total 7\n', 'moved: /metrics reaches the backend')
  r = await at('/proxycore-metrics')
  t.equal(r.status, 200)
  t.ok(isProxycore(r.body), 'proxycore metrics at the new path')
  t.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/)
  t.equal((await at('/server-status?format=json')).status, 200, 'the status page is where it was')

  const reload = async (status: string): Promise<void> => {
    write(status)
    const mark = s.logs().length
    s.child.kill('SIGHUP')
    await s.waitLog('reloaded', mark)
  }

  await reload('{ path: /server-status, metricsPath: false }')
  r = await at('/metrics')
  t.equal(r.body, 'app_requests_total 7\n', 'false: /metrics reaches the backend')
  r = await at('/proxycore-metrics')
  t.equal(r.body, 'app saw /proxycore-metrics\n', 'false: the old path reaches the backend too')
  t.equal((await at('/server-status?format=json')).status, 200, 'the status page still answers')

  await reload('{ path: /server-status }')
  r = await at('/metrics')
  t.equal(r.status, 200)
  t.ok(isProxycore(r.body), 'left out: /metrics is proxycore\'s again (the default)')

  // A metrics path that would hide the page is a config issue: the reload is rejected, nothing moves.
  write('{ path: /server-status, metricsPath: /server-status/ }')
  const mark = s.logs().length
  s.child.kill('SIGHUP')
  const rejected = await s.waitLog('reload rejected; the previous config keeps serving', mark)
  t.match(JSON.stringify(rejected.issues), /\/status\/metricsPath/)
  t.ok(isProxycore((await at('/metrics')).body), 'after the rejected reload: still the default')
  t.equal((await at('/server-status?format=json')).status, 200)

  await reload('{ path: /server-status, metricsPath: /pm, allow: [10.0.0.0/8] }')
  t.equal((await at('/pm')).status, 403, 'the moved path keeps the allow rule of the page')
  t.equal((await at('/server-status')).status, 403)
  t.equal((await at('/metrics')).body, 'app_requests_total 7\n')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('createStatus: metricsPath moved or false lets /metrics reach the backend', async (t) => {
  guardLeaks(t)
  const b = await backend(t, app)
  const routes = [{ protocol: 'http', backends: [b.address] }]
  const moved = await statusRig(t, { routes }, { metricsPath: '/pm' })
  t.equal((await fetchText(`${moved.url}/metrics`)).body, 'app_requests_total 7\n')
  t.ok(isProxycore((await fetchText(`${moved.url}/pm`)).body))
  const off = await statusRig(t, { routes }, { metricsPath: false })
  t.equal((await fetchText(`${off.url}/metrics`)).body, 'app_requests_total 7\n')
  const dflt = await statusRig(t, { routes })
  t.ok(isProxycore((await fetchText(`${dflt.url}/metrics`)).body), 'default /metrics')
})

t.test('check: metricsPath must be a path or false, and must not hide the status page', async (t) => {
  const routes = [{ protocol: 'http', backends: ['127.0.0.1:9'] }]
  const issues = async (status: unknown): Promise<Array<{ path: string, message: string }>> =>
    (await checkConfig({ status, routes })).map((i) => ({ path: i.path, message: i.message }))
  t.same(await issues({ metricsPath: '/pm' }), [])
  t.same(await issues({ metricsPath: false }), [])
  t.same((await issues({ metricsPath: true })).map((i) => i.path), ['/status/metricsPath'])
  t.same((await issues({ metricsPath: 'metrics' })).map((i) => i.path), ['/status/metricsPath'])
  for (const [status, what] of [
    [{ metricsPath: '/server-status' }, 'the default status path'],
    [{ path: '/st', metricsPath: '/st/' }, 'the status path with a trailing slash'],
    [{ path: '/st', metricsPath: '/st/live' }, 'the live view'],
    [{ metricsPath: '//server-status' }, 'another spelling of the status path'],
  ] as const) {
    const got = await issues(status)
    t.equal(got.length, 1, what)
    t.equal(got[0]?.path, '/status/metricsPath', what)
    t.match(got[0]?.message ?? '', /status page|live view/, what)
  }
  t.same((await issues({ metricsPath: '/%zz' })).map((i) => i.path), ['/status/metricsPath'], 'a path the router refuses')
  // The page moved onto the default metrics path: serve refuses it (createStatus), so must check.
  for (const path of ['/metrics', '/metrics/', '//metrics']) {
    const got = await issues({ path })
    t.same(got.map((i) => i.path), ['/status/path'], `status path ${path}, metricsPath left to its default`)
    t.match(got[0]?.message ?? '', /is where metrics are served \(metricsPath defaults to \/metrics\)/)
  }
  t.same(await issues({ path: '/metrics', metricsPath: false }), [], 'metrics off: the page may take /metrics')
  t.same(await issues({ path: '/metrics', metricsPath: '/pm' }), [], 'metrics moved: the page may take /metrics')
})
