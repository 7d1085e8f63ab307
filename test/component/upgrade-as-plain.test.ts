/**
 * An Upgrade proxycore cannot or should not tunnel is served as a plain request (RFC 9110 §7.8: a
 * server MAY ignore Upgrade; nginx does), where node:http has `shouldUpgradeCallback` (Node >=
 * 22.21 / 24.9) and the server is made with `shouldUpgradeCallback: proxy.shouldUpgrade`:
 *
 * - `curl --http2` (`Connection: Upgrade, HTTP2-Settings`, `Upgrade: h2c`) to a FastCGI (php-cgi),
 *   CGI (a shell script) or static route: 200, and the backend sees no Upgrade, no HTTP2-Settings.
 * - `curl --http2 -d hello` (a POST upgrading to h2c) to an `http` route: 200, the body whole at the
 *   backend, which sees a plain POST.
 * - A WebSocket handshake to an `http` route: still 101 and a working tunnel.
 *
 * Where node:http lacks the option (Node 20 ignores it), the same requests get what they always got,
 * as docs/guides/http-and-websockets.md says: 400 ERR_BAD_REQUEST, and no backend sees them.
 * Support is detected by feature, not by version number: a server made with the option, and an
 * Upgrade request that reaches 'request'.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerOptions } from 'node:http'
import { join } from 'node:path'
import { WebSocket, WebSocketServer } from 'ws'
import { createProxy, silentLogger, type CreateProxyOptions, type Proxy, type RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { Raw } from '../helpers/raw-client.js'
import { closeServer, listen } from '../helpers/servers.js'
import { probeShouldUpgrade } from '../helpers/node-features.js'
import { PHP_CGI, havePeer, startPhpCgi, tempDir } from '../fastcgi/helpers/peers.js'
import { serveKilled } from '../cli/run.js'

interface Tap { teardown (fn: () => unknown): void }

const supported = await probeShouldUpgrade()
t.comment(`node ${process.version}: shouldUpgradeCallback ${supported ? 'supported' : 'not supported (the old 400s apply)'}`)

/** The embedding the docs show: createServer with proxy.shouldUpgrade, 'upgrade' to proxy.upgrade. */
async function embedded (t: Tap, config: CreateProxyOptions): Promise<{ proxy: Proxy, port: number, url: string, ends: RequestEndEvent[], starts: number }> {
  const proxy = await createProxy({ logger: silentLogger, ...config })
  const server: Server = createServer({ shouldUpgradeCallback: proxy.shouldUpgrade } as ServerOptions, proxy.handler)
  server.on('upgrade', proxy.upgrade)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const out = { proxy, port, url: `http://127.0.0.1:${port}`, ends: [] as RequestEndEvent[], starts: 0 }
  proxy.events.on('request:start', () => { out.starts++ })
  proxy.events.on('request:end', (e) => out.ends.push(e))
  return out
}

