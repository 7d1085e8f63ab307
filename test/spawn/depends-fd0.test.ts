/**
 * What `dependsOn` waits for when the dependency uses `handoff: fd0` (docs/guides/spawn.md,
 * "dependsOn"): only that its process was started and the socket proxycore bound for it accepts,
 * which the kernel does before the program calls accept(). So the dependant starts while the
 * dependency's program may still be booting (connections to it wait in the listen queue) or
 * already dead (connections are refused during its restart backoff), and a dependency that goes
 * down later does not stop the dependant. The dependency here holds off accept() until the test
 * writes `go`, or exits at once: no sleep.
 */
import t from 'tap'
import net from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { manager, nextEvent, nodeBackend, tempDir } from './fixtures/manager.js'
import { target } from './fixtures/http.js'
import { freePort } from '../helpers/ports.js'

const GATED_FD0 = `
import http from 'node:http'
import { existsSync } from 'node:fs'
const go = process.argv[2]
const server = http.createServer((req, res) => res.end('db ' + process.pid))
const poll = setInterval(() => { if (existsSync(go)) { clearInterval(poll); server.listen({ fd: 0 }) } }, 10)
`

/** Connect and send one request; resolves with the raw answer, or the socket error's code. */
function ask (address: string, onConnect: () => void = () => {}): Promise<string> {
  return new Promise((resolve) => {
    const { host, port } = target(address)
    const s = net.connect({ host, port: port ?? 0 })
    let out = ''
    s.on('connect', () => { s.write('GET / HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n'); onConnect() })
    s.on('data', (d: Buffer) => { out += d.toString() })
    s.on('end', () => resolve(out))
    s.on('error', (err: NodeJS.ErrnoException) => { s.destroy(); resolve(err.code ?? String(err)) })
  })
}

leakTest(t, 'fd0 dependency: the dependant starts before its program accepts; connections wait in the queue', async (t, defer) => {
  const dir = tempDir(defer)
  const script = join(dir, 'db.mjs')
  writeFileSync(script, GATED_FD0)
  const go = join(dir, 'go')
  const m = manager(defer)
  m.add('db', { binPath: [process.execPath, script, go], socketName: '127.0.0.1:0' })
  m.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['db'] })
  const webReady = nextEvent(m, 'ready', (e) => e.spawn === 'web')
  await m.start()
  await webReady
  const db = m.status().find((s) => s.name === 'db')
  t.equal(db?.state, 'running', 'db counts as running')
  const address = db?.processes[0].address ?? ''
  let connected!: () => void
  const connect = new Promise<void>((resolve) => { connected = resolve })
  const answer = ask(address, connected)
  // The kernel completes the connect although db's program has not called accept() yet.
  const first = await Promise.race([connect.then(() => 'connected'), answer])
  t.equal(first, 'connected', 'a connection to db is accepted by the kernel, not refused')
  writeFileSync(go, '')
  t.match(await answer, /^HTTP\/1\.1 200[\s\S]*db \d+$/, 'and answered once db\'s program accepts')
})

leakTest(t, 'fd0 dependency that dies at once: the dependant still starts, and meets refused connections', async (t, defer) => {
  const m = manager(defer)
  // db's port is refused once its program exited: not a kernel-picked one, which the next listen(0)
  // of any test alongside may take meanwhile (see helpers/ports.ts).
  m.add('db', { binPath: nodeBackend('exit1'), socketName: `127.0.0.1:${await freePort()}`, restart: { initialDelay: 60_000 } })
  m.add('web', { binPath: nodeBackend(), socketName: '127.0.0.1:0', dependsOn: ['db'] })
  const dbSpawned = nextEvent(m, 'spawn', (e) => e.spawn === 'db')
  const dbExit = nextEvent(m, 'exit', (e) => e.spawn === 'db')
  const webReady = nextEvent(m, 'ready', (e) => e.spawn === 'web')
  await m.start()
  const { address } = await dbSpawned
  await dbExit
  await webReady
  t.equal(m.status().find((s) => s.name === 'db')?.state, 'backoff', 'db is waiting out its restart delay')
  t.equal(m.status().find((s) => s.name === 'web')?.state, 'running', 'web runs (and is not stopped for db)')
  t.equal(await ask(address), 'ECONNREFUSED', 'what web meets at db\'s address meanwhile')
})
