/**
 * SIGHUP reload with spawned pools, the operator's everyday change, on the real CLI with real
 * spawned node:http backends and php-cgi (docs/guides/operators.md, Reload): an unchanged spawn
 * keeps its processes; a changed one is replaced make-before-break — a slow request to the old
 * process finishes with all its bytes and no request in between fails; a removed spawn's processes
 * and unix socket files go (php-cgi); two spawns may swap their unix sockets; a reload that fails
 * its checks changes nothing; the status JSON lists the new pools only. Storms and FAILED spawns:
 * audit37-reload-storm.test.ts; drains across two reloads: audit37-reload-drain.test.ts.
 */
import t from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { PHP_CGI, havePeer } from '../fastcgi/helpers/peers.js'
import { appDir, getText, processesNaming, serveKilled, sighupReload } from './run.js'
import { backendProgram, pidTag, slow, spawnsYaml as yaml, statusSpawns, traffic } from './reload-kit.js'

// `/slow` sends 30 000 bytes over ~3 s.
const BACKEND = backendProgram(30_000)

const PHP = PHP_CGI

t.test('a changed spawn is replaced while an unchanged one keeps its process; a slow request to the old one finishes whole', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { file, app } = appDir(t, BACKEND, 'pc-audit37-change-')
  writeFileSync(file, yaml(app, [{ name: 'a', tag: 'v1' }, { name: 'b', tag: 'v1' }]))
  const { s, seen } = await serveKilled(t, file)
  const [a1] = await pidTag(s, 'a')
  const [b1] = await pidTag(s, 'b')
  seen.push(a1, b1)

  const long = slow(`${s.url}/b/slow`)
  await long.head
  const flow = traffic(s.url, ['a', 'b'])
  const { line } = await sighupReload(s, file, yaml(app, [{ name: 'a', tag: 'v1' }, { name: 'b', tag: 'v2' }]))
  t.equal(line.msg, 'reloaded')
  const [b2, tag] = await pidTag(s, 'b')
  seen.push(b2)
  t.equal(tag, 'v2', 'the changed spawn serves its new config')
  t.not(b2, b1, 'by a new process')
  t.same(await pidTag(s, 'a'), [a1, 'v1'], 'the unchanged spawn keeps its process')
  t.ok(alive(b1), 'the old process drains its slow request')
  const r = await long.done
  t.same(r, { status: 200, bytes: 30_000 }, 'the slow request started before the HUP ends with all its bytes')
  const { count, bad } = await flow.stop()
  t.ok(count > 0)
  t.same(bad, [], 'no request failed across the reload')
  t.ok(await waitFor(() => !alive(b1), 15_000), 'the old process is stopped once drained')
  const st = await statusSpawns(s)
  t.same(st.map((x) => [x.name, x.state, x.processes.map((p) => p.pid)]), [['a', 'running', [a1]], ['b', 'running', [b2]]], 'status lists the new pools, no ghost')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})

t.test('a removed and a renamed spawn: old processes stopped, status has no ghost', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { file, app } = appDir(t, BACKEND, 'pc-audit37-remove-')
  writeFileSync(file, yaml(app, [{ name: 'a', tag: 'v1' }, { name: 'b', tag: 'v1' }, { name: 'c', tag: 'v1' }]))
  const { s, seen } = await serveKilled(t, file)
  const [a1] = await pidTag(s, 'a')
  const [b1] = await pidTag(s, 'b')
  const [c1] = await pidTag(s, 'c')
  seen.push(a1, b1, c1)
  // b removed, c renamed to d.
  const { line } = await sighupReload(s, file, yaml(app, [{ name: 'a', tag: 'v1' }, { name: 'd', tag: 'v1' }]))
  t.equal(line.msg, 'reloaded')
  const [d1] = await pidTag(s, 'd')
  seen.push(d1)
  t.not(d1, c1)
  t.equal((await getText(`${s.url}/b/`)).status, 404, 'the removed route is gone')
  t.ok(await waitFor(() => !alive(b1) && !alive(c1), 15_000), 'removed and renamed spawns\' processes stopped')
  t.same((await statusSpawns(s)).map((x) => [x.name, x.processes.map((p) => p.pid)]), [['a', [a1]], ['d', [d1]]])
  t.same(processesNaming(app).sort(), [a1, d1].sort(), 'no other backend runs')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})

