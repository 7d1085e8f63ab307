/**
 * The on-disk spool of a chunked request body (CGI family: the backend needs CONTENT_LENGTH) is
 * gone, fd and file, whichever way the exchange ends: success, the client going away in the middle
 * of its upload or after it while the script still runs, a backend that refuses or fails, 413 in
 * the middle of the spool, a client that stalls past timeouts.clientIdle, proxy.close() while a
 * body is being spooled. The spool directory (TMPDIR, private to this file) is listed as well as
 * /proc/self/fd. (A full spool filesystem is test/cgi-shared/spool-faults.test.ts.)
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { createServer } from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { createProxy, silentLogger } from '../../src/index.js'
import { SpawnManager } from '../../src/spawn/manager.js'
import type { RouteConfig } from '../../src/config/schema.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { closeServer, listen } from '../helpers/servers.js'
import { tempDir, writeScripts } from '../cgi/harness.js'
import { privateSpoolDir } from '../helpers/spool.js'
import { havePeer as haveFcgiPeer, PHP_CGI, startPhpCgi } from '../fastcgi/helpers/peers.js'

const { spoolFds, spoolFiles, spoolGone: privateSpoolGone } = privateSpoolDir(t, 'pc-spool-dir-')
const spoolGone = async (): Promise<boolean> => await privateSpoolGone(5000)

const CHUNK = 64 * 1024
const chunk = (i: number): Buffer => Buffer.alloc(CHUNK, 97 + (i % 26))

/** A chunked upload on a raw socket, under the test's control. */
class Upload {
  readonly socket: Socket
  raw = ''
  closed = false
  readonly ended: Promise<void>
  constructor (port: number, path: string) {
    this.socket = connect({ host: '127.0.0.1', port })
    this.socket.on('error', () => {})
    this.socket.on('data', (d: Buffer) => { this.raw += d.toString('latin1') })
    this.ended = new Promise((resolve) => this.socket.on('close', () => { this.closed = true; resolve() }))
    this.socket.write(`POST ${path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`)
  }

  /** Send chunks `from`..`to`-1 (each 64 KiB), each after the previous one was flushed; stops on an answer. */
  async send (from: number, to: number): Promise<void> {
    for (let i = from; i < to && !this.closed && this.raw === ''; i++) {
      const c = chunk(i)
      this.socket.write(`${c.length.toString(16)}\r\n`)
      this.socket.write(c)
      await new Promise<void>((resolve) => this.socket.write('\r\n', () => resolve()))
    }
  }

  end (): void { if (!this.closed) this.socket.write('0\r\n\r\n') }
  status (): number { return Number(/^HTTP\/1\.1 (\d{3})/.exec(this.raw)?.[1] ?? 0) }

  /** Wait (bounded) for a response head. */
  async answered (ms = 10_000): Promise<boolean> { return await waitFor(() => /\r\n\r\n/.test(this.raw) || this.closed, ms) }
}

const sha = (n: number): string => {
  const h = createHash('sha256')
  for (let i = 0; i < n; i++) h.update(chunk(i))
  return h.digest('hex')
}

/** createProxy + SpawnManager pipe spawn of `sh` scripts, like test/cgi/harness.ts cgiProxy, with the proxy in hand. */
async function shProxy (t: Test, dir: string, route: Partial<RouteConfig> = {}, extra: RouteConfig[] = []) {
  const manager = new SpawnManager()
  t.teardown(() => manager.close())
  manager.add('sh', { socketType: 'pipe', copyEnvironment: ['PATH'], stopTimeout: 500 })
  await manager.start()
  const proxy = await createProxy({ logger: silentLogger, processStarters: { sh: manager.pipeStarter('sh') }, routes: [...extra, { protocol: 'cgi', spawn: 'sh', docroot: dir, match: { prefix: '/' }, ...route } as RouteConfig] })
  const server = createServer(proxy.handler)
  const port = await listen(server)
  let closed = false
  t.teardown(async () => { await closeServer(server); if (!closed) await proxy.close(1000) })
  return { proxy, port, close: async () => { closed = true; await proxy.close(1000) } }
}

