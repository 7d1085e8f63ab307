import t from 'tap'
import net from 'node:net'
import { execFileSync, spawn } from 'node:child_process'
import { chmodSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { leakTest, type Defer } from './fixtures/guard.js'
import { bindListenSocket, probeConnect, removeStaleUnixSocket } from '../../src/spawn/listen-socket.js'
import { formatAddress } from '../../src/spawn/spec.js'
import { get } from './fixtures/http.js'
import { deadPort, freePort } from '../helpers/ports.js'

const backend = fileURLToPath(new URL('./fixtures/backend.mjs', import.meta.url))

async function serveOnFd0 (defer: Defer, addr: Parameters<typeof bindListenSocket>[0]): Promise<string> {
  const bound = await bindListenSocket(addr)
  const child = bound.handOff((fd) => spawn(process.execPath, [backend], { stdio: [fd, 'ignore', 'inherit'], env: {} }))
  const exited = new Promise((resolve) => child.once('exit', resolve))
  defer(async () => { child.kill('SIGKILL'); await exited })
  return formatAddress(bound.address)
}

leakTest(t, 'tcp: child accepts on fd 0; host keeps no copy', async (t, defer) => {
  const address = await serveOnFd0(defer, { kind: 'tcp', host: '127.0.0.1', port: 0 })
  t.match(address, /^127\.0\.0\.1:[1-9]\d*$/, 'ephemeral port resolved')
  const res = await get(address)
  t.equal(res.status, 200)
  t.not(res.body, String(process.pid), 'served by the child, not the host')
})

leakTest(t, 'unix: path exists under its final name after the host dropped its copy', async (t, defer) => {
  const dir = mkdtempSync(join(tmpdir(), 'pc-ls-'))
  defer(() => rmSync(dir, { recursive: true, force: true }))
  const path = join(dir, 'a.sock')
  // A stale leftover: the socket file of a process that died without unlinking it.
  execFileSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`])
  t.ok(lstatSync(path).isSocket(), 'a stale socket file is there')
  const address = await serveOnFd0(defer, { kind: 'unix', path })
  t.equal(address, `unix:${path}`)
  t.same(readdirSync(dir), ['a.sock'], 'no temporary name left behind')
  t.equal((await get(address)).status, 200)
  await t.rejects(removeStaleUnixSocket(path), { code: 'ERR_SPAWN_ADDRESS_IN_USE' }, 'a live socket is never unlinked')
  t.ok(existsSync(path))
})

leakTest(t, 'unix: owner and mode are set in a private root-only directory; a non-socket is never unlinked', async (t, defer) => {
  const dir = mkdtempSync(join(tmpdir(), 'pc-ls-'))
  defer(() => rmSync(dir, { recursive: true, force: true }))
  chmodSync(dir, 0o1777) // a directory anyone can write, like a shared run directory gone wrong
  const path = join(dir, 'b.sock')
  const bound = await bindListenSocket({ kind: 'unix', path })
  let seen: { path: string, mode: number, uid: number, entries: string[] } | null = null
  const child = bound.handOff((fd) => spawn(process.execPath, [backend], { stdio: [fd, 'ignore', 'inherit'], env: {} }), (tmp) => {
    const st = statSync(dirname(tmp))
    seen = { path: tmp, mode: st.mode & 0o7777, uid: st.uid, entries: readdirSync(dirname(tmp)) }
  })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  defer(async () => { child.kill('SIGKILL'); await exited })
  const s = seen as { path: string, mode: number, uid: number, entries: string[] } | null
  t.ok(s !== null && dirname(s.path) !== dir, 'the socket is owned and moded under a name of its own directory')
  t.equal(s?.mode, 0o700, 'that directory is 0700')
  t.equal(s?.uid, process.getuid?.(), 'and ours: nobody else can swap the socket for a symlink there')
  t.same(s?.entries, ['s'])
  t.same(readdirSync(dir), ['b.sock'], 'the private directory is gone after the hand-off')
  t.ok(lstatSync(path).isSocket())

  const file = join(dir, 'not-a-socket')
  writeFileSync(file, 'keep me')
  await t.rejects(bindListenSocket({ kind: 'unix', path: file }), { code: 'ERR_SPAWN_BIND' }, 'a regular file at socketName is refused')
  t.equal(readFileSync(file, 'utf8'), 'keep me', 'and left alone')
  t.same(readdirSync(dir).sort(), ['b.sock', 'not-a-socket'], 'no private directory left by the refusal')
})

leakTest(t, 'bind failures carry stable codes', async (t, defer) => {
  const holder = net.createServer()
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve))
  defer(() => new Promise<void>((resolve) => holder.close(() => resolve())))
  const port = (holder.address() as net.AddressInfo).port
  await t.rejects(bindListenSocket({ kind: 'tcp', host: '127.0.0.1', port }), { code: 'ERR_SPAWN_ADDRESS_IN_USE' })
  await t.rejects(bindListenSocket({ kind: 'unix', path: '/nonexistent-dir/x.sock' }), { code: 'ERR_SPAWN_BIND' })
  t.equal(await probeConnect({ kind: 'tcp', host: '127.0.0.1', port }, 1000), true)
})

leakTest(t, 'close without hand-off releases the port', async (t, defer) => {
  // Not port 0: a kernel-picked port, once closed, may go to any test's listen(0) before the rebind.
  const bound = await bindListenSocket({ kind: 'tcp', host: '127.0.0.1', port: await freePort() })
  bound.close()
  const again = await bindListenSocket(bound.address)
  t.same(again.address, bound.address, 'same port can be bound again at once')
  again.close()
})

leakTest(t, 'probeConnect: a connect made while the event loop stalled past the timeout counts as up', async (t, defer) => {
  const holder = net.createServer((s) => s.destroy())
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve))
  defer(() => new Promise<void>((resolve) => holder.close(() => resolve())))
  const port = (holder.address() as net.AddressInfo).port
  for (let i = 0; i < 3; i++) {
    const probe = probeConnect({ kind: 'tcp', host: '127.0.0.1', port }, 20)
    // The proxy's own loop is busy 10x the probe's timeout (a stall, not a wait): the backend
    // accepted meanwhile, and the timer must not be read before that connect is.
    const until = Date.now() + 200
    while (Date.now() < until) { /* busy */ }
    t.equal(await probe, true, `stall ${i + 1}: up`)
  }
  const closedPort = await deadPort()
  t.equal(await probeConnect({ kind: 'tcp', host: '127.0.0.1', port: closedPort }, 2000), false, 'a refused connect still fails at once')
})
