/**
 * docs/guides/operators.md as a new operator walks it, on the real CLI with php-cgi spawned as
 * FastCGI: `proxycore check` (exit 2, `file:line:col`), the systemd unit's own ExecStartPre and
 * ExecReload commands (SIGHUP), what a reload refuses and how it is logged (the log messages the
 * guide quotes, word for word), KillMode=mixed's SIGTERM to proxycore alone (exit 0, the spawn's
 * group gone), `proxycore status`, and the slow-upload snippet (its values are the defaults; a
 * trickled body gets 408 ERR_UPLOAD_TOO_SLOW and a warning naming the setting and the rate).
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { Raw, postHead } from '../helpers/raw-client.js'
import { havePeer, PHP_CGI, tempDir } from '../fastcgi/helpers/peers.js'
import { phpSiteYaml } from './snippets.js'
import { cli, root, runCli, serveKilled } from '../cli/run.js'

const guide = readFileSync(join(root, 'docs/guides/operators.md'), 'utf8')
const block = (lang: string): string => /^```LANG\n([\s\S]*?)^```/m.exec(guide.replace(/```(ini|yaml)\n/g, (_m, l: string) => l === lang ? '```LANG\n' : _m))?.[1] ?? ''
const unit = block('ini')
const unitLine = (key: string): string => new RegExp(`^${key}=(.*)$`, 'm').exec(unit)?.[1] ?? ''

/** Every `...` in the guide's text that reads like one of the CLI's log messages. */
const quotedLogs = [...guide.matchAll(/`(reload[:\s][^`]*)`/g)].map((m) => m[1].replace(/\s+/g, ' '))

function sh (cmd: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number, out: string }> {
  return new Promise((resolve) => {
    execFile('/bin/sh', ['-c', cmd], { timeout: 30_000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, out: stdout + stderr })
    })
  })
}

const PHP = '<?php header("Content-Type: text/plain"); $b = file_get_contents("php://input"); echo "got ", strlen($b), " via ", PHP_SAPI, "\\n";\n'

function site (t: Parameters<typeof tempDir>[0], extra = '', routeExtra = ''): { dir: string, file: string, write: (top: string, route?: string) => void } {
  const dir = tempDir(t, 'pc-doc-ops-')
  writeFileSync(join(dir, 'i.php'), PHP)
  const file = join(dir, 'proxycore.yaml')
  const write = (top: string, route = ''): void => writeFileSync(file, phpSiteYaml(PHP_CGI, dir, `status: { path: /server-status }\n${top}`, route))
  write(extra, routeExtra)
  return { dir, file, write }
}

t.test('operators.md step 2: proxycore check lists every problem as file:line:col and exits 2', async (t) => {
  guardLeaks(t)
  t.match(guide, /`proxycore check proxycore\.yaml` — like `nginx -t`: every problem with `file:line:col`, exit 2 when invalid/)
  const dir = tempDir(t, 'pc-doc-ops-check-')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0
drainTimeout: nope
routes:
  - match: { prefix: /a/ }
    protocol: http
    backends: [127.0.0.1:1]
    balance: lol
  - match: { prefix: /b/ }
    protocol: htp
    backends: [127.0.0.1:1]
`)
  const bad = await runCli(['check', file])
  t.equal(bad.code, 2, 'exit 2 when invalid')
  const lines = bad.stderr.trim().split('\n')
  t.same(lines.slice(0, -1).map((l) => /^proxycore\.yaml:(\d+:\d+): (\/\S+):/.exec(l.replace(dir + '/', ''))?.slice(1, 3) ?? l),
    [['2:15', '/drainTimeout'], ['7:14', '/routes/0/balance'], ['9:15', '/routes/1/protocol']], 'each problem with file:line:col and its path')
  t.match(lines.at(-1), /3 problem\(s\)$/)
  // A route with a malformed field is still compiled without it: its unknown protocol shows too.
  t.match(guide, /A route with a malformed field \(`balance: lol`\) is still compiled, without that field, so its\s+unknown `protocol`/)
  writeFileSync(file, 'listen: 127.0.0.1:0\nroutes:\n  - protocol: htp\n    backends: [127.0.0.1:1]\n    balance: lol\n')
  const both = await runCli(['check', file])
  t.equal(both.code, 2)
  t.match(both.stderr, /\/routes\/0\/balance/)
  t.match(both.stderr, /\/routes\/0\/protocol: unknown protocol "htp"/, 'the unknown protocol shows in the same run')
  t.match(both.stderr, /2 problem\(s\)/)
  writeFileSync(file, 'listen: 127.0.0.1:0\nroutes:\n  - protocol: http\n    backends: [127.0.0.1:1]\n')
  const ok = await runCli(['check', file])
  t.equal(ok.code, 0, ok.stderr)
  t.match(ok.stdout, /ok \(1 route\(s\), 0 spawn\(s\), 1 file\(s\)\)/)
})

