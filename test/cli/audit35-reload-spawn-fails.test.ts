/**
 * `proxycore serve` reload (SIGHUP), real CLI, real php-cgi: a reload whose changed spawn cannot
 * start (its new `socketName` port is taken by another program) is rejected as nginx rejects a
 * reload it cannot bind: the old php-cgi keeps serving (same process), the error is logged with the
 * spawn's path and code, and the next valid SIGHUP applies (docs/guides/operators.md, Reload).
 * Before, the routes swapped to the spawn once it was FAILED, the working php-cgi was stopped and
 * every request got 503 ERR_SPAWN_FAILED until the next reload.
 */
import t from 'tap'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { appDir, getText, serveKilled } from './run.js'

const PHP = '/usr/bin/php-cgi'

const yaml = (www: string, socketName: string, tag: string): string => `listen: 127.0.0.1:0
drainTimeout: 60s
spawns:
  php:
    binPath: ${PHP}
    socketName: ${JSON.stringify(socketName)}
    startTimeout: 60s
    environment: { PHP_FCGI_CHILDREN: "0", TAG: ${tag} }
routes:
  - { name: php, match: { extension: .php }, protocol: fastcgi, spawn: php, docroot: ${JSON.stringify(www)} }
`

t.test('a reload whose changed spawn cannot bind its port is rejected; the old spawn keeps serving', { skip: existsSync(PHP) ? false : `${PHP} not installed` }, async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { dir, file } = appDir(t, '', 'pc-audit35-spawnfail-')
  const www = join(dir, 'www')
  mkdirSync(www)
  writeFileSync(join(www, 'pid.php'), '<?php echo getmypid() . " " . getenv("TAG");')
  writeFileSync(file, yaml(www, '127.0.0.1:0', 'v1'))
  const { s, seen } = await serveKilled(t, file)
  const v1 = await getText(`${s.url}/pid.php`)
  t.equal(v1.status, 200)
  t.match(v1.body, / v1$/)
  const pid1 = Number(v1.body.split(' ')[0])
  seen.push(pid1)

  // Another program holds the port the new config gives php-cgi: every start fails to bind it, and
  // after the default restart policy's 5 restarts (~3 s) the spawn is FAILED, well before the
  // reload's bound on the wait (startTimeout plus 1 s).
  const port = await freePort()
  const holder = createServer()
  await new Promise<void>((resolve) => holder.listen(port, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => holder.close(() => resolve())))
  writeFileSync(file, yaml(www, `127.0.0.1:${port}`, 'v2'))
  let at = s.logs().length
  s.child.kill('SIGHUP')
  const line = await waitFor(() => s.logs().slice(at).some((l) => l.msg === 'reloaded' || String(l.msg).startsWith('reload rejected')), 90_000)
  t.ok(line, 'the reload ended')
  const outcome = s.logs().slice(at).find((l) => l.msg === 'reloaded' || String(l.msg).startsWith('reload rejected'))
  t.equal(outcome?.msg, 'reload rejected; the previous config keeps serving')
  const err = (outcome?.err ?? {}) as { code?: string, message?: string }
  t.equal(err.code, 'ERR_SPAWN_FAILED', 'logged with a stable code')
  t.match(err.message, /^spawns\.php: .*EADDRINUSE/, 'naming the spawn and the cause')
  const still = await getText(`${s.url}/pid.php`)
  t.equal(still.status, 200, 'the old config keeps serving')
  t.equal(still.body, v1.body, 'by the same php-cgi process')

  // The next valid SIGHUP applies.
  await new Promise<void>((resolve) => holder.close(() => resolve()))
  writeFileSync(file, yaml(www, '127.0.0.1:0', 'v3'))
  at = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reloaded', at)
  const v3 = await getText(`${s.url}/pid.php`)
  t.equal(v3.status, 200)
  t.match(v3.body, / v3$/)
  seen.push(Number(v3.body.split(' ')[0]))
  t.ok(await waitFor(() => !alive(pid1), 15_000), 'the replaced php-cgi stopped after the drain')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => !alive(seen[1] as number)), 'spawned process gone')
})
