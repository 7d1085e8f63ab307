/**
 * `listen` changes on reload (SIGHUP), as nginx applies them, on the real CLI: new addresses are
 * bound before the swap (a bind failure rejects the whole reload and closes what it had bound),
 * removed ones stop accepting and drain what they serve, unchanged ones keep their sockets; no fd
 * or listener leaks over reloads.
 */
import t from 'tap'
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { get } from '../helpers/servers.js'
import { appDir, serveKilled, sighupReload, type Served } from './run.js'

interface Teardown { teardown (fn: () => void | Promise<void>): void }

/**
 * A backend in this process: `/slow` waits until release() is called; an Upgrade is accepted (101)
 * and echoes what it gets; anything else answers at once.
 */
async function backend (t: Teardown): Promise<{ port: number, release: () => void, held: () => number }> {
  const waiting: ServerResponse[] = []
  const srv = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/slow') { waiting.push(res); return }
    res.end(`ok ${req.url ?? ''}`)
  })
  const tunnels = new Set<Duplex>()
  srv.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
    tunnels.add(socket)
    socket.once('close', () => tunnels.delete(socket))
    socket.on('error', () => {})
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n')
    socket.pipe(socket)
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { for (const x of tunnels) x.destroy(); srv.closeAllConnections(); srv.close(() => resolve()) }))
  return {
    port: (srv.address() as AddressInfo).port,
    release: () => { for (const r of waiting.splice(0)) r.end('slow done') },
    held: () => waiting.length,
  }
}

const yaml = (listen: string[], port: number, drain = '60s'): string => `listen: ${JSON.stringify(listen)}
drainTimeout: ${drain}
routes:
  - { name: r, protocol: http, backends: ['127.0.0.1:${port}'] }
`

/** Write the file, SIGHUP, and wait for its outcome: the log line that ended the reload. */
const reload = (s: Served, file: string, listen: string[], port: number, drain?: string): Promise<{ at: number, line: Record<string, unknown> }> => sighupReload(s, file, yaml(listen, port, drain))

/** The error a fresh TCP connection to `port` gets (ECONNREFUSED), or 'connected'. */
function tryConnect (port: number): Promise<string> {
  return new Promise((resolve) => {
    const c = connect(port, '127.0.0.1')
    c.once('connect', () => { c.destroy(); resolve('connected') })
    c.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
  })
}

const body = async (url: string, socketPath?: string): Promise<string> => {
  const r = await get(url, socketPath !== undefined ? { socketPath } : {})
  return `${r.status} ${r.body.toString()}`
}

/** Local TCP ports in LISTEN state (/proc/net/tcp, state 0A) among `ports`. */
function listeningOn (ports: number[]): number[] {
  const found = new Set<number>()
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = ''
    try { text = readFileSync(f, 'utf8') } catch { continue }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols.length < 4 || cols[3] !== '0A') continue
      const port = parseInt(cols[1].split(':')[1], 16)
      if (ports.includes(port)) found.add(port)
    }
  }
  return [...found].sort((a, b) => a - b)
}

const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length