t.test('operators.md step 3: the systemd unit\'s commands; reload (SIGHUP); KillMode=mixed stop', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  if (!havePeer(t, PHP_CGI)) return
  const proxycore = `${JSON.stringify(process.execPath)} ${JSON.stringify(cli)}`
  const { file, write } = site(t)
  t.equal(unitLine('KillMode'), 'mixed')
  // ExecStartPre, as written, with the config path and the binary of this checkout.
  const pre = await sh(unitLine('ExecStartPre').replace('/usr/bin/proxycore', proxycore).replace('/etc/proxycore/proxycore.yaml', file))
  t.equal(pre.code, 0, `ExecStartPre passes: ${pre.out.trim()}`)
  const { s, seen } = await serveKilled(t, file)
  const v1 = await get(`${s.url}/i.php`)
  t.equal(v1.status, 200)
  t.match(v1.body.toString(), /^got 0 via cgi-fcgi/)
  const json = JSON.parse((await get(`${s.url}/server-status?format=json`)).body.toString()) as { spawns: Array<{ processes: Array<{ pid: number }> }> }
  const php = json.spawns[0].processes[0].pid
  seen.push(php)
  const reload = async (): Promise<number> => {
    const at = s.logs().length
    // ExecReload, as written: $MAINPID is set by systemd.
    const r = await sh(unitLine('ExecReload'), { MAINPID: String(s.child.pid) })
    t.equal(r.code, 0, 'ExecReload ran')
    return at
  }
  const msgs = (at: number): string[] => s.logs().slice(at).map((l) => String(l.msg))

  // A bad file: rejected, logged, the old config keeps serving.
  write('', '    balance: lol\n')
  let at = await reload()
  await s.waitLog('reload rejected; the previous config keeps serving', at)
  t.ok(quotedLogs.includes('reload rejected'), 'the guide names `reload rejected`')
  t.ok(msgs(at).some((m) => m.startsWith('reload rejected')), 'logged as the guide says')
  t.equal((await get(`${s.url}/i.php`)).status, 200, 'the old config keeps serving')

  // listen changed: the added address is bound and logged, no restart needed; the one bound at
  // start is unchanged and keeps its socket. The file's logLevel too: it applies from the reload on.
  write('logLevel: debug')
  writeFileSync(file, readFileSync(file, 'utf8').replace('listen: 127.0.0.1:0', 'listen: [127.0.0.1:0, 127.0.0.2:0]'))
  at = await reload()
  await s.waitLog('reloaded', at)
  t.ok(msgs(at).includes('listening'), 'the added address is bound and logged')
  t.notOk(quotedLogs.some((m) => m.startsWith('reload: listen changed')), 'no restart warning quoted')
  const levelMsg = quotedLogs.find((m) => m.startsWith('reload: log level'))
  // Logged once the reload resolved, just after `reloaded`: wait for it, do not race the pipe.
  await s.waitLog(levelMsg ?? 'reload: log level changed', at)
  t.ok(msgs(at).includes(levelMsg ?? '-'), `"${levelMsg ?? ''}" after the file's logLevel changed`)
  t.equal((await get(`${s.url}/i.php`)).status, 200, 'still served on the address bound at start')
  t.equal((JSON.parse((await get(`${s.url}/server-status?format=json`)).body.toString()) as { spawns: Array<{ processes: Array<{ pid: number }> }> }).spawns[0].processes[0].pid, php,
    'an unchanged spawn keeps its process across reloads')

  // `proxycore status http://host:port/server-status` prints tables.
  const st = await runCli(['status', `${s.url}/server-status`])
  t.equal(st.code, 0)
  t.match(st.stdout, /^ROUTE +PROTOCOL +BACKENDS +REQUESTS/m)
  t.match(st.stdout, /^php +fastcgi +php +\d+/m)
  t.match(st.stdout, new RegExp(`^php +running +${php} +ready `, 'm'))

  // KillMode=mixed: SIGTERM to proxycore only. It stops php-cgi itself and exits 0.
  t.ok(processGroup(php).length > 0, 'php-cgi runs in its own process group')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0, 'exit 0 after SIGTERM')
  t.ok(await waitFor(() => processGroup(php).length === 0, 10_000), 'the spawn\'s process group is gone')
})

