/**
 * `Expect: 100-continue` with the proxy's checkContinue listener registered: 100 goes out only
 * when the request body is about to be read (nginx sends it when it starts reading the body).
 * A request answered without reading its body — no route, a CGI script that does not exist, a
 * backend that cannot be reached — gets its final status without a 100, so the client never
 * sends the body (node:http then closes the connection: the client may still send it). A request
 * whose body is read gets its 100 and the body arrives intact.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { createProxy, silentLogger, type CreateProxyOptions } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { deadPort as freeDeadPort } from '../helpers/ports.js'
import { backend, closeServer, listen } from '../helpers/servers.js'
import { PHP_CGI, havePeer as haveFcgiPeer } from '../fastcgi/helpers/peers.js'
import { startUwsgi, uwsgiSkip } from '../scgi/uwsgi-peer.js'
import { SpawnManager } from '../../src/spawn/manager.js'
import { havePeer, tempDir, writeScripts } from '../cgi/harness.js'

const DEADLINE_MS = 10_000

interface Tap { teardown (fn: () => void | Promise<void>): void }

/** createProxy + node:http with the proxy's checkContinue listener (as the gateway registers it). */
async function continueProxy (t: Tap, config: CreateProxyOptions, ended?: number[]): Promise<number> {
  const proxy = await createProxy({ logger: silentLogger, ...config })
  if (ended !== undefined) proxy.events.on('request:end', (e) => { ended.push(e.status) })
  const server = createServer(proxy.handler)
  server.on('checkContinue', proxy.checkContinue)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  return port
}

interface Talk { raw: string, sentBody: boolean, closed: boolean }

/**
 * A client that waits for 100 before sending `body` (as curl does, without its 1 s give-up): the
 * raw bytes it got until the server closed the connection (or DEADLINE_MS).
 */
function expectContinue (port: number, head: string, body: Buffer): Promise<Talk> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port })
    let raw = ''
    let sentBody = false
    let closed = true
    const timer = setTimeout(() => { closed = false; s.destroy() }, DEADLINE_MS)
    s.on('data', (d: Buffer) => {
      raw += d.toString('latin1')
      if (!sentBody && raw.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) { sentBody = true; s.write(body) }
    })
    s.on('error', () => {})
    s.on('close', () => { clearTimeout(timer); resolve({ raw, sentBody, closed }) })
    s.write(head)
  })
}

const post = (path: string, n: number, close = true, extra = ''): string =>
  `POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Length: ${n}\r\nExpect: 100-continue\r\n${extra}${close ? 'Connection: close\r\n' : ''}\r\n`

/** The same body chunked, with a chunk extension and a trailer. */
const chunkedPost = (path: string): string =>
  `POST ${path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`
function chunked (body: Buffer): Buffer {
  const parts: Buffer[] = []
  for (let off = 0; off < body.length; off += 65536) {
    const part = body.subarray(off, off + 65536)
    parts.push(Buffer.from(`${part.length.toString(16)};ext=1\r\n`), part, Buffer.from('\r\n'))
  }
  parts.push(Buffer.from('0\r\nX-Trailer: t\r\n\r\n'))
  return Buffer.concat(parts)
}

const BODY = Buffer.alloc(300_000, 7)
const SHA = createHash('sha256').update(BODY).digest('hex')

t.test('HTTP route: 100 only once the body is read; no 100 for a 404 or a backend that is down', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (req, res) => {
    const h = createHash('sha256')
    req.on('data', (c: Buffer) => h.update(c))
    req.on('end', () => res.end(h.digest('hex')))
  })
  // A port nothing listens on (not one a closed listen(0) gave back: see helpers/ports.ts).
  const deadPort = await freeDeadPort()
  const port = await continueProxy(t, {
    routes: [
      { match: { prefix: '/up/' }, protocol: 'http', backends: [be.address], maxBodySize: BODY.length },
      { match: { prefix: '/down/' }, protocol: 'http', backends: [`127.0.0.1:${deadPort}`], retries: 0 },
    ],
  })

  const ok = await expectContinue(port, post('/up/x', BODY.length), BODY)
  t.ok(ok.closed, 'answered')
  t.ok(ok.sentBody, '100 sent for a body that is read')
  t.match(ok.raw, /HTTP\/1\.1 200 /, '200')
  t.ok(ok.raw.includes(SHA), 'the body arrived intact')

  const big = await expectContinue(port, post('/up/x', BODY.length + 1), BODY)
  t.notOk(big.sentBody, 'no 100 for a Content-Length over maxBodySize')
  t.match(big.raw, /^HTTP\/1\.1 413 /, '413')

  const none = await expectContinue(port, post('/nowhere', BODY.length, false), BODY)
  t.ok(none.closed, 'the connection is closed after the 404, never left waiting for the body')
  t.notOk(none.sentBody, 'no 100 for a request no route takes')
  t.match(none.raw, /^HTTP\/1\.1 404 /, '404')

  const down = await expectContinue(port, post('/down/x', BODY.length, false), BODY)
  t.ok(down.closed, 'the connection is closed after the 502')
  t.notOk(down.sentBody, 'no 100 when the backend could not be reached')
  t.match(down.raw, /^HTTP\/1\.1 502 /, '502')
})

