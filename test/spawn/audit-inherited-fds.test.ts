/**
 * Audit H8: descriptors the host itself inherited without close-on-exec (a listening socket and a
 * log file its own parent handed it: an init script's, a supervisor's, a shell's `exec 7>log`)
 * must not reach a backend. Node opens its own descriptors close-on-exec, but spawn() passes on
 * every descriptor that lacks the flag, so before the fix the host's listening socket and log
 * file were open in every socket spawn's program and in every directly started CGI program
 * (user-switched ones included: another tenant's code could accept the host's connections or
 * write its log). The fork server closes them itself (native/fork-server.c); these are the
 * starts that do not go through it.
 *
 * The host here is a stand-in process (the TypeScript loader tap runs us with, so that it loads
 * src/), started with the two descriptors as its fds 60 and 61, as its parent would hand them.
 * Needs root to create a user: skipped with the reason locally, a failure under CI=true.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, chownSync, closeSync, mkdirSync, openSync, readlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { leakTest } from './fixtures/guard.js'
import { tempDir, userSafeBackend } from './fixtures/manager.js'
import { waitFor } from '../helpers/leaks.js'
import { withTestUsers } from '../helpers/users.js'

const U = { name: 'pcaufda', id: 2179 }
const manager = pathToFileURL(new URL('../../src/spawn/manager.ts', import.meta.url).pathname).href
const loader = process.execArgv.filter((a) => a.startsWith('--import=') && a.includes('typescript'))
/**
 * Where the host gets them. Node itself sets close-on-exec on the low descriptors it finds open at
 * its start (3 to about 19, tried on 20, 22 and 24), not on higher ones: a shell's `exec 7>log`
 * is covered, fd 60 is not.
 */
const HIGH = 60

/**
 * The stand-in host: a user-switched socket spawn, one that does not switch user, and a direct
 * CGI start of `cgi` (user-switched); prints, as one JSON line, what its own fds HIGH and HIGH+1 are and
 * what every descriptor of each backend is (readlink of /proc/<pid>/fd/*), then waits for stdin
 * to close.
 */
const HOST = (o: { backend: string, user: string, cgi: string, sock: string }): string => `
import { readdirSync, readlinkSync } from 'node:fs'
import { SpawnManager } from ${JSON.stringify(manager)}
const fds = (pid) => readdirSync('/proc/' + pid + '/fd').map((f) => { try { return f + ' ' + readlinkSync('/proc/' + pid + '/fd/' + f) } catch { return f } })
const m = new SpawnManager({})
const bin = [process.execPath, ${JSON.stringify(o.backend)}]
m.add('user', { binPath: bin, user: ${JSON.stringify(o.user)}, group: ${JSON.stringify(o.user)}, socketName: '127.0.0.1:0' })
m.add('self', { binPath: bin, socketName: ${JSON.stringify(o.sock)}, handoff: 'systemd' })
m.add('cgi', { socketType: 'pipe', user: ${JSON.stringify(o.user)}, group: ${JSON.stringify(o.user)}, launcher: 'direct' })
await m.start()
for (const n of ['user', 'self']) await m.source(n).ensure(AbortSignal.timeout(20000))
const out = { host: [readlinkSync('/proc/self/fd/' + ${HIGH}), readlinkSync('/proc/self/fd/' + (${HIGH} + 1))] }
for (const s of m.status()) for (const p of s.processes) out[s.name] = fds(p.pid)
const c = m.pipeStarter('cgi').launch({ argv: [${JSON.stringify(o.cgi)}], env: {}, cwd: '/', stdin: 'null' })
let cgi = ''
c.stdout.on('data', (d) => { cgi += d })
c.stderr.on('data', (d) => { cgi += d })
await new Promise((resolve) => c.once('exit', resolve))
await new Promise((resolve) => c.stdout.readableEnded ? resolve() : c.stdout.once('end', resolve))
out.cgi = cgi.trim().split('\\n')
process.stdout.write(JSON.stringify(out) + '\\n')
process.stdin.resume()
process.stdin.once('end', async () => { await m.close(); process.exit(0) })
`

if (withTestUsers(t, 'inherited fd audit', [U])) {
  leakTest(t, 'a listening socket and a log file the host inherited reach no backend', async (tt, defer) => {
    const { script: backend } = userSafeBackend(defer)
    const dir = tempDir(defer, 'pc-audit-fds-')
    chmodSync(dir, 0o755)
    const www = join(dir, 'www')
    mkdirSync(www)
    chownSync(www, U.id, U.id)
    chmodSync(www, 0o755)
    const cgi = join(www, 'fds.sh')
    // Each of its descriptors but the one ls opens for the listing: "<fd> <target>".
    writeFileSync(cgi, '#!/bin/sh\nfor f in /proc/$$/fd/*; do echo "${f##*/} $(readlink "$f")"; done\n')
    chownSync(cgi, U.id, U.id)
    chmodSync(cgi, 0o755)

    const server = createServer()
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    defer(() => new Promise((resolve) => server.close(resolve)))
    const logPath = join(dir, 'host.log')
    const log = openSync(logPath, 'a')
    defer(() => closeSync(log))
    const listenFd = (server as unknown as { _handle: { fd: number } })._handle.fd

    const env = { ...process.env }
    delete env.NODE_OPTIONS
    const host: ChildProcess = spawn(process.execPath, [...loader, '--input-type=module', '-e', HOST({ backend, user: U.name, cgi, sock: join(dir, 'self.sock') })], {
      env, stdio: [...Array.from({ length: HIGH }, (_, i) => i < 3 ? 'pipe' as const : 'ignore' as const), listenFd, log],
    })
    defer(async () => {
      if (host.exitCode === null && host.signalCode === null) {
        const gone = once(host, 'close')
        host.stdin?.end()
        await gone
      }
    })
    let out = ''
    let err = ''
    host.stdout?.on('data', (c: Buffer) => { out += c.toString() })
    host.stderr?.on('data', (c: Buffer) => { err += c.toString() })
    tt.ok(await waitFor(() => out.includes('\n') || host.exitCode !== null, 60_000), 'the host reported')
    const report = JSON.parse(out.trim().split('\n')[0] ?? '{}') as Record<string, string[]>
    tt.ok(report.host !== undefined, `report parsed (stderr: ${err})`)
    const [sock, file] = report.host ?? []
    tt.equal(sock, readlinkSync(`/proc/self/fd/${listenFd}`), `the host has the listening socket as fd ${HIGH}`)
    tt.equal(file, logPath, `and the log file as fd ${HIGH + 1}`)
    for (const name of ['user', 'self', 'cgi']) {
      const fds = report[name] ?? []
      tt.ok(fds.length >= 3, `${name}: descriptors listed (${fds.join(', ')})`)
      tt.same(fds.filter((l) => l.endsWith(` ${sock}`) || l.endsWith(` ${file}`)), [], `${name}: neither the host's listening socket nor its log file`)
    }
  }, { timeoutMs: 30_000 })
}
