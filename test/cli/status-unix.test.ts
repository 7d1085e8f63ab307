/**
 * The status page on a unix-socket listener (proxycore behind nginx or a local agent): its peers
 * have no address, so no address entry of `status.allow` matches them. The entry `unix:` (nginx's
 * `allow unix:`) lets them in; without it they get 403, as before. The real CLI, a real socket.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { runCli, serve } from './run.js'

async function overUnix (socketPath: string, path: string): Promise<{ status: number, body: string }> {
  const r = await get(`http://localhost${path}`, { socketPath })
  return { status: r.status, body: r.body.toString() }
}

for (const allow of [['127.0.0.0/8', 'unix:'], ['127.0.0.0/8']]) {
  t.test(`status.allow ${JSON.stringify(allow)}: a unix-socket client ${allow.includes('unix:') ? 'sees' : 'is refused'} the page`, async (t) => {
    guardLeaks(t, { timeoutMs: 15_000 })
    const dir = mkdtempSync(join(tmpdir(), 'pc-status-unix-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const sock = join(dir, 'http.sock')
    const file = join(dir, 'proxycore.yaml')
    writeFileSync(file, `listen: [127.0.0.1:0, ${JSON.stringify(`unix:${sock}`)}]
status: { path: /server-status, allow: ${JSON.stringify(allow)} }
routes:
  - { protocol: http, backends: ["127.0.0.1:9"] }
`)
    t.equal((await runCli(['check', file])).code, 0, 'the config is valid')
    const s = await serve(file)
    t.teardown(() => { try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {} })
    const r = await overUnix(sock, '/server-status?format=json')
    if (allow.includes('unix:')) {
      t.equal(r.status, 200)
      t.equal(JSON.parse(r.body).software.split('/')[0], 'proxycore')
    } else {
      t.equal(r.status, 403)
    }
    t.equal((await fetch(`${s.url}/server-status?format=json`)).status, 200, 'loopback TCP as before')
    s.child.kill('SIGTERM')
    t.equal(await s.exited, 0)
  })
}