t.test('operators.md: the log messages it quotes are the ones the code writes', async (t) => {
  const src = (dir: string): string => readdirSync(join(root, dir), { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.ts'))
    .map((name) => readFileSync(join(root, dir, name), 'utf8')).join('\n').replace(/\\'/g, "'")
  const code = src('src/gateway') + src('src/cli')
  t.ok(quotedLogs.length >= 5, `${quotedLogs.length} messages quoted: ${quotedLogs.join(' | ')}`)
  for (const m of quotedLogs) t.ok(code.includes(`'${m}`), `"${m}" is logged by src/gateway or src/cli`)
})

t.test('operators.md slow uploads: the snippet\'s values are the defaults; a trickled body gets 408 ERR_UPLOAD_TOO_SLOW, logged as a warning', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  if (!havePeer(t, PHP_CGI)) return
  const snippet = parse(block('yaml')) as { routes: Array<{ timeouts: { minUploadRate: number, uploadGrace: string }, maxBodySize: string }> }
  const schema = JSON.parse(readFileSync(join(root, 'schema/proxycore.schema.json'), 'utf8')) as { properties: { routes: { items: { properties: { timeouts: { properties: Record<string, { default?: unknown }> } } } } } }
  const defaults = schema.properties.routes.items.properties.timeouts.properties
  t.match(guide, /These are the defaults \(`maxBodySize` aside\)/)
  t.equal(String(snippet.routes[0].timeouts.minUploadRate), String(defaults.minUploadRate.default), 'minUploadRate: the default')
  t.equal(snippet.routes[0].timeouts.uploadGrace, defaults.uploadGrace.default, 'uploadGrace: the default')
  // The snippet's route, with php-cgi instead of php-fpm, a rate of 1000 B/s and a 300 ms grace so the test is short.
  const { file } = site(t, '', '    timeouts: { minUploadRate: 1000, uploadGrace: 300ms }\n')
  const { s, seen } = await serveKilled(t, file)
  const port = Number(new URL(s.url).port)
  const on = await get(`${s.url}/i.php`, { method: 'POST', body: Buffer.alloc(4096, 97) })
  const j = JSON.parse((await get(`${s.url}/server-status?format=json`)).body.toString()) as { spawns: Array<{ processes: Array<{ pid: number }> }> }
  seen.push(...j.spawns[0].processes.map((p) => p.pid))
  t.match(on.body.toString(), /^got 4096 via cgi-fcgi/, 'an upload at full speed goes through')
  const at = s.logs().length
  const c = new Raw(port, postHead('/i.php', 100_000))
  t.teardown(() => c.socket.destroy())
  // 10 bytes every 50 ms: 200 B/s, a fifth of the rate.
  const started = Date.now()
  const trickle = setInterval(() => { if (!c.closed) c.socket.write(Buffer.alloc(10, 98)) }, 50)
  t.teardown(() => clearInterval(trickle))
  t.ok(await c.answered(20_000), 'answered')
  clearInterval(trickle)
  const ms = Date.now() - started
  t.equal(c.status(), 408)
  t.match(c.body() ?? '', /ERR_UPLOAD_TOO_SLOW/)
  t.ok(ms < 10_000, `cut after ${ms} ms`)
  let line: Record<string, unknown> | undefined
  await waitFor(() => { line = s.logs().slice(at).find((l) => l.code === 'ERR_UPLOAD_TOO_SLOW'); return line !== undefined }, 5000)
  t.equal(line?.level, 40, 'logged as a warning (pino level 40)')
  t.match(String(line?.msg), /\(\d+ bytes\/s;.*below timeouts\.minUploadRate 1000 bytes\/s/, 'naming the setting and the measured rate')
})

t.test('operators.md status: /metrics is proxycore\'s on every Host unless status.metricsPath moves it', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  t.match(guide, /The metrics\s+path is `\/metrics` on every listener and every `Host` unless `status\.metricsPath` says otherwise/)
  const { createServer } = await import('node:http')
  const { listen } = await import('../helpers/servers.js')
  const be = createServer((req, res) => res.end(`the app's own ${req.url ?? ''}\n`))
  const port = await listen(be, t)
  const dir = tempDir(t, 'pc-doc-ops-metrics-')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0\nstatus: { path: /server-status }\nroutes:\n  - { name: app, protocol: http, backends: [127.0.0.1:${port}] }\n`)
  const { s } = await serveKilled(t, file)
  t.equal((await get(`${s.url}/metricsx`)).body.toString(), 'the app\'s own /metricsx\n', 'other paths reach the app')
  t.match(guide, /loopback clients get proxycore's metrics \(with a `Host` that is an IP\s+address, `localhost` or a name of `status\.hosts`\), others 403/)
  t.match((await get(`${s.url}/metrics`, { headers: { host: '127.0.0.1' } })).body.toString(), /^# HELP proxycore_/, 'Host 127.0.0.1: /metrics is proxycore\'s')
  // Another Host: still proxycore's path (a 403, test/status/audit35b-hosts.test.ts), never the app's.
  const other = await get(`${s.url}/metrics`, { headers: { host: 'app.example' } })
  t.equal(other.status, 403, 'Host app.example: /metrics is proxycore\'s, refused')
  t.notMatch(other.body.toString(), /the app's own/, 'not the app\'s')
  const schema = JSON.parse(readFileSync(join(root, 'schema/proxycore.schema.json'), 'utf8')) as { properties: { status: { properties: Record<string, unknown> } } }
  t.same(Object.keys(schema.properties.status.properties).sort(), ['allow', 'hosts', 'metricsPath', 'path'], 'status.metricsPath moves it (test/status/metrics-path.test.ts)')
})