/**
 * One test's setup: leak guard, a docroot of the scripts below and a directory for their marks,
 * and the proxy (`extra` routes may use both directories).
 */
async function rig (t: Test, route: Partial<RouteConfig> = {}, extra: (dir: string, marks: string) => RouteConfig[] = () => []) {
  guardLeaks(t)
  const dir = tempDir(t)
  const marks = tempDir(t, 'pc-marks-')
  scripts(dir, marks)
  return { dir, marks, p: await shProxy(t, dir, route, extra(dir, marks)) }
}

function scripts (dir: string, marks: string): void {
  writeScripts(dir, {
    'sha.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nsha256sum | cut -d' ' -f1\n",
    // Started (marker written), then never reads its stdin and never answers until killed.
    'hang.sh': `#!/bin/sh\necho $$ > '${join(marks, 'hang')}'\nexec sleep 60\n`,
    'fail.sh': '#!/bin/sh\nexit 3\n',
    // Answers at once without reading its stdin, then lingers a little (the pump is still blocked).
    'early.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nearly'\nexec sleep 1\n",
    // Reads all of its body, then hands the request to another script (RFC 3875 local redirect).
    'redirect.sh': "#!/bin/sh\ncat > /dev/null\nprintf 'Location: /sha.sh\\r\\n\\r\\n'\n",
  })
}

t.test('success: the spooled body arrives whole, then its fd is closed', async (t) => {
  const { p } = await rig(t)
  const u = new Upload(p.port, '/sha.sh')
  await u.send(0, 16)
  u.end()
  await u.ended
  t.equal(u.status(), 200)
  t.match(u.raw, sha(16))
  t.ok(await spoolGone(), 'no spool fd or file', { fds: spoolFds(), files: spoolFiles() })
})

t.test('client aborts in the middle of the upload', async (t) => {
  const { marks, p } = await rig(t)
  const u = new Upload(p.port, '/hang.sh')
  await u.send(0, 8)
  t.ok(await waitFor(() => spoolFds().length === 1, 5000), 'the body is being spooled to a file')
  t.ok(await waitFor(() => spoolFiles().length === 0, 5000), 'the file is unlinked while its fd is open')
  u.socket.destroy()
  t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
  t.notOk(existsSync(join(marks, 'hang')), 'the script never started')
})

t.test('client aborts after the spool, while the script runs', async (t) => {
  const { marks, p } = await rig(t)
  const u = new Upload(p.port, '/hang.sh')
  await u.send(0, 16)
  u.end()
  t.ok(await waitFor(() => existsSync(join(marks, 'hang')), 10_000), 'the script started (the body was spooled)')
  t.equal(spoolFds().length, 1, 'the spool is still being fed to the script (it reads nothing)')
  u.socket.destroy()
  t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
})

t.test('the backend fails or cannot be reached after the spool', async (t) => {
  const { p } = await rig(t, {}, (dir, marks) => [{ protocol: 'fastcgi', backends: [`unix:${join(marks, 'nobody.sock')}`], docroot: dir, match: { prefix: '/refused/' }, stripPrefix: true, retries: 0 }])
  const a = new Upload(p.port, '/fail.sh')
  await a.send(0, 16)
  a.end()
  t.ok(await a.answered(), 'answered')
  t.equal(a.status(), 502, 'a script that exits without a head is a bad gateway', { raw: a.raw.slice(0, 300) })
  t.ok(await spoolGone(), 'no spool fd after the failed script', { fds: spoolFds() })
  const b = new Upload(p.port, '/refused/sha.sh')
  await b.send(0, 16)
  b.end()
  t.ok(await b.answered(), 'answered')
  t.ok(b.status() >= 500 && b.status() < 600, 'a refused connection is a 5xx', { raw: b.raw.slice(0, 300) })
  t.ok(await spoolGone(), 'no spool fd after the refused connection', { fds: spoolFds() })
  a.socket.destroy(); b.socket.destroy()
})