/** What curl 7.88 sends for `curl --http2` (and `-d`): the h2c upgrade of RFC 7540 §3.2. */
const H2C = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n'
const h2cGet = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n${H2C}\r\n`
const h2cPost = (path: string, body: string): string =>
  `POST ${path} HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n${H2C}Content-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n${body}`

/** One request on a raw socket: its status and body (the connection may stay open: it is closed here). */
async function send (port: number, bytes: string): Promise<{ status: number, body: string, raw: string }> {
  const r = new Raw(port, bytes)
  const answered = await r.answered(20_000)
  r.socket.destroy()
  return { status: answered ? r.status() : 0, body: r.body() ?? '', raw: r.raw }
}

const OLD_400 = /^HTTP\/1\.1 400 Bad Request\r\n[^]*\r\nconnection: close\r\n[^]*\r\n\r\n400 Bad Request\nERR_BAD_REQUEST\n$/

/** php-cgi's answer: the Upgrade and HTTP2-Settings it was given (or none), the method, the body it read. */
const PHP = `<?php
header('Content-Type: text/plain');
echo $_SERVER['HTTP_UPGRADE'] ?? 'none', ' ', $_SERVER['HTTP_HTTP2_SETTINGS'] ?? 'none', ' ', $_SERVER['REQUEST_METHOD'], ' [', file_get_contents('php://input'), ']';
`
/** The same from a shell CGI script (the body read to CONTENT_LENGTH). */
const SH = `#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
printf '%s %s %s [' "\${HTTP_UPGRADE:-none}" "\${HTTP_HTTP2_SETTINGS:-none}" "$REQUEST_METHOD"
head -c "\${CONTENT_LENGTH:-0}"
printf ']'
`

t.test('FastCGI (php-cgi), CGI (sh) and static routes: an h2c Upgrade GET is a plain GET (Node 20: 400 ERR_BAD_REQUEST)', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI)) return
  const dir = tempDir(t, 'pc-upgrade-plain-')
  const php = await startPhpCgi(t, dir, 1)
  const www = join(dir, 'www')
  mkdirSync(join(www, 'cgi'), { recursive: true })
  writeFileSync(join(www, 'echo.php'), PHP)
  writeFileSync(join(www, 'cgi', 'echo.sh'), SH)
  chmodSync(join(www, 'cgi', 'echo.sh'), 0o755)
  writeFileSync(join(www, 'file.txt'), 'a static file\n')
  const p = await embedded(t, {
    spawns: { sh: { socketType: 'pipe', copyEnvironment: ['PATH'] } },
    routes: [
      { name: 'php', match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${php.socketPath}`], docroot: www },
      { name: 'cgi', match: { prefix: '/cgi/' }, protocol: 'cgi', spawn: 'sh', docroot: www },
      { name: 'static', match: { prefix: '/' }, protocol: 'static', docroot: www },
    ],
  })
  const stats = (name: string): number => p.proxy.routes.find((r) => r.name === name)!.stats.requests
  const cases: Array<[string, string, RegExp]> = [
    ['php', '/echo.php', /^none none GET \[\]$/],
    ['cgi', '/cgi/echo.sh', /^none none GET \[\]$/],
    ['static', '/file.txt', /^a static file\n$/],
  ]
  for (const [route, path, body] of cases) {
    const r = await send(p.port, h2cGet(path))
    if (supported) {
      t.equal(r.status, 200, `${route}: 200`)
      t.match(r.body, body, `${route}: the backend saw a plain GET, without Upgrade or HTTP2-Settings`)
      t.notMatch(r.raw, /\r\nupgrade:/i, `${route}: no Upgrade in the answer`)
    } else {
      t.match(r.raw, OLD_400, `${route}: 400 ERR_BAD_REQUEST, as without shouldUpgradeCallback`, { raw: r.raw })
    }
    // A refused upgrade (Node 20) is refused before a route takes it: not in the route's counters.
    t.equal(stats(route), supported ? 1 : 0, `${route}: counted ${supported ? 'once' : 'not at all'} in the route's requests`)
  }
  t.ok(await waitFor(() => p.ends.length === 3, 10_000), 'one request:end each')
  t.equal(p.starts, supported ? 3 : 0, 'request:start once each for a plain request (none for a refused upgrade)')
  t.match(p.ends, supported
    ? [{ route: 'php', status: 200, error: null, method: 'GET' }, { route: 'cgi', status: 200, error: null }, { route: 'static', status: 200, error: null }]
    : [{ route: 'php', status: 400, error: 'ERR_BAD_REQUEST' }, { route: 'cgi', status: 400, error: 'ERR_BAD_REQUEST' }, { route: 'static', status: 400, error: 'ERR_BAD_REQUEST' }])
  // Plain requests keep the connection: a second request on it is answered too.
  if (supported) {
    const r = new Raw(p.port, h2cGet('/echo.php'))
    t.ok(await r.answered(20_000), 'the first answer')
    const first = r.raw.length
    r.socket.write('GET /cgi/echo.sh HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
    t.ok(await waitFor(() => r.closed, 20_000), 'the second answered, then closed as asked')
    t.match(r.raw.slice(first), /^HTTP\/1\.1 200 [^]*none none GET \[/, 'the same connection served a second request')
  }
})

