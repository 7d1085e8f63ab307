/**
 * A reload compares `listen` addresses as sockets, not as text (nginx compares socket addresses):
 * the same socket spelled otherwise — `localhost:P` for `127.0.0.1:P`, `:P` for `[::]:P`, a
 * relative unix path for its absolute form — keeps its socket (no bind, no EADDRINUSE, no drain),
 * on the real CLI with SIGHUP. A spelling that is really another socket (`0.0.0.0:P` beside the
 * dual-stack `[::]:P`) is still a new address.
 */
import t, { type Test } from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join, relative } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { backend, get } from '../helpers/servers.js'
import { appDir, root, serveKilled, sighupReload, type Served } from './run.js'

interface Teardown { teardown (fn: () => void | Promise<void>): void }

/** A backend answering `ok <url>`: its port. */
const okBackend = async (t: Teardown): Promise<number> => (await backend(t, (req, res) => { res.end(`ok ${req.url ?? ''}`) })).port

const yaml = (listen: string[], port: number): string => `listen: ${JSON.stringify(listen)}
drainTimeout: 60s
routes:
  - { name: r, protocol: http, backends: ['127.0.0.1:${port}'] }
`

const reload = (s: Served, file: string, listen: string[], port: number): Promise<{ at: number, line: Record<string, unknown> }> => sighupReload(s, file, yaml(listen, port))