t.test('413 in the middle of the spool', async (t) => {
  const { p } = await rig(t, { maxBodySize: 5 * CHUNK + 1 })
  const u = new Upload(p.port, '/sha.sh')
  await u.send(0, 16)
  t.ok(await u.answered(), 'answered')
  t.equal(u.status(), 413)
  t.match(u.raw, /ERR_BODY_TOO_LARGE/)
  t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
  u.socket.destroy()
})

t.test('the client stalls in the middle of its upload: 408 after clientIdle, spool gone', async (t) => {
  const { p } = await rig(t, { timeouts: { clientIdle: 500 } })
  const u = new Upload(p.port, '/sha.sh')
  await u.send(0, 4)
  t.ok(await waitFor(() => spoolFds().length === 1, 5000), 'spooling to a file')
  t.ok(await u.answered(15_000), 'answered within 30x clientIdle')
  t.equal(u.status(), 408)
  t.match(u.raw, /ERR_REQUEST_TIMEOUT/)
  t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
  u.socket.destroy()
})

t.test('proxy.close() while a body is being spooled', async (t) => {
  const { p } = await rig(t)
  const u = new Upload(p.port, '/sha.sh')
  await u.send(0, 4)
  t.ok(await waitFor(() => spoolFds().length === 1, 5000), 'spooling to a file')
  const closing = p.close()
  t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
  await closing
  u.socket.destroy()
})

t.test('the script answers without reading its body: the spool fd goes with the exchange', async (t) => {
  const { p } = await rig(t)
  const u = new Upload(p.port, '/early.sh')
  await u.send(0, 16)
  u.end()
  await u.ended
  t.equal(u.status(), 200)
  t.match(u.raw, /early/)
  t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
})

t.test('a local redirect after the body was read: the spool fd is closed', async (t) => {
  const { p } = await rig(t, { localRedirects: true })
  const u = new Upload(p.port, '/redirect.sh')
  await u.send(0, 16)
  u.end()
  await u.ended
  t.equal(u.status(), 200, 'the redirect target answered', { raw: u.raw.slice(0, 300) })
  t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
})

t.test('FastCGI: a refused first backend, retried on php-cgi, gets the whole spooled body', async (t) => {
  if (!haveFcgiPeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-fcgi-spool-')
  writeScripts(dir, { 'sha.php': "<?php\n$in = file_get_contents('php://input');\nheader('Content-Type: text/plain');\necho strlen($in), ' ', hash('sha256', $in);\n" }, 0o644)
  const peer = await startPhpCgi(t, dir, 1)
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'fastcgi', backends: [`unix:${join(dir, 'nobody.sock')}`, `unix:${peer.socketPath}`], balance: 'round-robin', retries: 1, docroot: dir }] })
  const server = createServer(proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  for (let i = 0; i < 2; i++) {
    const u = new Upload(port, '/sha.php')
    await u.send(0, 16)
    u.end()
    await u.ended
    t.equal(u.status(), 200, `request ${i}`, { raw: u.raw.slice(0, 300) })
    t.match(u.raw, `${16 * CHUNK} ${sha(16)}`, 'the whole body, in order')
    t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
  }
})

t.test('bad chunk framing in the middle of the spool: 400, spool gone', async (t) => {
  const { marks, p } = await rig(t)
  const u = new Upload(p.port, '/hang.sh')
  await u.send(0, 4)
  t.ok(await waitFor(() => spoolFds().length === 1, 5000), 'spooling to a file')
  u.socket.write('zz\r\nnot a chunk\r\n')
  t.ok(await waitFor(() => u.closed, 10_000), 'the connection is closed')
  t.match(u.raw, /^HTTP\/1\.1 400 /, 'a 400', { raw: u.raw.slice(0, 200) })
  t.ok(await spoolGone(), 'the spool fd is closed', { fds: spoolFds() })
  t.notOk(existsSync(join(marks, 'hang')), 'the script never started')
})
