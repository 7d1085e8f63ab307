/**
 * createStatus, as an embedder calls it, refuses at creation what `proxycore check` refuses in the
 * file: a metricsPath that would hide the status page or its live view (in any spelling the router
 * normalises to it), and a path or metricsPath the router could never match. The error is a
 * ConfigError (code ERR_CONFIG) naming the option; nothing is left listening on the proxy.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createProxy, silentLogger, ConfigError } from '../../src/index.js'
import { createStatus, type StatusOptions } from '../../src/status/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend } from '../helpers/servers.js'
import { cli, ensureBuilt, root } from '../cli/run.js'
import { fetchText, statusRig } from './harness.js'

t.test('metricsPath that hides the page or the live view: ERR_CONFIG at creation', async (t) => {
  guardLeaks(t)
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: ['127.0.0.1:9'] }] })
  t.teardown(async () => { await proxy.close(1000) })
  const listeners = (): number => proxy.events.listenerCount('request:end')
  const before = listeners()
  for (const [opts, hides, what] of [
    [{ metricsPath: '/server-status' }, 'page at /server-status', 'the default status path'],
    [{ path: '/st', metricsPath: '/st/' }, 'page at /st', 'the status path with a trailing slash'],
    [{ path: '/st/', metricsPath: '/st' }, 'page at /st', 'a trailing slash on the page path'],
    [{ path: '/st', metricsPath: '/st/live' }, 'live view at /st/live', 'the live view'],
    [{ metricsPath: '//server-status' }, 'page at /server-status', 'another spelling of the status path'],
    [{ metricsPath: '/%73erver-status' }, 'page at /server-status', 'a percent-encoded spelling'],
    [{ path: '/metrics' }, 'page at /metrics', 'the page moved onto the default metrics path'],
  ] as Array<[StatusOptions, string, string]>) {
    let err: unknown
    try { await createStatus(proxy, opts).close() } catch (e) { err = e }
    t.ok(err instanceof ConfigError, `${what}: throws ConfigError`)
    const ce = err as ConfigError | undefined
    t.equal(ce?.code, 'ERR_CONFIG', what)
    t.equal(ce?.issues?.[0]?.path, '/metricsPath', what)
    t.match(ce?.message, `would hide the status ${hides}`, what)
  }
  t.equal(listeners(), before, 'a refused createStatus leaves no listener on the proxy')
})

t.test('path or metricsPath the router can never match: ERR_CONFIG naming the option', async (t) => {
  guardLeaks(t)
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: ['127.0.0.1:9'] }] })
  t.teardown(async () => { await proxy.close(1000) })
  for (const [opts, at] of [
    [{ path: 'server-status' }, '/path'],
    [{ path: '/../x' }, '/path'],
    [{ metricsPath: 'metrics' }, '/metricsPath'],
    [{ metricsPath: '/%zz' }, '/metricsPath'],
    [{ metricsPath: '/../m' }, '/metricsPath'],
  ] as Array<[StatusOptions, string]>) {
    let err: unknown
    try { await createStatus(proxy, opts).close() } catch (e) { err = e }
    t.equal((err as ConfigError | undefined)?.code, 'ERR_CONFIG', JSON.stringify(opts))
    t.equal((err as ConfigError | undefined)?.issues?.[0]?.path, at, JSON.stringify(opts))
  }
})

t.test('accepted paths still serve: moved metrics, metrics off, the page on its own', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (req, res) => { res.end(`app ${req.url ?? ''}\n`) })
  const routes = [{ protocol: 'http', backends: [be.address] }]
  const rig = await statusRig(t, { routes }, { path: '/st', metricsPath: '/st-metrics' })
  t.equal((await fetchText(`${rig.url}/st?format=json`)).status, 200)
  t.match((await fetchText(`${rig.url}/st-metrics`)).body, /# TYPE proxycore_inflight gauge/)
  t.equal((await fetchText(`${rig.url}/metrics`)).body, 'app /metrics\n')
  const off = await statusRig(t, { routes }, { path: '/metrics', metricsPath: false })
  t.equal((await fetchText(`${off.url}/metrics?format=json`)).status, 200, 'the page may take /metrics when metrics are off')
})

t.test('proxycore serve: a status page moved onto the default metrics path is refused, not hidden', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-status-paths-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0
status: { path: /metrics }
routes:
  - { protocol: http, backends: ['127.0.0.1:9'] }
`)
  // serve checks the file as `check` does: the page on the default metrics path is a config issue.
  await ensureBuilt()
  const child = spawn(process.execPath, [cli, 'serve', file], { cwd: root, detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PROXYCORE_LOG_FORMAT: 'json' } })
  t.teardown(() => { try { process.kill(-(child.pid as number), 'SIGKILL') } catch {} })
  let err = ''
  child.stderr.on('data', (c: Buffer) => { err += c.toString() })
  let code: number | null | undefined
  child.on('exit', (c) => { code = c })
  // Either it exits (the fix) or it logs "serving" with the page hidden behind the metrics.
  await waitFor(() => code !== undefined || err.includes('"msg":"serving"'), 30_000)
  t.notMatch(err, /"msg":"serving"/, 'does not start')
  t.ok(await waitFor(() => code !== undefined, 10_000), 'exits')
  t.equal(code, 2, 'a config error: exit 2')
  t.match(err, /status path \\"\/metrics\\" is where metrics are served/)
})
