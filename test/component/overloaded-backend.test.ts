/**
 * A backend whose listen queue is full refuses connects with EAGAIN (a unix socket; php-fpm's
 * listen.backlog with every worker busy). It is up, only busy: skipped for at most a second, as
 * lighttpd does, not for the route's whole disableTime (30 s here), which turned one moment of
 * overload into half a minute of 503s for every request. A real listening socket that never
 * accepts (perl), its queue filled by raw connections.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'

t.test('EAGAIN (listen queue full): the backend is skipped for a second, not for disableTime', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-overload-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const sock = join(dir, 'be.sock')
  // Listens with the smallest queue and never accepts.
  const holder = spawn('perl', ['-MIO::Socket::UNIX', '-e', 'my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $ARGV[0], Listen => 0) or die $!; print "up\\n"; <STDIN>', sock], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => { holder.kill('SIGKILL') })
  t.ok(await waitFor(() => existsSync(sock), 5000), 'the backend listens')
  // Fill its queue: connects that are queued, never accepted, until one is refused.
  const queued: Socket[] = []
  t.teardown(() => { for (const s of queued) s.destroy() })
  let refused = ''
  for (let i = 0; i < 16 && refused === ''; i++) {
    refused = await new Promise<string>((resolve) => {
      const s = connect(sock)
      s.once('connect', () => { queued.push(s); resolve('') })
      s.once('error', (e: NodeJS.ErrnoException) => { s.destroy(); resolve(e.code ?? 'error') })
    })
  }
  t.equal(refused, 'EAGAIN', 'the queue is full: connects are refused with EAGAIN')

  // With a second backend: one alone in its route is never skipped at all.
  const other = await backend(t, (_req, res) => { res.end('other') })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [`unix:${sock}`, other.address], balance: 'round-robin', disableTime: '30s' }] })
  const first = await rawRequest(port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(first, /^HTTP\/1\.1 200 [^]*other$/, 'the refused connect failed over to the other backend')
  const full = proxy.routes[0].pool.backends[0]
  t.equal(full.state, 'disabled', 'the busy backend is skipped')
  const left = full.disabledUntil - Date.now()
  t.ok(left <= 1000, `for a second, not for the 30 s disableTime (${left} ms left)`)
})
