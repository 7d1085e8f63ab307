/**
 * examples/multi-tenant: the config validates; as root, two throwaway users are created, the
 * config is started through createProxy, and each tenant's backend is shown to run with its own
 * uid/gid (read from /proc), to be unable to read the other tenant's 0600 file, and unable to
 * connect to the other tenant's backend socket. CI runs as root; elsewhere the root part skips.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createProxy, loadConfig, loadConfigOrThrow } from '../../src/index.js'
import { guardLeaks } from '../../test/helpers/leaks.js'
import { closeServer, get, listen } from '../../test/helpers/servers.js'
import { captureLogger } from '../../test/cgi/harness.js'

const CONFIG = fileURLToPath(new URL('./proxycore.yaml', import.meta.url))
const APP = fileURLToPath(new URL('./app.mjs', import.meta.url))

t.test('the config passes `proxycore check` validation', async (t) => {
  const r = await loadConfig(CONFIG, { env: {} })
  t.same(r.issues, [], 'no issues with the defaults')
  t.equal(r.config.routes.length, 2)
  t.same(Object.keys(r.config.tenants ?? {}), ['alice', 'bob'])
  t.equal(r.config.spawns?.['alice-site']?.tenant, 'alice')
})

/** A free id >= 1000 (spawns refuse lower ones: minUid/minGid) used neither as uid nor gid. */
function freeId (from: number, taken: Set<number>): number {
  for (let id = from; id < from + 1000; id++) {
    if (taken.has(id)) continue
    const used = (db: string): boolean => { try { execFileSync('getent', [db, String(id)], { stdio: 'ignore' }); return true } catch { return false } }
    if (!used('passwd') && !used('group')) { taken.add(id); return id }
  }
  throw new Error('no free id')
}

/** /proc/<pid>/status line values, e.g. Uid: real effective saved fs. */
function procStatus (pid: number, key: string): string[] {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith(`${key}:`)) ?? ''
  return line.slice(key.length + 1).trim().split(/\s+/).filter((x) => x !== '')
}

t.test('each tenant runs as its own user and cannot read the other one', async (t) => {
  guardLeaks(t)
  if (process.getuid?.() !== 0) {
    if (process.env.CI === 'true') t.fail('this test needs root (CI runs as root)')
    else t.plan(0, 'needs root: creates users and switches to them')
    return
  }
  const taken = new Set<number>()
  const tag = process.pid.toString(36)
  const users: Record<string, { name: string, id: number }> = {}
  for (const tenant of ['alice', 'bob']) {
    const name = `pc-${tenant}-${tag}`
    const id = freeId(64000, taken)
    execFileSync('groupadd', ['--system', '-g', String(id), name])
    t.teardown(() => { try { execFileSync('groupdel', [name], { stdio: 'ignore' }) } catch {} })
    execFileSync('useradd', ['--system', '--no-create-home', '-u', String(id), '-g', String(id), '-s', '/usr/sbin/nologin', name], { stdio: 'ignore' })
    t.teardown(() => { execFileSync('userdel', [name]) })
    users[tenant] = { name, id }
  }

  // <tmpdir>/<base> (0755, root) / sites / <tenant> (0700, tenant) / app.mjs + secret.txt (0600)
  const base = mkdtempSync(join(tmpdir(), 'pc-tenants-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  chmodSync(base, 0o755)
  const run = join(base, 'run')
  mkdirSync(run, { mode: 0o755 })
  const secrets: Record<string, string> = {}
  for (const [tenant, u] of Object.entries(users)) {
    const dir = join(base, 'sites', tenant)
    mkdirSync(dir, { recursive: true })
    chmodSync(join(base, 'sites'), 0o755)
    copyFileSync(APP, join(dir, 'app.mjs'))
    secrets[tenant] = join(dir, 'secret.txt')
    writeFileSync(secrets[tenant], `${tenant}'s secret\n`, { mode: 0o600 })
    for (const f of [dir, join(dir, 'app.mjs'), secrets[tenant]]) chownSync(f, u.id, u.id)
    chmodSync(dir, 0o700)
  }

  const env = {
    NODE: process.execPath,
    MT_SITES: join(base, 'sites'),
    MT_RUN_DIR: run,
    ALICE_USER: users.alice.name, ALICE_GROUP: users.alice.name,
    BOB_USER: users.bob.name, BOB_GROUP: users.bob.name,
  }
  const { config } = await loadConfigOrThrow(CONFIG, { env })
  const { listen: _l, status: _s, ...rest } = config
  const { logger } = captureLogger()
  const proxy = await createProxy({ ...rest, logger })
  t.teardown(() => proxy.close(2000))
  const server = createServer(proxy.handler)
  const port = await listen(server)
  t.teardown(() => closeServer(server))
  const ask = (tenant: string, path: string): ReturnType<typeof get> =>
    get(`http://127.0.0.1:${port}${path}`, { headers: { host: `${tenant}.localhost` } })

  const other = { alice: 'bob', bob: 'alice' } as const
  for (const tenant of ['alice', 'bob'] as const) {
    const u = users[tenant]
    const who = await ask(tenant, '/')
    t.equal(who.status, 200, `${tenant}.localhost answers`)
    const body = JSON.parse(who.body.toString()) as { tenant: string, uid: number, gid: number, groups: number[], pid: number }
    t.equal(body.tenant, tenant, `${tenant}.localhost reached ${tenant}'s backend`)

    const pid = proxy.spawns?.status().find((s) => s.name === `${tenant}-site`)?.processes.find((p) => p.state === 'ready')?.pid
    t.ok(typeof pid === 'number', `${tenant}: backend pid`)
    const p = pid as number
    const id = String(u.id)
    t.same(procStatus(p, 'Uid'), [id, id, id, id], `${tenant}: /proc/${p} real/effective/saved/fs uid = ${u.name}`)
    t.same(procStatus(p, 'Gid'), [id, id, id, id], `${tenant}: gid = ${u.name}`)
    t.same(procStatus(p, 'Groups'), [], `${tenant}: no supplementary groups`)
    t.equal(procStatus(p, 'CapEff')[0], '0000000000000000', `${tenant}: no capabilities`)
    const limits = readFileSync(`/proc/${p}/limits`, 'utf8')
    t.match(limits, /Max open files\s+256\s+256/, `${tenant}: nofile limit applied`)
    t.match(limits, /Max data size\s+1073741824\s+1073741824/, `${tenant}: data limit (RLIMIT_DATA) applied`)

    const own = await ask(tenant, `/read?path=${encodeURIComponent(secrets[tenant])}`)
    t.equal(own.body.toString(), `${tenant}'s secret\n`, `${tenant} reads its own 0600 file`)
    const theirs = await ask(tenant, `/read?path=${encodeURIComponent(secrets[other[tenant]])}`)
    t.equal(theirs.status, 403)
    t.equal(theirs.body.toString(), 'EACCES\n', `${tenant} cannot read ${other[tenant]}'s file`)
    const sock = await ask(tenant, `/connect?path=${encodeURIComponent(join(run, `${other[tenant]}.sock`))}`)
    t.equal(sock.body.toString(), 'EACCES\n', `${tenant} cannot connect to ${other[tenant]}'s backend socket`)
  }
  t.equal((await get(`http://127.0.0.1:${port}/`, { headers: { host: 'mallory.localhost' } })).status, 404, 'an unknown host matches no route')
})
