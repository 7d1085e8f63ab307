/**
 * A stdio connection the proxy closes before the helper wrote its hello (libuv, out of
 * descriptors, accepts and closes whatever is pending: "A lost stdio connection" in
 * docs/design/spawn.md) must fail that one launch, not kill the helper with SIGPIPE — which took
 * every program in flight down with it (ERR_CGI_FORK_SERVER for all of them). A proxy out of
 * descriptors cannot be made on purpose, so a stand-in listener closes every connection the moment
 * it is accepted; each helper is driven through its protocol directly.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { tempDir } from './fixtures/manager.js'
import { waitFor } from '../helpers/leaks.js'
import { findForkServer, findPerl } from '../../src/spawn/fork-server.js'
import { FORK_SERVER_PL } from '../../src/spawn/fork-server-script.js'

const TOKEN = 'ab'.repeat(16)
const FRAMES = 2000

function frame (id: number): Buffer {
  const text = Buffer.from([String(id), TOKEN, '/', '', '', '', 'null', '1', '/bin/true', 'PATH=/bin'].join('\0'))
  const b = Buffer.alloc(4 + text.length)
  b.writeUInt32BE(text.length, 0)
  text.copy(b, 4)
  return b
}

const compiled = findForkServer()
const helpers = [
  ...(compiled?.kind === 'compiled' ? [{ name: 'compiled', argv: (_dir: string, sock: string) => [compiled.path, sock] }] : []),
  ...(findPerl() !== null
    ? [{
        name: 'perl',
        argv: (dir: string, sock: string) => {
          const script = join(dir, 'fork-server.pl')
          writeFileSync(script, FORK_SERVER_PL, { mode: 0o600 })
          return [findPerl() as string, script, sock, process.arch]
        },
      }]
    : []),
]

for (const h of helpers) {
  leakTest(t, `${h.name} helper: connections closed before the hello fail their launch (EPIPE), the helper lives on`, async (t, defer) => {
    const dir = tempDir(defer)
    const sockPath = join(dir, 'stdio.sock')
    const accepted = new Set<Socket>()
    const server = createServer({ pauseOnConnect: true }, (s) => { s.on('error', () => {}); s.destroy() })
    server.on('connection', (s) => { accepted.add(s); s.once('close', () => accepted.delete(s)) })
    server.listen({ path: sockPath, backlog: 4096 })
    await once(server, 'listening')
    defer(() => new Promise<void>((resolve) => server.close(() => resolve())))

    const [file, ...args] = h.argv(dir, sockPath)
    const helper = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: {}, cwd: '/', detached: true })
    const closed = once(helper, 'close')
    defer(async () => { helper.stdin.end(); if (helper.exitCode === null && helper.signalCode === null) await closed })
    helper.stdin.on('error', () => {})
    let out = ''
    let err = ''
    helper.stdout.setEncoding('latin1').on('data', (s: string) => { out += s })
    helper.stderr.setEncoding('utf8').on('data', (s: string) => { err += s })
    const answered = new Set<string>()
    const epipe = (): number => (out.match(/^E \d+ 32 connect$/gm) ?? []).length
    const count = (): number => {
      for (const m of out.matchAll(/^[SE] (\d+) /gm)) answered.add(m[1])
      return answered.size
    }

    for (let id = 1; id <= FRAMES; id += 100) {
      helper.stdin.write(Buffer.concat(Array.from({ length: 100 }, (_, k) => frame(id + k))))
      // Keep the helper busy with connections being closed under it, in steps.
      await waitFor(() => count() >= id - 1 || helper.exitCode !== null || helper.signalCode !== null, 20_000, 5)
      if (helper.exitCode !== null || helper.signalCode !== null) break
    }
    const done = await waitFor(() => count() === FRAMES || helper.exitCode !== null || helper.signalCode !== null, 30_000)
    t.ok(done, 'every frame answered, or the helper gone')
    t.same([helper.exitCode, helper.signalCode], [null, null], `the helper lives on (stderr: ${err.trim()})`)
    t.equal(count(), FRAMES, 'every launch got its S or E')
    // How many hellos meet an already closed connection is a race (none in some runs): the helper
    // living on and answering every frame is what must hold, whatever the count.
    t.comment(`closed connections made ${epipe()} of ${FRAMES} launches fail with EPIPE`)
  }, { timeoutMs: 10_000 })
}

/** Live (not zombie) processes whose command line contains `marker`. */
function withMarker (marker: string): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      if (!readFileSync(`/proc/${name}/cmdline`, 'latin1').includes(marker)) continue
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z') out.push(Number(name))
    } catch {}
  }
  return out
}

for (const h of helpers) {
  leakTest(t, `${h.name} helper: its replies cannot be written (the proxy is gone): it kills its programs and exits`, async (t, defer) => {
    const dir = tempDir(defer)
    const sockPath = join(dir, 'stdio.sock')
    const held = new Set<Socket>()
    const server = createServer((s) => { held.add(s); s.on('error', () => {}); s.resume() })
    server.listen({ path: sockPath })
    await once(server, 'listening')
    defer(() => new Promise<void>((resolve) => { for (const s of held) s.destroy(); server.close(() => resolve()) }))
    // A number, so that sleep takes it too (GNU sleep adds its arguments): sh and sleep both carry it.
    const marker = `0.${process.pid}${Date.now()}`
    defer(() => { for (const pid of withMarker(marker)) { try { process.kill(pid, 'SIGKILL') } catch {} } })

    const [file, ...args] = h.argv(dir, sockPath)
    const helper = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: {}, cwd: '/', detached: true })
    const closed = once(helper, 'exit')
    defer(async () => { helper.stdin.end(); if (helper.exitCode === null && helper.signalCode === null) await closed })
    helper.stdin.on('error', () => {})
    helper.stderr.resume()
    // The proxy's reading end is gone (it died): the helper's S for this program meets EPIPE.
    helper.stdout.destroy()
    const text = Buffer.from(['1', TOKEN, '/', '', '', '', 'null', '3', '/bin/sh', '-c', `sleep 300 ${marker}; : ${marker}`].join('\0'))
    const b = Buffer.alloc(4 + text.length)
    b.writeUInt32BE(text.length, 0)
    text.copy(b, 4)
    helper.stdin.write(b)
    const [code, signal] = await closed as [number | null, string | null]
    t.same([code, signal], [0, null], 'it exits on its own (not killed by SIGPIPE)')
    t.ok(await waitFor(() => withMarker(marker).length === 0, 5000), 'the program it had started is killed, and its child')
  }, { timeoutMs: 10_000 })
}