t.test('a port added on reload answers beside the old one, which keeps its socket', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file } = appDir(t, '', 'pc-listen-reload-')
  const b = await backend(t)
  const [p1, p2] = [await freePort(), await freePort()]
  writeFileSync(file, yaml([`127.0.0.1:${p1}`], b.port))
  const { s } = await serveKilled(t, file)
  // Requests to the unchanged address all through the reload: no gap.
  let hammering = true
  const results: string[] = []
  const hammer = (async () => {
    for (let i = 0; i < 10_000 && hammering; i++) results.push(await body(`http://127.0.0.1:${p1}/h`).catch((err: Error) => err.message))
  })()
  const { at, line } = await reload(s, file, [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`], b.port)
  hammering = false
  await hammer
  t.equal(line.msg, 'reloaded')
  t.ok(results.length > 0 && results.every((r) => r === '200 ok /h'), `every request during the reload served (${results.length})`)
  t.equal(await body(`http://127.0.0.1:${p1}/a`), '200 ok /a', 'the old port answers')
  t.equal(await body(`http://127.0.0.1:${p2}/b`), '200 ok /b', 'the new port answers')
  const listening = s.logs().slice(at).filter((l) => l.msg === 'listening').map((l) => l.address)
  t.same(listening, [`http://127.0.0.1:${p2}`], 'a `listening` line for the new address only')
  t.notOk(s.logs().some((l) => String(l.msg).includes('restart proxycore to move listeners')), 'no restart warning')
  t.same(line.addresses, [`http://127.0.0.1:${p1}`, `http://127.0.0.1:${p2}`], '`reloaded` names the listening addresses')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('a port removed on reload refuses new connections; a request in flight on it finishes', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file } = appDir(t, '', 'pc-listen-reload-')
  const b = await backend(t)
  const [p1, p2] = [await freePort(), await freePort()]
  writeFileSync(file, yaml([`127.0.0.1:${p1}`, `127.0.0.1:${p2}`], b.port))
  const { s } = await serveKilled(t, file)
  const inflight = body(`http://127.0.0.1:${p2}/slow`)
  t.ok(await waitFor(() => b.held() === 1, 30_000), 'the slow request reached the backend')
  const { at, line } = await reload(s, file, [`127.0.0.1:${p1}`], b.port)
  t.equal(line.msg, 'reloaded')
  t.equal(await tryConnect(p2), 'ECONNREFUSED', 'the removed port refuses new connections')
  t.equal(await body(`http://127.0.0.1:${p1}/a`), '200 ok /a', 'the kept port answers')
  t.notOk(s.logs().slice(at).some((l) => l.msg === 'stopped listening'), 'the removed listener waits for its request')
  b.release()
  t.equal(await inflight, '200 slow done', 'the request in flight on the removed port finished')
  const stopped = await s.waitLog('stopped listening', at)
  t.equal(stopped.address, `http://127.0.0.1:${p2}`)
  t.same(listeningOn([p1, p2]), [p1], 'only the kept port listens')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

/** A raw connection to `port` and what it has received so far. */
async function raw (t: Teardown, port: number): Promise<{ c: Socket, got: () => string, closed: () => boolean }> {
  const c = connect(port, '127.0.0.1')
  let got = ''
  let closed = false
  c.setEncoding('utf8')
  c.on('data', (d: string) => { got += d })
  c.on('error', () => {})
  c.once('close', () => { closed = true })
  t.teardown(() => { c.destroy() })
  await new Promise<void>((resolve, reject) => { c.once('connect', resolve); c.once('error', reject) })
  return { c, got: () => got, closed: () => closed }
}

t.test('a removed port closes its idle keep-alive connection and cuts a WebSocket tunnel after drainTimeout', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file } = appDir(t, '', 'pc-listen-reload-')
  const b = await backend(t)
  const [p1, p2] = [await freePort(), await freePort()]
  writeFileSync(file, yaml([`127.0.0.1:${p1}`, `127.0.0.1:${p2}`], b.port, '10s'))
  const { s } = await serveKilled(t, file)
  const keep = await raw(t, p2)
  keep.c.write('GET /k HTTP/1.1\r\nHost: x\r\n\r\n')
  t.ok(await waitFor(() => keep.got().endsWith('ok /k'), 30_000), 'a keep-alive request answered')
  t.notMatch(keep.got(), /connection: close/i, 'the connection is kept alive')
  const ws = await raw(t, p2)
  ws.c.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  t.ok(await waitFor(() => ws.got().includes('\r\n\r\n'), 30_000), 'the tunnel is up')
  t.match(ws.got(), /^HTTP\/1\.1 101/)
  const { at, line } = await reload(s, file, [`127.0.0.1:${p1}`], b.port)
  t.equal(line.msg, 'reloaded')
  t.ok(await waitFor(() => keep.closed(), 30_000), 'the idle keep-alive connection is closed')
  const before = ws.got().length
  ws.c.write('ping')
  t.ok(await waitFor(() => ws.got().slice(before) === 'ping' || ws.closed(), 30_000))
  t.equal(ws.got().slice(before), 'ping', 'the tunnel still carries data after the swap')
  t.ok(await waitFor(() => ws.closed(), 30_000), 'the tunnel is cut once the drain times out')
  t.match(await s.waitLog('stopped listening', at), { address: `http://127.0.0.1:${p2}`, cut: true })
  t.equal(await body(`http://127.0.0.1:${p1}/a`), '200 ok /a')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('a port swapped for another: the new one answers, the old one refuses', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file } = appDir(t, '', 'pc-listen-reload-')
  const b = await backend(t)
  const [p1, p2] = [await freePort(), await freePort()]
  writeFileSync(file, yaml([`127.0.0.1:${p1}`], b.port))
  const { s } = await serveKilled(t, file)
  const { at, line } = await reload(s, file, [`127.0.0.1:${p2}`], b.port)
  t.equal(line.msg, 'reloaded')
  t.equal(await body(`http://127.0.0.1:${p2}/b`), '200 ok /b', 'the new port answers')
  t.equal(await tryConnect(p1), 'ECONNREFUSED', 'the old port refuses')
  t.equal((await s.waitLog('stopped listening', at)).address, `http://127.0.0.1:${p1}`)
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('a taken port rejects the reload and closes what it had bound; the next valid SIGHUP applies', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file } = appDir(t, '', 'pc-listen-reload-')
  const b = await backend(t)
  const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()]
  const squatter = createNetServer((c) => c.destroy())
  await new Promise<void>((resolve) => squatter.listen(p3, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => squatter.close(() => resolve())))
  writeFileSync(file, yaml([`127.0.0.1:${p1}`], b.port))
  const { s } = await serveKilled(t, file)
  // p2 binds first, then p3 fails: the whole reload is rejected and p2 closed again.
  const { at, line } = await reload(s, file, [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`, `127.0.0.1:${p3}`], b.port)
  t.match(line, { msg: 'reload rejected; the previous config keeps serving', code: 'EADDRINUSE', address: `127.0.0.1:${p3}` })
  t.match(String(line.reason), /address already in use/)
  t.notOk(s.logs().slice(at).some((l) => l.msg === 'reloaded' || l.msg === 'listening'), 'nothing swapped, nothing announced')
  t.equal(await tryConnect(p2), 'ECONNREFUSED', 'what the rejected reload had bound is closed')
  t.same(listeningOn([p1, p2]), [p1])
  t.equal(await body(`http://127.0.0.1:${p1}/a`), '200 ok /a', 'the old port still serves')
  const again = await reload(s, file, [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`], b.port)
  t.equal(again.line.msg, 'reloaded', 'the next valid SIGHUP applies')
  t.equal(await body(`http://127.0.0.1:${p2}/b`), '200 ok /b', 'the new port answers')
  t.equal(await body(`http://127.0.0.1:${p1}/a`), '200 ok /a')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('a unix socket added and removed on reload; one in a missing directory rejects the reload', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { dir, file } = appDir(t, '', 'pc-listen-reload-')
  const b = await backend(t)
  const p1 = await freePort()
  const sock = join(dir, 'http.sock')
  writeFileSync(file, yaml([`127.0.0.1:${p1}`], b.port))
  const { s } = await serveKilled(t, file)
  const bad = await reload(s, file, [`127.0.0.1:${p1}`, `unix:${join(dir, 'missing', 'http.sock')}`], b.port)
  t.match(bad.line, { msg: 'reload rejected; the previous config keeps serving', address: `unix:${join(dir, 'missing', 'http.sock')}` })
  t.ok(typeof bad.line.code === 'string' && /^E[A-Z]+$/.test(bad.line.code), `a stable code (${String(bad.line.code)})`)
  const added = await reload(s, file, [`127.0.0.1:${p1}`, `unix:${sock}`], b.port)
  t.equal(added.line.msg, 'reloaded')
  t.ok(s.logs().slice(added.at).some((l) => l.msg === 'listening' && l.address === `unix:${sock}`), '`listening` for the socket')
  t.equal(await body('http://localhost/u', sock), '200 ok /u', 'served over the unix socket')
  const removed = await reload(s, file, [`127.0.0.1:${p1}`], b.port)
  t.equal(removed.line.msg, 'reloaded')
  await s.waitLog('stopped listening', removed.at)
  t.notOk(existsSync(sock), 'the socket file is removed')
  t.equal(await body(`http://127.0.0.1:${p1}/a`), '200 ok /a')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('no fd or listener leaks over 10 reloads that add and remove a port', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { file } = appDir(t, '', 'pc-listen-reload-')
  const b = await backend(t)
  const [p1, p2] = [await freePort(), await freePort()]
  writeFileSync(file, yaml([`127.0.0.1:${p1}`], b.port))
  const { s } = await serveKilled(t, file)
  const pid = s.child.pid as number
  // A first round trip of reloads opens whatever is opened once (the config's files, say).
  await reload(s, file, [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`], b.port)
  t.equal(await body(`http://127.0.0.1:${p2}/x`), '200 ok /x')
  t.equal(await body(`http://127.0.0.1:${p1}/x`), '200 ok /x')
  let last = await reload(s, file, [`127.0.0.1:${p1}`], b.port)
  await s.waitLog('stopped listening', last.at)
  const base = fdCount(pid)
  for (let i = 0; i < 10; i++) {
    const two = i % 2 === 0
    last = await reload(s, file, two ? [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`] : [`127.0.0.1:${p1}`], b.port)
    t.equal(last.line.msg, 'reloaded', `reload ${i + 1}`)
    t.equal(await body(`http://127.0.0.1:${two ? p2 : p1}/x`), '200 ok /x')
    if (!two) await s.waitLog('stopped listening', last.at)
  }
  t.same(listeningOn([p1, p2]), [p1], 'one listener left')
  t.ok(await waitFor(() => fdCount(pid) <= base, 30_000), `fds back to ${base} (now ${fdCount(pid)})`)
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})