t.test('CGI route: no 100 for a script that does not exist; 100 and an intact body for one that reads it', async (t) => {
  if (!havePeer(t, '/usr/bin/perl')) return
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, {
    'sum.pl': "#!/usr/bin/perl\nuse Digest::SHA;\nbinmode STDIN;\nmy $d = Digest::SHA->new(256);\n$d->addfile(*STDIN);\nprint \"Content-Type: text/plain\\r\\n\\r\\n\", $d->hexdigest;\n",
  })
  const manager = new SpawnManager()
  t.teardown(() => manager.close())
  manager.add('cgi', { socketType: 'pipe', copyEnvironment: ['PATH'], stopTimeout: 500 })
  await manager.start()
  const port = await continueProxy(t, {
    processStarters: { cgi: manager.pipeStarter('cgi') },
    routes: [{ match: { prefix: '/c/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir, stripPrefix: true }],
  })

  const ok = await expectContinue(port, post('/c/sum.pl', BODY.length), BODY)
  t.ok(ok.sentBody, '100 sent for a body the script reads')
  t.match(ok.raw, /HTTP\/1\.1 200 /, '200')
  t.ok(ok.raw.includes(SHA), 'the body arrived intact')

  const missing = await expectContinue(port, post('/c/missing.pl', BODY.length, false), BODY)
  t.ok(missing.closed, 'the connection is closed after the 404')
  t.notOk(missing.sentBody, 'no 100 for a script that does not exist')
  t.match(missing.raw, /^HTTP\/1\.1 404 /, '404')
})

/** A php-cgi FastCGI route guarded by an authorizer that refuses without `X-Token: secret`. */
async function fastcgiAuthProxy (t: Parameters<typeof tempDir>[0], authorizerDelayUs: number, ended?: number[]): Promise<number> {
  const dir = tempDir(t)
  writeScripts(dir, {
    'auth.php': `<?php\nif (($_SERVER['HTTP_X_TOKEN'] ?? '') !== 'secret') { http_response_code(401); echo 'denied'; exit; }\nusleep(${authorizerDelayUs});\n`,
    'app.php': "<?php echo hash('sha256', file_get_contents('php://input'));",
  }, 0o644)
  return await continueProxy(t, {
    spawns: { php: { binPath: PHP_CGI, socketName: `${dir}/php.sock`, environment: { PHP_FCGI_CHILDREN: '2' }, stopTimeout: '2s' } },
    routes: [{
      match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'php', docroot: dir,
      authorizer: { spawn: 'php', scriptFilename: `${dir}/auth.php` },
      // Far shorter than the authorizer's delay: the client waiting for its 100 must not be a 408.
      timeouts: { clientIdle: '300ms' },
    }],
  }, ended)
}

t.test('FastCGI route: no 100 when the authorizer refuses', async (t) => {
  if (!haveFcgiPeer(t, PHP_CGI)) return
  guardLeaks(t, { timeoutMs: 10_000 })
  const ended: number[] = []
  const port = await fastcgiAuthProxy(t, 0, ended)
  const denied = await expectContinue(port, post('/app.php', BODY.length, false), BODY)
  t.ok(denied.closed, 'the connection is closed after the refusal')
  t.notOk(denied.sentBody, 'no 100 for a request the authorizer refuses')
  t.match(denied.raw, /^HTTP\/1\.1 401 /, '401')
  // node closes this connection as soon as the 401 is written (the body was never asked for): the
  // request is still logged with the status the client got, not as a client abort (499).
  t.same(ended, [401], 'request:end says 401')
})

t.test('FastCGI route: a client waiting for its 100 while a slow authorizer runs is not idle (no 408)', async (t) => {
  if (!haveFcgiPeer(t, PHP_CGI)) return
  guardLeaks(t, { timeoutMs: 10_000 })
  const port = await fastcgiAuthProxy(t, 1_200_000)
  const ok = await expectContinue(port, post('/app.php', BODY.length, true, 'X-Token: secret\r\n'), BODY)
  t.ok(ok.sentBody, '100 once the authorizer let the request through')
  t.match(ok.raw, /HTTP\/1\.1 200 /, '200, not 408')
  t.ok(ok.raw.includes(SHA), 'the body arrived intact')
})

t.test('SCGI route: 100 and an intact body, with Content-Length and chunked (spooled)', { skip: uwsgiSkip() }, async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const peer = await startUwsgi('scgi')
  t.teardown(() => peer.stop())
  const port = await continueProxy(t, { routes: [{ protocol: 'scgi', backends: [`unix:${peer.socketPath}`], scriptFilename: '/app' }] })
  const cl = await expectContinue(port, post('/x', BODY.length), BODY)
  t.ok(cl.sentBody, '100 sent')
  t.ok(cl.raw.includes(SHA), 'Content-Length body intact')
  const ch = await expectContinue(port, chunkedPost('/x'), chunked(BODY))
  t.ok(ch.sentBody, '100 sent for a chunked body')
  t.ok(ch.raw.includes(SHA), 'chunked body (extension, trailer) intact after the spool')
})
