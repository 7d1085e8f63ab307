/**
 * A changed spawn whose fixed address binds the same socket as the old one's under another spelling
 * (docs/guides/operators.md, Reload): `0.0.0.0:P` tightened to `127.0.0.1:P` (the wildcard holds
 * the port on every address), `127.0.0.1:P` written `localhost:P`. The old one is stopped first, as
 * for the same address written alike, and the reload applies. Before, the new php-cgi could not bind
 * the port the old one held: after its restarts the reload was rejected (EADDRINUSE), so the change
 * needed two reloads through another port.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { PHP_CGI, havePeer } from '../fastcgi/helpers/peers.js'
import { appDir, getText, serveKilled, sighupReload } from './run.js'

const PHP = PHP_CGI

for (const [from, to] of [['0.0.0.0', '127.0.0.1'], ['127.0.0.1', 'localhost']]) {
  t.test(`php-cgi's socketName ${from}:P changed to ${to}:P reloads`, async (t) => {
    // Missing: skipped with the reason, failed under CI=true.
    if (!havePeer(t, PHP)) return
    guardLeaks(t, { timeoutMs: 20_000 })
    const { dir, file } = appDir(t, '', 'pc-audit37-addr-')
    writeFileSync(join(dir, 'pid.php'), '<?php echo getmypid() . " " . getenv("TAG");')
    const port = await freePort()
    const yaml = (host: string, tag: string): string => `listen: 127.0.0.1:0
drainTimeout: 30s
spawns:
  php:
    binPath: ${PHP}
    socketName: "${host}:${port}"
    startTimeout: 30s
    environment: { PHP_FCGI_CHILDREN: "0", TAG: ${tag} }
routes:
  - { name: php, protocol: fastcgi, spawn: php, docroot: ${JSON.stringify(dir)} }
`
    const get = async (): Promise<[number, string]> => {
      const r = await getText(`${s.url}/pid.php`)
      if (r.status !== 200) throw new Error(`${r.status} ${r.body}`)
      const [pid, tag] = r.body.split(' ')
      return [Number(pid), tag ?? '']
    }
    writeFileSync(file, yaml(from, 'v1'))
    const { s, seen } = await serveKilled(t, file)
    const [p1] = await get()
    seen.push(p1)
    const { line, at } = await sighupReload(s, file, yaml(to, 'v2'))
    t.equal(line.msg, 'reloaded', `reloaded (${JSON.stringify(line.err ?? null)})`)
    t.ok(s.logs().slice(at).some((l) => l.msg === 'reload: address reused by a changed spawn; stopping the old one first'), 'the old one was stopped first')
    let now: [number, string] = [0, '']
    t.ok(await waitFor(async () => { try { now = await get(); return now[1] === 'v2' } catch { return false } }, 15_000), 'the new config serves')
    seen.push(now[0])
    t.not(now[0], p1)
    t.notOk(alive(p1), 'the old php-cgi is gone')

    s.child.kill('SIGTERM')
    t.equal(await s.exited, 0)
    t.ok(await waitFor(() => !alive(now[0])), 'spawned process gone')
  })
}
