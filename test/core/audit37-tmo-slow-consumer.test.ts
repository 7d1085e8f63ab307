/**
 * Audit 37: a peer that reads its request body slowly but steadily is not late with its head.
 * The client sends the whole body at once; the peer takes it 8 KiB per 100 ms (80 KiB/s, 200 KiB
 * in 2.5 s), then answers. The proxy holds the client back meanwhile (the backend's pace), yet the
 * body keeps moving: as nginx (proxy_send_timeout between two writes, proxy_read_timeout once the
 * request is sent), `timeouts.headers` (1 s, 10x the peer's step) must not fire. Real peers: a perl
 * CGI script reading its stdin streamed (requestBuffering false) or spooled (the default), and a
 * node:http backend.
 *
 * TODO (fails today, audit 37 report): the head deadline is only pushed back while the client's
 * socket delivers bytes (ProxyExchange.checkUpload). Here the bytes wait in the proxy's buffers for
 * the backend (the sink's write buffer, a pipe or socket, the request's own buffer: ~150 KiB
 * between two socket reads at 80 KiB/s), or all came before the dispatch (a spooled body): 504
 * ERR_HEADERS_TIMEOUT after ~1.3 s, counted against the backend. The fix needs the adapters to
 * report request-body bytes the backend took; drop `todo` with it.
 */
import t, { type Test } from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { closeServer, proxyServer } from '../helpers/servers.js'
import { tempDir } from '../helpers/tmp.js'
import { captureLogger, fetchRaw, scriptsProxy, type LogLine } from '../cgi/harness.js'

const SIZE = 4 * 1024 * 1024
const STEP = 64 * 1024

const PERL = `#!/usr/bin/perl
use Time::HiRes qw(usleep);
binmode STDIN;
my ($n, $buf) = (0, '');
while (1) { my $r = sysread(STDIN, $buf, ${STEP}); last if !$r; $n += $r; usleep(100000); }
print "Content-Type: text/plain\\r\\n\\r\\ngot $n";
`

async function cgi (t: Test, requestBuffering: boolean): Promise<{ url: string, lines: LogLine[], path: string }> {
  const p = await scriptsProxy(t, { 'slow.pl': PERL }, { requestBuffering, timeouts: { headers: '2s' } })
  return { url: p.url, lines: p.lines, path: '/c/slow.pl' }
}

/**
 * A node:http backend on a unix socket: loopback TCP's autotuned buffers take megabytes the proxy
 * has handed over (sent, as nginx counts it) before the backend reads them; a unix socket's take
 * a few hundred KiB, less than `headers` at the backend's pace.
 */
async function http (t: Test): Promise<{ url: string, lines: LogLine[], path: string }> {
  const dir = tempDir(t, 'pc-audit37-slowbe-')
  const sock = join(dir, 'be.sock')
  const server = createServer((req, res) => {
    let n = 0
    const step = (): void => {
      let c: Buffer | null
      if ((c = req.read(STEP) as Buffer | null) !== null) n += c.length
      if (req.destroyed) return
      if (req.readableEnded || n >= SIZE) { res.end(`got ${n}`); return }
      setTimeout(step, 100)
    }
    req.once('readable', step)
  })
  await new Promise<void>((resolve) => server.listen(sock, resolve))
  t.teardown(() => closeServer(server))
  const { logger, lines } = captureLogger()
  const { url } = await proxyServer(t, { logger, routes: [{ protocol: 'http', backends: [`unix:${sock}`], timeouts: { headers: '2s' } }] })
  return { url, lines, path: '/slow' }
}

for (const [name, setup] of [['cgi (perl, streamed)', (t: Test) => cgi(t, false)], ['cgi (perl, spooled)', (t: Test) => cgi(t, true)], ['http', http]] as const) {
  t.test(`${name}: a 4 MiB body read 64 KiB per 100 ms (6.4 s) passes headers 2 s`, async (t) => {
    guardLeaks(t, { timeoutMs: 10_000 })
    const p = await setup(t)
    const started = Date.now()
    const r = await fetchRaw(`${p.url}${p.path}`, { method: 'POST', body: Buffer.alloc(SIZE, 'b'), headers: { 'content-type': 'application/octet-stream' } })
    t.equal(r.status, 200, 'answered', { body: r.body.toString().slice(0, 200) })
    t.equal(r.body.toString(), `got ${SIZE}`, 'the whole body read')
    t.ok(Date.now() - started >= 4000, 'the peer took longer than 2x headers to read it')
    t.same(p.lines.filter((l) => l.obj.code !== undefined).map((l) => l.obj.code), [], 'no timeout logged')
  })
}
