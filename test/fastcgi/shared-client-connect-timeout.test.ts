/**
 * Routes that send to one FastCGI backend share one client (src/protocols/fastcgi/adapter.ts), yet
 * each request connects with its own route's `timeouts.connect`. Before, the client connected with
 * the context of the route that made it: a route with `connect: 300ms` behind one with `30s` waited
 * 30 s for a backend that never answers the handshake. The backend: a real TCP listening socket
 * that never accepts (perl), its queue filled, so further connects hang in SYN retries.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { proxyServer, rawRequest } from '../helpers/servers.js'

t.test('two routes on one FastCGI backend: each connects with its own connect timeout', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const holder = spawn('perl', ['-MIO::Socket::INET', '-e',
    '$| = 1; my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 0, Proto => "tcp") or die $!; print $s->sockport, "\\n"; <STDIN>'],
  { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => { holder.kill('SIGKILL') })
  const [line] = await once(holder.stdout, 'data') as [Buffer]
  const port = Number(line.toString().trim())
  t.ok(port > 0, 'the backend listens')

  // Fill its accept queue: connects complete until the queue is full, then hang.
  const queued: Socket[] = []
  t.teardown(() => { for (const s of queued) s.destroy() })
  let hung = false
  for (let i = 0; i < 16 && !hung; i++) {
    hung = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port })
      queued.push(s)
      const timer = setTimeout(() => { resolve(true) }, 1000)
      s.once('connect', () => { clearTimeout(timer); resolve(false) })
      s.once('error', () => { clearTimeout(timer); resolve(false) })
    })
  }
  t.ok(hung, 'the queue is full: a connect hangs')

  const backend = `127.0.0.1:${port}`
  const docroot = mkdtempSync(join(tmpdir(), 'pc-shared-connect-'))
  t.teardown(() => { rmSync(docroot, { recursive: true, force: true }) })
  writeFileSync(join(docroot, 'x.php'), '<?php echo 1;')
  const { port: proxyPort } = await proxyServer(t, {
    routes: [
      // First: its pool makes the shared client.
      { name: 'patient', match: { prefix: '/patient/' }, protocol: 'fastcgi', backends: [backend], docroot, stripPrefix: true, timeouts: { connect: '30s' }, options: { discovery: false } },
      { name: 'quick', match: { prefix: '/quick/' }, protocol: 'fastcgi', backends: [backend], docroot, stripPrefix: true, timeouts: { connect: '300ms' }, retries: 0, options: { discovery: false } },
    ],
  })
  const started = Date.now()
  const res = await rawRequest(proxyPort, 'GET /quick/x.php HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  const took = Date.now() - started
  t.match(res, /^HTTP\/1\.1 504 [^]*ERR_CONNECT_TIMEOUT/, 'the quick route gives up on connecting: 504 ERR_CONNECT_TIMEOUT')
  t.ok(took < 10_000, `after its own 300 ms, not the other route's 30 s (took ${took} ms)`)
})
