/**
 * X-Sendfile audit (2026-12, second pass): what an operator or a client meets with a backend that
 * names a file.
 *
 * - A backend that sends its X-Sendfile head and then neither ends nor sends anything (a script
 *   still working, or hung, after its header): `timeouts.idle` ("longest pause of the backend
 *   inside a response body") did not run during the backend's part of an X-Sendfile exchange, so
 *   the exchange, its route slot and the client's keep-alive connection were held for as long as
 *   the backend lived: the client had the whole file (Content-Length) but its next request on the
 *   connection got no answer. Real shell CGI scripts.
 * - A proxy that does not run as root (a developer, a container user) and a file it may not read:
 *   open(2) fails with EACCES, which became 500 ERR_INTERNAL ("report a bug") instead of the
 *   refusal the backend's request is: 502 ERR_SENDFILE_FORBIDDEN naming the file. Run in a child
 *   node process under a test user's uid (the built dist).
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { chmodSync, chownSync, mkdirSync, realpathSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { counters } from '../helpers/counters.js'
import { tempDir, writeScripts } from '../cgi/harness.js'
import { proxyServer } from '../helpers/servers.js'
import { SpawnManager } from '../../src/spawn/manager.js'
import { withTestUsers } from '../helpers/users.js'
import { ensureBuilt } from '../cli/run.js'

guardLeaks(t, { timeoutMs: 15_000 })

const REPO = fileURLToPath(new URL('../../', import.meta.url))

const SCRIPTS = {
  // Names the file, then keeps its stdout open (a script still busy after its header, or hung).
  'hold.sh': '#!/bin/sh\nprintf "Content-Type: application/octet-stream\\nX-Sendfile: %s\\n\\n" "$HTTP_X_FILE"\nexec sleep 60\n',
  'small.sh': '#!/bin/sh\nprintf "Content-Type: text/plain\\nContent-Length: 6\\n\\nSECOND"\n',
}

/**
 * On ONE keep-alive connection: GET hold.sh for `file`, then, once its whole body (Content-Length)
 * arrived, GET small.sh. Resolves with what arrived when the second response is complete, the
 * connection closed, or `ms` passed.
 */
function twoOnOneConnection (port: number, file: string, ms: number): Promise<{ raw: string, firstBody: boolean, second: boolean, close: () => void }> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port })
    let raw = ''
    let asked = false
    let firstBody = false
    let settled = false
    const done = (second: boolean): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      // Left open for the caller (the exchange's state is checked while the client is still there).
      resolve({ raw, firstBody, second, close: () => s.destroy() })
    }
    const timer = setTimeout(() => done(false), ms)
    s.on('error', () => {})
    s.on('close', () => done(false))
    s.on('data', (d: Buffer) => {
      raw += d.toString('latin1')
      const i = raw.indexOf('\r\n\r\n')
      if (!asked && i >= 0) {
        const cl = Number(/\r\ncontent-length: (\d+)/i.exec(raw.slice(0, i))?.[1] ?? NaN)
        if (raw.length - (i + 4) >= cl) {
          asked = true
          firstBody = true
          s.write('GET /small.sh HTTP/1.1\r\nHost: a\r\n\r\n')
        }
      }
      if (asked && /\r\n\r\nSECOND$/.test(raw)) done(true)
    })
    s.write(`GET /hold.sh HTTP/1.1\r\nHost: a\r\nX-File: ${file}\r\n\r\n`)
  })
}