t.test('php-cgi on unix sockets: a removed spawn\'s socket files go; two spawns swapping socketName both serve', async (t) => {
  // Missing: skipped with the reason, failed under CI=true.
  if (!havePeer(t, PHP)) return
  guardLeaks(t, { timeoutMs: 20_000 })
  const { dir, file } = appDir(t, '', 'pc-audit37-php-')
  writeFileSync(join(dir, 'pid.php'), '<?php echo getmypid() . " " . getenv("TAG");')
  const p1 = join(dir, 'one.sock')
  const p2 = join(dir, 'two.sock')
  const php = (spawns: Array<[string, string, string]>): string => `listen: 127.0.0.1:0
drainTimeout: 60s
status: { path: /server-status }
spawns:
${spawns.map(([n, sock, tag]) => `  ${n}:
    binPath: ${PHP}
    socketName: ${sock}
    startTimeout: 30s
    environment: { PHP_FCGI_CHILDREN: "0", TAG: ${tag} }
`).join('')}routes:
${spawns.map(([n]) => `  - { name: ${n}, match: { prefix: /${n}/ }, protocol: fastcgi, spawn: ${n}, docroot: ${JSON.stringify(dir)}, stripPrefix: true }\n`).join('')}`
  writeFileSync(file, php([['x', p1, 'x1'], ['y', p2, 'y1']]))
  const { s, seen } = await serveKilled(t, file)
  const get = async (n: string): Promise<[number, string]> => {
    const r = await getText(`${s.url}/${n}/pid.php`)
    if (r.status !== 200) throw new Error(`/${n}/: ${r.status} ${r.body}`)
    const [pid, tag] = r.body.split(' ')
    return [Number(pid), tag ?? '']
  }
  const [x1] = await get('x')
  const [y1] = await get('y')
  seen.push(x1, y1)
  t.ok(existsSync(p1) && existsSync(p2))

  let { line } = await sighupReload(s, file, php([['x', p2, 'x2'], ['y', p1, 'y2']]))
  t.equal(line.msg, 'reloaded', 'swapping socketName reloads')
  const [x2, tx] = await get('x')
  const [y2, ty] = await get('y')
  seen.push(x2, y2)
  t.same([tx, ty], ['x2', 'y2'])
  t.ok(await waitFor(() => !alive(x1) && !alive(y1), 15_000), 'old processes stopped')

  ;({ line } = await sighupReload(s, file, php([['x', p2, 'x2']])))
  t.equal(line.msg, 'reloaded')
  t.same(await get('x'), [x2, 'x2'], 'the unchanged spawn keeps its process')
  t.ok(await waitFor(() => !alive(y2) && !existsSync(p1), 15_000), 'the removed spawn stopped and its socket file removed')
  t.same((await statusSpawns(s)).map((x) => x.name), ['x'])

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => !alive(x2) && !existsSync(p2)), 'stopped, socket file removed')
})

t.test('a reload whose second changed spawn has a missing program changes nothing', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { dir, file, app } = appDir(t, BACKEND, 'pc-audit37-half-')
  writeFileSync(file, yaml(app, [{ name: 'a', tag: 'v1' }, { name: 'b', tag: 'v1' }]))
  const { s, seen } = await serveKilled(t, file)
  const a1 = await pidTag(s, 'a')
  const b1 = await pidTag(s, 'b')
  seen.push(a1[0], b1[0])
  const { line } = await sighupReload(s, file, yaml(app, [{ name: 'a', tag: 'v2' }, { name: 'b', tag: 'v2', bin: JSON.stringify(join(dir, 'missing')) }]))
  t.match(line.msg, /^reload rejected/)
  t.same(await pidTag(s, 'a'), a1, 'the first spawn\'s change was not applied')
  t.same(await pidTag(s, 'b'), b1)
  t.same(processesNaming(app).sort(), [a1[0], b1[0]].sort(), 'no process of the rejected config runs')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})

t.test('a reload whose second changed spawn crashes at every start is rejected; the first one\'s new processes are stopped', async (t) => {
  guardLeaks(t, { timeoutMs: 20_000 })
  const { dir, file, app } = appDir(t, BACKEND, 'pc-audit37-halfcrash-')
  const bad = join(dir, 'bad.mjs')
  writeFileSync(bad, 'process.exit(3)\n')
  writeFileSync(file, yaml(app, [{ name: 'a', tag: 'v1' }, { name: 'b', tag: 'v1' }]))
  const { s, seen } = await serveKilled(t, file)
  const a1 = await pidTag(s, 'a')
  const b1 = await pidTag(s, 'b')
  seen.push(a1[0], b1[0])
  const { line } = await sighupReload(s, file, yaml(app, [{ name: 'a', tag: 'v2' }, { name: 'b', tag: 'v2', prog: bad, extra: '    restart: { maxStarts: 1 }\n' }]))
  t.equal(line.msg, 'reload rejected; the previous config keeps serving')
  t.match(line.err, { code: 'ERR_SPAWN_FAILED', message: /^spawns\.b: / }, 'the log names the spawn that failed')
  t.same(await pidTag(s, 'a'), a1, 'the first spawn\'s change is rolled back: its old process serves')
  t.same(await pidTag(s, 'b'), b1)
  t.ok(await waitFor(() => processesNaming(app).length === 2 && processesNaming(bad).length === 0, 15_000), 'the new processes of the rejected config are stopped')
  t.same((await statusSpawns(s)).map((x) => [x.name, x.state, x.processes.map((p) => p.pid)]), [['a', 'running', [a1[0]]], ['b', 'running', [b1[0]]]], 'status shows the old pools')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processesNaming(app).length === 0), 'no backend left')
})