t.test('an h2c Upgrade POST with a body to an http route: a plain POST, the body whole at the backend (Node 20: 400)', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const seen: Array<{ method: string, headers: IncomingMessage['headers'], body: string }> = []
  let upgrades = 0
  const be = createServer((req, res) => {
    let body = ''
    req.setEncoding('latin1').on('data', (d: string) => { body += d })
    req.on('end', () => { seen.push({ method: req.method ?? '', headers: req.headers, body }); res.end(`read ${body.length}`) })
  })
  be.on('upgrade', (_req, socket: import('node:stream').Duplex) => { upgrades++; socket.destroy() })
  const bePort = await listen(be, t)
  const p = await embedded(t, { routes: [{ name: 'ws', protocol: 'http', backends: [`127.0.0.1:${bePort}`] }] })
  const big = 'x'.repeat(300_000)
  for (const body of ['hello', big]) {
    const r = await send(p.port, h2cPost('/form', body))
    if (supported) {
      t.equal(r.status, 200, `${body.length} bytes: 200`)
      t.equal(r.body, `read ${body.length}`, `${body.length} bytes: the backend read the whole body`)
    } else {
      t.match(r.raw, OLD_400, `${body.length} bytes: 400 ERR_BAD_REQUEST (Node without shouldUpgradeCallback)`, { raw: r.raw.slice(0, 300) })
    }
  }
  t.equal(upgrades, 0, 'the backend never got an Upgrade')
  if (supported) {
    t.equal(seen.length, 2)
    for (const s of seen) {
      t.equal(s.method, 'POST')
      t.equal(s.headers.upgrade, undefined, 'no Upgrade at the backend')
      t.equal(s.headers['http2-settings'], undefined, 'no HTTP2-Settings (named in Connection: hop-by-hop)')
      t.notMatch(s.headers.connection ?? '', /upgrade/i, 'no Connection: Upgrade')
    }
    t.equal(seen[1].body, big, 'the 300 kB body, byte for byte')
  } else {
    t.equal(seen.length, 0, 'no backend saw them')
  }
  t.equal(p.proxy.routes[0].stats.requests, 2, 'two requests counted, once each')
  t.ok(await waitFor(() => p.ends.length === 2, 10_000))
  t.match(p.ends, supported ? [{ status: 200, error: null, method: 'POST' }, { status: 200, error: null }] : [{ status: 400, error: 'ERR_BAD_REQUEST' }, { status: 400, error: 'ERR_BAD_REQUEST' }])
})

t.test('a WebSocket handshake to the same http route still gets 101 and a working tunnel', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const be = createServer((_req, res) => res.end('plain'))
  const wss = new WebSocketServer({ server: be })
  const sockets: WebSocket[] = []
  wss.on('connection', (ws, req) => { sockets.push(ws); ws.send(`hello ${req.url}`); ws.on('message', (d, binary) => ws.send(d, { binary })) })
  const bePort = await listen(be)
  t.teardown(async () => { for (const s of sockets) s.terminate(); wss.close(); await closeServer(be) })
  const p = await embedded(t, { routes: [{ name: 'ws', protocol: 'http', backends: [`127.0.0.1:${bePort}`] }] })
  const ws = new WebSocket(`ws://127.0.0.1:${p.port}/chat`)
  const got: string[] = []
  let status = 0
  ws.on('upgrade', (res) => { status = res.statusCode ?? 0 })
  ws.on('message', (d) => { got.push(String(d)); if (got.length === 1) ws.send('ping') })
  ws.on('error', () => {})
  t.ok(await waitFor(() => got.length >= 2, 10_000), 'greeting and echo')
  t.equal(status, 101, '101 Switching Protocols')
  t.same(got, ['hello /chat', 'ping'], 'both directions flow')
  ws.close()
  t.ok(await waitFor(() => p.ends.length === 1, 10_000), 'the tunnel ended')
  t.match(p.ends, [{ status: 101, error: null }])
  t.equal(p.proxy.routes[0].stats.requests, 1)
})