t.test('a backend that holds its output open after an X-Sendfile head holds neither the response nor the connection', async (t: Test) => {
  const base = realpathSync(tempDir(t, 'pc-audit-sendfile-'))
  const files = join(base, 'files')
  const www = join(base, 'www')
  mkdirSync(files)
  writeScripts(www, SCRIPTS)
  writeFileSync(join(files, 'f.txt'), 'THE-FILE')
  const manager = new SpawnManager()
  t.teardown(() => manager.close())
  manager.add('sh', { socketType: 'pipe', copyEnvironment: ['PATH'], stopTimeout: 500 })
  await manager.start()
  const { proxy, port } = await proxyServer(t, {
    routes: [{ protocol: 'cgi', spawn: 'sh', docroot: www, match: { prefix: '/' }, xSendfile: { allow: [files] }, timeouts: { idle: '1s' } }],
    processStarters: { sh: manager.pipeStarter('sh') },
  })
  const r = await twoOnOneConnection(port, join(files, 'f.txt'), 15_000)
  t.teardown(r.close)
  t.ok(r.firstBody, 'the whole file arrived', { raw: r.raw.slice(0, 300) })
  t.match(r.raw, /^HTTP\/1\.1 200 [^]*\r\n\r\nTHE-FILE/)
  t.ok(r.second, 'the next request on the connection is answered (15 s: 15x timeouts.idle), while the script still runs', { raw: r.raw.slice(0, 600) })
  t.ok(await waitFor(() => counters(proxy).inflight === 0, 5000), 'the exchange ended, the client still connected')
  r.close()
})

t.test('a file the proxy itself may not open (not root, EACCES) is a 502 ERR_SENDFILE_FORBIDDEN, not an internal error', async (t: Test) => {
  // Ids no other test file uses (2181/2182 are test/static/static-precompressed-link's).
  const U = { name: 'pcauditsf', id: 2191 }
  const O = { name: 'pcauditsfo', id: 2192 }
  if (!withTestUsers(t, 'a proxy that is not root', [U, O])) return
  await ensureBuilt()
  const base = realpathSync(tempDir(t, 'pc-audit-sendfile-'))
  chmodSync(base, 0o755)
  const files = join(base, 'files')
  const closed = join(files, 'closed')
  mkdirSync(files)
  mkdirSync(closed)
  chmodSync(files, 0o755)
  chownSync(files, O.id, O.id)
  chmodSync(closed, 0o700)
  chownSync(closed, O.id, O.id)
  for (const [name, mode] of [['private.txt', 0o600], ['public.txt', 0o644]] as const) {
    writeFileSync(join(files, name), name)
    chownSync(join(files, name), O.id, O.id)
    chmodSync(join(files, name), mode)
  }
  writeFileSync(join(closed, 'inner.txt'), 'inner')
  // The child runs openSendfile as U (the proxy's user) on files of O, and prints one line per path.
  const code = `
    import { openSendfile } from ${JSON.stringify(join(REPO, 'dist/core/sendfile.js'))}
    for (const p of JSON.parse(process.argv[1])) {
      try {
        const f = await openSendfile(p, [${JSON.stringify(files)}], [])
        f.stream.destroy()
        console.log(JSON.stringify({ p, served: f.size }))
      } catch (err) {
        console.log(JSON.stringify({ p, code: err.code, status: err.status, message: err.message }))
      }
    }`
  const paths = [join(files, 'private.txt'), join(files, 'public.txt'), join(closed, 'inner.txt')]
  const child = spawn(process.execPath, ['--input-type=module', '-e', code, JSON.stringify(paths)], { uid: U.id, gid: U.id, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { err += c.toString() })
  const exit = await new Promise<number | null>((resolve) => child.once('close', resolve))
  t.equal(exit, 0, 'the child ran', { err })
  const got = new Map(out.trim().split('\n').filter(Boolean).map((l) => { const o = JSON.parse(l) as { p: string }; return [o.p, o] }))
  t.match(got.get(join(files, 'public.txt')), { served: 'public.txt'.length }, 'a file the proxy may read is served')
  for (const p of [join(files, 'private.txt'), join(closed, 'inner.txt')]) {
    t.match(got.get(p), { code: 'ERR_SENDFILE_FORBIDDEN', status: 502 }, `${p}: refused as forbidden`)
    t.match(got.get(p), { message: /permission denied to the proxy/ }, 'the log line says why')
  }
})