/** A keep-alive connection (TCP port or unix path) that sends one request at a time. */
async function keepAlive (t: Teardown, where: { port: number, host: string } | { path: string }): Promise<{ ask: (path: string) => Promise<string>, closed: () => boolean }> {
  const c: Socket = 'path' in where ? connect(where.path) : connect(where.port, where.host)
  let got = ''
  let closed = false
  c.setEncoding('utf8')
  c.on('data', (d: string) => { got += d })
  c.on('error', () => {})
  c.once('close', () => { closed = true })
  t.teardown(() => { c.destroy() })
  await new Promise<void>((resolve, reject) => { c.once('connect', resolve); c.once('error', reject) })
  const ask = async (path: string): Promise<string> => {
    got = ''
    c.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`)
    await waitFor(() => closed || got.endsWith(`ok ${path}`), 30_000)
    return closed ? 'closed' : got.slice(got.lastIndexOf('\r\n\r\n') + 4)
  }
  return { ask, closed: () => closed }
}

/** Same socket, other spelling: the reload applies, nothing is bound or stopped, the open connection stays. */
async function sameSocket (t: Test, s: Served, file: string, be: number, listen: string[], ka: Awaited<ReturnType<typeof keepAlive>>, label: string): Promise<void> {
  const { at, line } = await reload(s, file, listen, be)
  t.match(line, { msg: 'reloaded' }, `${label}: the reload applies (${String(line.reason ?? '')})`)
  const since = s.logs().slice(at)
  t.same(since.filter((l) => l.msg === 'listening').map((l) => l.address), [], `${label}: nothing bound anew`)
  t.equal(await ka.ask('/after'), 'ok /after', `${label}: a connection accepted before the reload still serves (the socket is kept)`)
  t.notOk(s.logs().slice(at).some((l) => l.msg === 'stopped listening'), `${label}: no listener stopped`)
}

/** `serve` on 127.0.0.1:P with a keep-alive connection that has been answered once. */
async function servedOnLoopback (t: Test): Promise<{ s: Served, file: string, be: number, p: number, ka: Awaited<ReturnType<typeof keepAlive>> }> {
  const { file } = appDir(t, '', 'pc-a36-spell-')
  const be = await okBackend(t)
  const p = await freePort()
  writeFileSync(file, yaml([`127.0.0.1:${p}`], be))
  const { s } = await serveKilled(t, file)
  const ka = await keepAlive(t, { port: p, host: '127.0.0.1' })
  t.equal(await ka.ask('/before'), 'ok /before')
  return { s, file, be, p, ka }
}

t.test('localhost:P and 127.0.0.1:P are one socket: kept over reloads both ways', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { s, file, be, p, ka } = await servedOnLoopback(t)
  await sameSocket(t, s, file, be, [`localhost:${p}`], ka, '127.0.0.1 -> localhost')
  await sameSocket(t, s, file, be, [`127.0.0.1:${p}`], ka, 'localhost -> 127.0.0.1')
  // A change elsewhere in the list still applies beside the kept socket.
  const p2 = await freePort()
  const { line } = await reload(s, file, [`localhost:${p}`, `127.0.0.1:${p2}`], be)
  t.same(line.addresses, [`http://127.0.0.1:${p}`, `http://127.0.0.1:${p2}`], '`reloaded` lists the kept and the added address')
  t.equal((await get(`http://127.0.0.1:${p2}/n`)).body.toString(), 'ok /n')
  t.equal(await ka.ask('/still'), 'ok /still')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('[::ffff:127.0.0.1]:P and 127.0.0.1:P are one socket (Linux binds the IPv4-mapped spelling as IPv4)', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { s, file, be, p, ka } = await servedOnLoopback(t)
  await sameSocket(t, s, file, be, [`[::ffff:127.0.0.1]:${p}`], ka, '127.0.0.1 -> [::ffff:127.0.0.1]')
  await sameSocket(t, s, file, be, [`127.0.0.1:${p}`], ka, '[::ffff:127.0.0.1] -> 127.0.0.1')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test(':P (every address, as Node binds a port alone) and [::]:P are one socket; 0.0.0.0:P is another', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file } = appDir(t, '', 'pc-a36-spell-')
  const be = await okBackend(t)
  const p = await freePort()
  writeFileSync(file, yaml([`:${p}`], be))
  const { s } = await serveKilled(t, file)
  const bound = String(s.url)
  const ka = await keepAlive(t, { port: p, host: '127.0.0.1' })
  t.equal(await ka.ask('/before'), 'ok /before')
  if (bound === `http://[::]:${p}`) {
    await sameSocket(t, s, file, be, [`[::]:${p}`], ka, ':P -> [::]:P')
    await sameSocket(t, s, file, be, [`:${p}`], ka, '[::]:P -> :P')
    // The dual-stack socket holds the IPv4 port too: 0.0.0.0:P is a new socket whose bind fails.
    const { line } = await reload(s, file, [`0.0.0.0:${p}`], be)
    t.match(line, { msg: 'reload rejected; the previous config keeps serving', code: 'EADDRINUSE' }, '0.0.0.0:P is not the dual-stack socket')
  } else {
    // No IPv6 on this host: a port alone binds 0.0.0.0.
    t.equal(bound, `http://0.0.0.0:${p}`)
    await sameSocket(t, s, file, be, [`0.0.0.0:${p}`], ka, ':P -> 0.0.0.0:P')
    await sameSocket(t, s, file, be, [`:${p}`], ka, '0.0.0.0:P -> :P')
  }
  t.equal(await ka.ask('/still'), 'ok /still')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('a unix socket by a relative path and by its absolute path is one socket; its file stays', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { dir, file } = appDir(t, '', 'pc-a36-spell-')
  const be = await okBackend(t)
  const p = await freePort()
  const sock = join(dir, 's.sock')
  // `serve` runs with its cwd at the checkout: the relative spelling is relative to it.
  const rel = relative(root, sock)
  t.notOk(rel.startsWith('/'), `a relative path (${rel})`)
  writeFileSync(file, yaml([`127.0.0.1:${p}`, `unix:${rel}`], be))
  const { s } = await serveKilled(t, file)
  const ka = await keepAlive(t, { path: sock })
  t.equal(await ka.ask('/before'), 'ok /before')
  await sameSocket(t, s, file, be, [`127.0.0.1:${p}`, `unix:${sock}`], ka, 'relative -> absolute')
  t.equal((await get('http://localhost/fresh', { socketPath: sock })).body.toString(), 'ok /fresh', 'a new connection to the socket file is served')
  await sameSocket(t, s, file, be, [`127.0.0.1:${p}`, `unix:${rel}`], ka, 'absolute -> relative')
  t.equal((await get('http://localhost/fresh2', { socketPath: sock })).body.toString(), 'ok /fresh2', 'a new connection to the socket file is served')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('one unix socket named twice (relative and absolute) is refused by the config check, never bound twice over itself', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { dir, file } = appDir(t, '', 'pc-a36-spell-')
  const be = await okBackend(t)
  const p = await freePort()
  const sock = join(dir, 's.sock')
  const rel = relative(root, sock)
  // At start: the second bind would unlink the first one's file and leave it listening on nothing.
  // The config check compares unix paths resolved (src/config/spawns.ts addressKey), and the
  // gateway's bind refuses it too (EADDRINUSE) for a config that skipped the check.
  writeFileSync(file, yaml([`127.0.0.1:${p}`, `unix:${sock}`, `unix:${rel}`], be))
  // serveKilled throws, with the log lines, when serve exits before `serving`.
  const started = await serveKilled(t, file).then(() => 'served', (err: Error) => err.message)
  t.match(started, /\/listen\/2: address unix:[^ ]*s\.sock is already used by \/listen\/1/, 'serve does not start: a config error')
  t.notOk(existsSync(sock), 'no socket file left')
  // On reload: the kept socket stays, the reload is rejected.
  const p2 = await freePort()
  writeFileSync(file, yaml([`127.0.0.1:${p2}`, `unix:${sock}`], be))
  const { s } = await serveKilled(t, file)
  const ka = await keepAlive(t, { path: sock })
  t.equal(await ka.ask('/before'), 'ok /before')
  const { line } = await reload(s, file, [`127.0.0.1:${p2}`, `unix:${sock}`, `unix:${rel}`], be)
  t.match(line, { msg: 'reload rejected; the previous config keeps serving' })
  t.match(JSON.stringify(line), /already used by \/listen\/1/, 'by the config check')
  t.equal((await get('http://localhost/fresh', { socketPath: sock })).body.toString(), 'ok /fresh', 'the socket file still serves new connections')
  t.equal(await ka.ask('/after'), 'ok /after')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})