t.test('the real curl --http2, with and without a body, to php-cgi', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  if (!havePeer(t, PHP_CGI) || !havePeer(t, '/usr/bin/curl')) return
  const dir = tempDir(t, 'pc-upgrade-curl-')
  const php = await startPhpCgi(t, dir, 1)
  writeFileSync(join(dir, 'echo.php'), PHP)
  const p = await embedded(t, { routes: [{ name: 'php', match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${php.socketPath}`], docroot: dir }] })
  const curl = (args: string[]): Promise<string> => new Promise((resolve, reject) => {
    execFile('/usr/bin/curl', ['-sS', '-w', ' %{http_code}', ...args, `${p.url}/echo.php`], { timeout: 20_000 }, (err, stdout) => { if (err !== null) reject(err); else resolve(stdout) })
  })
  const get = await curl(['--http2'])
  const post = await curl(['--http2', '-d', 'hello'])
  if (supported) {
    t.equal(get, 'none none GET [] 200', 'curl --http2: a plain GET')
    t.equal(post, 'none none POST [hello] 200', 'curl --http2 -d hello: a plain POST with its 5 bytes')
  } else {
    t.equal(get, '400 Bad Request\nERR_BAD_REQUEST\n 400', 'curl --http2: 400 (Node without shouldUpgradeCallback)')
    t.equal(post, '400 Bad Request\nERR_BAD_REQUEST\n 400', 'curl --http2 -d hello: 400')
  }
})

t.test('proxycore serve: an h2c GET to a CGI route is a plain GET; the status live view and a WebSocket route still upgrade', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = tempDir(t, 'pc-upgrade-serve-')
  mkdirSync(join(dir, 'cgi'))
  writeFileSync(join(dir, 'cgi', 'echo.sh'), SH)
  chmodSync(join(dir, 'cgi', 'echo.sh'), 0o755)
  const be = createServer((_req, res) => res.end('plain'))
  const wss = new WebSocketServer({ server: be })
  const sockets: WebSocket[] = []
  wss.on('connection', (ws) => { sockets.push(ws); ws.on('message', (d, binary) => ws.send(d, { binary })) })
  const bePort = await listen(be)
  t.teardown(async () => { for (const s of sockets) s.terminate(); wss.close(); await closeServer(be) })
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, JSON.stringify({
    listen: '127.0.0.1:0',
    drainTimeout: '2s',
    status: { path: '/server-status/' },
    spawns: { sh: { socketType: 'pipe', copyEnvironment: ['PATH'] } },
    routes: [
      { name: 'cgi', match: { prefix: '/cgi/' }, protocol: 'cgi', spawn: 'sh', docroot: dir },
      // Not a catch-all: no route takes the status paths, so only the status can want their upgrade.
      { name: 'ws', match: { prefix: '/chat' }, protocol: 'http', backends: [`127.0.0.1:${bePort}`] },
    ],
  }))
  const { s } = await serveKilled(t, file)
  const port = Number(new URL(s.url).port)
  const r = await send(port, h2cGet('/cgi/echo.sh'))
  if (supported) t.equal(`${r.status} ${r.body}`, '200 none none GET []', 'the CGI script ran a plain GET')
  else t.match(r.raw, OLD_400, '400 ERR_BAD_REQUEST (Node without shouldUpgradeCallback)', { raw: r.raw })
  const post = await send(port, h2cPost('/cgi/echo.sh', 'hello'))
  if (supported) t.equal(`${post.status} ${post.body}`, '200 none none POST [hello]', 'an h2c POST: the script read its 5 bytes')
  else t.match(post.raw, OLD_400, 'an h2c POST: 400', { raw: post.raw })
  // The status page's live view (createStatus, not a route) is a WebSocket the gateway still upgrades.
  const wsOpen = (path: string): Promise<{ status: number, first: string }> => new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`)
    let status = 0
    ws.on('upgrade', (res) => { status = res.statusCode ?? 0 })
    ws.on('unexpected-response', (_req, res) => { resolve({ status: res.statusCode ?? 0, first: '' }); ws.terminate() })
    ws.on('open', () => { if (path !== '/server-status/live') ws.send('ping') })
    ws.once('message', (d) => { resolve({ status, first: String(d).slice(0, 20) }); ws.close() })
    ws.on('error', () => {})
  })
  const live = await wsOpen('/server-status/live')
  t.equal(live.status, 101, 'the live view: 101')
  t.match(live.first, /^\{/, 'and its first snapshot')
  const spelled = await wsOpen('/server-status/./live/')
  t.equal(spelled.status, 101, 'another spelling of the live path: 101 too (compared normalised, as the status compares)')
  const echo = await wsOpen('/chat')
  t.same(echo, { status: 101, first: 'ping' }, 'a WebSocket to the http route: 101 and the echo')
})
