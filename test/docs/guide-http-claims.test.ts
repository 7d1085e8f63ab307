/**
 * docs/guides/http-and-websockets.md as an operator walks it, on the real CLI (`proxycore serve`):
 * the guide's first config (its backends swapped for live node:http servers) with the paths its
 * table shows, the WebSocket example with a real `ws` client, the forwarding-header values its table
 * prints, the hop-by-hop response headers it lists (raw backend, raw client), `timeouts.headers` as
 * a bare number of milliseconds, the defaults its tables state against the schema's, the rows of its
 * hostile-backend table for interim (1xx) responses, and the Upgrade refusals it lists (with curl's
 * h2c upgrade, the command it names).
 * test/docs/http-guide.test.ts checks the same behaviours embedded (createProxy); this file reads
 * the values from the guide, so a doc change that breaks one fails here.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import { WebSocket, WebSocketServer } from 'ws'
import { parse } from 'yaml'
import { guardLeaks } from '../helpers/leaks.js'
import { get, listen, rawBackend, rawRequest } from '../helpers/servers.js'
import { havePeer, tempDir } from '../fastcgi/helpers/peers.js'
import { httpOptionsSchema } from '../../src/protocols/http/options.js'
import { root, serveKilled } from '../cli/run.js'
import { probeShouldUpgrade } from '../helpers/node-features.js'

const guide = readFileSync(join(root, 'docs/guides/http-and-websockets.md'), 'utf8')
const yamlBlocks = [...guide.matchAll(/^```yaml\n([\s\S]*?)^```/gm)].map((m) => m[1])

interface Tap { teardown (fn: () => unknown): void }

/** A node:http backend echoing what it got, with a WebSocket server on it. */
async function echo (t: Tap, name: string): Promise<string> {
  const server = createServer((req, res) => {
    if (req.url === '/login') { res.writeHead(302, { location: '/home', 'set-cookie': 'sid=1; Path=/; HttpOnly' }).end(); return }
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ name, url: req.url, headers: req.headers }))
  })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws, req) => { ws.on('message', (m: Buffer) => ws.send(`${req.url ?? ''}: ${m.toString()}`)) })
  t.teardown(() => { for (const c of wss.clients) c.terminate(); wss.close() })
  const port = await listen(server, t)
  return `127.0.0.1:${port}`
}

function configFile (t: Parameters<typeof tempDir>[0], body: object): string {
  const dir = tempDir(t, 'pc-doc-http-')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, JSON.stringify({ listen: '127.0.0.1:0', drainTimeout: '2s', ...body }, null, 2))
  return file
}

const seen = async (url: string, headers: Record<string, string> = {}): Promise<{ name: string, url: string, headers: IncomingHttpHeaders }> =>
  JSON.parse((await get(url, { headers })).body.toString()) as { name: string, url: string, headers: IncomingHttpHeaders }

t.test('the guide\'s first config, served by proxycore serve: the paths of its stripPrefix table, round-robin', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const first = parse(yamlBlocks[0]) as { routes: Array<Record<string, unknown>> }
  t.same(first.routes[0].match, { prefix: '/api/' })
  t.equal(first.routes[0].stripPrefix, true)
  const a = await echo(t, 'a')
  const b = await echo(t, 'b')
  const route = { ...first.routes[0], backends: [a, b], balance: 'round-robin' }
  const { s } = await serveKilled(t, configFile(t, { routes: [route] }))

  // | request | `GET /api/users?id=7` | `GET /users?id=7` |
  const row = /\| request \| `GET ([^`]+)` \| `GET ([^`]+)` \|/.exec(guide)
  t.ok(row !== null, 'the guide has the request row')
  const names: string[] = []
  for (let i = 0; i < 4; i++) {
    const r = await seen(`${s.url}${row?.[1] ?? ''}`)
    t.equal(r.url, row?.[2], `the backend sees ${row?.[2] ?? ''}`)
    names.push(r.name)
  }
  t.same(names.sort(), ['a', 'a', 'b', 'b'], 'round-robin: 4 requests over two backends, 2 and 2 (the balance table)')
  // | `Location` | `/api/home` | `/home` |  and the Set-Cookie row.
  const loc = /\| `Location` \| `([^`]+)` \| `([^`]+)` \|/.exec(guide)
  const cookie = /\| `Set-Cookie` Path \| `([^`]+)` \| `([^`]+)` \|/.exec(guide)
  const login = await get(`${s.url}/api/login`)
  t.equal(loc?.[2], '/home')
  t.equal(login.headers.location, loc?.[1], 'Location as the table says')
  t.equal(cookie?.[2], 'sid=1; Path=/; HttpOnly')
  t.same(login.headers['set-cookie'], [cookie?.[1]], 'Set-Cookie Path as the table says')
})

t.test('the WebSocket example: ws://…/ws/chat through proxycore serve reaches the backend as /chat', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const ex = /^\/\/ ws:\/\/127\.0\.0\.1:8080(\S+) +-> +route \{ match: \{ prefix: '([^']+)' \}, stripPrefix: true \} +-> +backend sees (\S+)$/m.exec(guide)
  t.ok(ex !== null, 'the guide has the example')
  if (ex === null) return
  const be = await echo(t, 'ws')
  const { s } = await serveKilled(t, configFile(t, { routes: [{ match: { prefix: ex[2] }, protocol: 'http', backends: [be], stripPrefix: true }] }))
  const ws = new WebSocket(`${s.url.replace('http:', 'ws:')}${ex[1]}`)
  t.teardown(() => ws.terminate())
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  const reply = new Promise<string>((resolve) => ws.once('message', (m: Buffer) => resolve(m.toString())))
  ws.send('hello')
  t.equal(await reply, `${ex[3]}: hello`, `the backend saw ${ex[3]}`)
  const closed = new Promise<number>((resolve) => ws.once('close', (code: number) => resolve(code)))
  ws.close(4001)
  t.equal(await closed, 4001, 'a close code passes through both ways')
})

t.test('the forwarding-header table: the values it prints are what the backend gets', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const be = await echo(t, 'h')
  const fwdRow = /\| `forwarded: true` \| RFC 7239 `Forwarded: ([^`]+)` \|/.exec(guide)
  const viaRow = /\| `via: proxycore` \| `Via: ([^`]+)` \|/.exec(guide)
  const xffKept = /`X-Forwarded-For` list is kept and the peer is appended \(`([^`]+)`\)/.exec(guide)
  t.ok(fwdRow !== null && viaRow !== null && xffKept !== null, 'the guide has the rows')
  const host = /host=([^;`]+)/.exec(fwdRow?.[1] ?? '')?.[1] ?? ''
  t.equal(host, 'www.example.com')
  const { s } = await serveKilled(t, configFile(t, {
    routes: [
      { match: { prefix: '/f/' }, protocol: 'http', backends: [be], forwarded: true, xForwarded: false, via: 'proxycore' },
      { protocol: 'http', backends: [be] },
    ],
  }))
  const f = await seen(`${s.url}/f/`, { host })
  t.equal(f.headers.forwarded, fwdRow?.[1], `Forwarded: ${fwdRow?.[1] ?? ''}`)
  t.equal(f.headers.via, viaRow?.[1], `Via: ${viaRow?.[1] ?? ''}`)
  t.equal(f.headers['x-forwarded-for'], undefined, 'xForwarded: false sends none')
  const spoofed = xffKept?.[1].split(', ')[0] ?? ''
  const x = await seen(`${s.url}/x`, { host, 'x-forwarded-for': spoofed, 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.example', x_forwarded_host: 'evil.example' })
  t.equal(x.headers['x-forwarded-for'], xffKept?.[1], 'an untrusted peer: its list kept, the peer appended')
  t.equal(x.headers['x-forwarded-proto'], 'http', 'its X-Forwarded-Proto replaced')
  t.equal(x.headers['x-forwarded-host'], host, 'its X-Forwarded-Host replaced')
  t.notOk('x_forwarded_host' in x.headers, 'a header name with _ is dropped')
})

t.test('hop-by-hop response headers the guide lists are dropped, and anything Connection lists; a 204 loses Content-Length', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const listed = /Hop-by-hop response headers \(([^)]*)\)/.exec(guide)
  const names = [...(listed?.[1] ?? '').matchAll(/`([A-Za-z-]+)`/g)].map((m) => m[1])
  t.same(names, ['Connection', 'Keep-Alive', 'Transfer-Encoding', 'Upgrade', 'Trailer', 'Connection'], 'the list in the guide')
  const be = await rawBackend(t, (sock) => {
    let got = ''
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1')
      if (!got.includes('\r\n\r\n')) return
      sock.end(got.startsWith('GET /204')
        ? 'HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-Kept: 1\r\n\r\n'
        : 'HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=99\r\nUpgrade: h2c\r\nTrailer: X-T\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok')
    })
  })
  const { s } = await serveKilled(t, configFile(t, { routes: [{ protocol: 'http', backends: [be.address] }] }))
  const port = Number(new URL(s.url).port)
  const raw = await rawRequest(port, 'GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
  const head = raw.slice(0, raw.indexOf('\r\n\r\n')).toLowerCase()
  t.match(head, /^http\/1\.1 200 /)
  t.match(head, /\r\nx-kept: 1/, 'an end-to-end header passes')
  t.notMatch(head, /x-secret/, 'a header Connection lists is dropped')
  t.notMatch(head, /timeout=99/, 'the backend\'s Keep-Alive is dropped')
  t.notMatch(head, /\r\nupgrade:/, 'Upgrade is dropped')
  t.notMatch(head, /\r\ntrailer:/, 'Trailer is dropped')
  t.equal(raw.slice(raw.indexOf('\r\n\r\n') + 4), 'ok')
  const r204 = await rawRequest(port, 'GET /204 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
  t.match(r204, /^HTTP\/1\.1 204 /)
  t.notMatch(r204.toLowerCase(), /content-length/, 'a 204 has no Content-Length')
  t.match(r204.toLowerCase(), /x-kept: 1/)
})

t.test('timeouts.headers as a bare number (milliseconds): 504 ERR_HEADERS_TIMEOUT', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  t.match(guide, /Durations are numbers \(ms\) or strings: `200`, `"30s"`, `"2m"`\./)
  const be = await rawBackend(t, () => {})
  const { s } = await serveKilled(t, configFile(t, { routes: [{ protocol: 'http', backends: [be.address], timeouts: { headers: 200 } }] }))
  const at = Date.now()
  const r = await get(`${s.url}/`)
  const ms = Date.now() - at
  t.equal(r.status, 504)
  t.match(r.body.toString(), /ERR_HEADERS_TIMEOUT/)
  t.ok(ms >= 150 && ms < 5000, `answered after ${ms} ms (200 ms timeout)`)
})

t.test('the defaults the guide states are the schema\'s', async (t) => {
  const schema = JSON.parse(readFileSync(join(root, 'schema/proxycore.schema.json'), 'utf8')) as { properties: { routes: { items: { properties: Record<string, { default?: unknown, properties?: Record<string, { default?: unknown }> }> } } } }
  const route = schema.properties.routes.items.properties
  const timeouts = route.timeouts.properties ?? {}
  // | `timeouts.connect` | 5s | ...
  const rows = [...guide.matchAll(/^\| `timeouts\.([a-zA-Z]+)` \| ([^ |]+) \|/gm)]
  t.same(rows.map((m) => m[1]), ['connect', 'headers', 'idle', 'clientIdle', 'tunnel'], 'the timeouts table')
  for (const [, key, def] of rows) t.equal(String(timeouts[key]?.default), def, `timeouts.${key} defaults to ${def}`)
  t.match(guide, /`timeouts\.minUploadRate` \(500 bytes\/s by default\)/)
  t.equal(String(timeouts.minUploadRate?.default), '500')
  t.match(guide, /`timeouts\.uploadGrace` \(60 s\)/)
  t.equal(timeouts.uploadGrace?.default, '60s')
  // The admission snippet's comments.
  const adm = yamlBlocks.find((b) => b.includes('maxConcurrent:')) ?? ''
  t.match(adm, /maxConcurrent: \d+ +# .*0 = unlimited, the default/)
  t.equal(route.maxConcurrent.default, 0)
  t.equal(String(route.queue.default), /queue: \d+ +# .*\(default (\d+)\)/.exec(adm)?.[1])
  t.equal(route.queueTimeout.default, /queueTimeout: \S+ +# .*\(default (\S+)\)/.exec(adm)?.[1])
  // Failover: disabled for `disableTime` (10s) ... up to `retries` (2) times.
  t.equal(route.disableTime.default, /\*\*disabled for `disableTime`\*\* \((\S+)\)/.exec(guide)?.[1])
  t.equal(route.retries.default, Number(/up to `retries` \((\d+)\) times/.exec(guide)?.[1]))
  // Keep-alive: `connections` (default 128) ... `keepAliveTimeout` (default `4s`).
  const http = httpOptionsSchema().properties
  t.equal(String(http.connections.default), /`connections` \(default (\d+)\)/.exec(guide)?.[1], 'options.connections')
  t.equal(http.keepAliveTimeout.default, /`keepAliveTimeout` \(default `([^`]+)`\)/.exec(guide)?.[1], 'options.keepAliveTimeout')
})

t.test('the status page\'s allow list uses the socket peer: forwarding headers never grant access, even from a trusted proxy', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  t.match(guide, /The status page's `allow` list always uses the socket peer: headers never grant access\./)
  const be = await echo(t, 'x')
  // 127.0.0.1 is trusted, so its X-Forwarded-For names the client for CGI, logs and sticky; the
  // status page lets in 10.0.0.0/8 only, and the test's peer is 127.0.0.1.
  const { s } = await serveKilled(t, configFile(t, { trustedProxies: ['127.0.0.1'], status: { path: '/server-status', allow: ['10.0.0.0/8'] }, routes: [{ protocol: 'http', backends: [be] }] }))
  t.equal((await seen(`${s.url}/x`, { 'x-forwarded-for': '10.0.0.1', 'x-forwarded-proto': 'https' })).headers['x-forwarded-proto'], 'https', 'the peer is trusted for forwarding')
  const spoofs: Array<Record<string, string>> = [{ 'x-forwarded-for': '10.0.0.1' }, { forwarded: 'for=10.0.0.1' }, { 'x-real-ip': '10.0.0.1' }]
  for (const headers of spoofs) {
    for (const path of ['/server-status', '/server-status?format=json', '/metrics']) {
      t.equal((await get(`${s.url}${path}`, { headers })).status, 403, `${path} with ${JSON.stringify(headers)}: 403`)
    }
  }
})

t.test('WebSockets through proxycore serve: an open tunnel holds its maxConcurrent slot; timeouts.tunnel closes an idle one and frees it', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  t.match(guide, /An open WebSocket holds its slot for as long as it stays open/)
  t.match(guide, /an open tunnel that carries no\s+byte in either direction for this long is closed, both sides, and its slot freed/)
  const be = await echo(t, 'ws')
  const { s } = await serveKilled(t, configFile(t, { routes: [{ match: { prefix: '/ws/' }, protocol: 'http', backends: [be], stripPrefix: true, maxConcurrent: 1, queue: 0, timeouts: { tunnel: 3000 } }] }))
  const base = s.url.replace('http:', 'ws:')
  const open = async (path: string): Promise<WebSocket> => {
    const ws = new WebSocket(`${base}${path}`)
    t.teardown(() => ws.terminate())
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
    return ws
  }
  const first = await open('/ws/a')
  const closed = new Promise<number>((resolve) => first.once('close', () => resolve(Date.now())))
  const reply = new Promise<string>((resolve) => first.once('message', (m: Buffer) => resolve(m.toString())))
  first.send('x')
  t.equal(await reply, '/a: x')
  const lastByte = Date.now()
  // While it is open, a second upgrade finds the slot taken and no queue: 503 with Retry-After.
  // (tunnel 3 s: at 500 ms a loaded machine could idle the first tunnel out before this upgrade.)
  const refused = await new Promise<{ status: number, retryAfter: string | undefined }>((resolve, reject) => {
    const ws = new WebSocket(`${base}/ws/b`)
    ws.on('unexpected-response', (_req, res) => { res.resume(); resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] as string | undefined }); ws.terminate() })
    ws.on('open', () => { ws.terminate(); reject(new Error('a second tunnel opened past maxConcurrent: 1')) })
    ws.on('error', () => {})
  })
  t.equal(refused.status, 503, 'the second upgrade: 503')
  t.ok(refused.retryAfter !== undefined, 'with Retry-After')
  const at = await closed
  t.ok(at - lastByte >= 2500 && at - lastByte < 10_000, `the idle tunnel closed ${at - lastByte} ms after its last byte (timeouts.tunnel: 3000)`)
  const third = await open('/ws/c')
  t.pass('its slot is free again: a third upgrade opens')
  third.close()
})

t.test('the hostile-backend table\'s interim rows, through proxycore serve: a 100 or a 102 is skipped, the response intact on one connection', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const row = (what: string): string => new RegExp(`^\\| sends ${what}[^|]*\\| ([^|]+) \\|$`, 'm').exec(guide)?.[1] ?? ''
  t.match(row('`100 Continue`'), /^nothing, as for `102`; the response follows intact, on the same backend connection\./)
  t.match(row('another 1xx \\(`102 Processing`\\)'), /^nothing; the response follows intact$/)
  t.match(guide, /nginx 1\.22\.1, measured here with a backend that sends `100 Continue`/)
  const be = await rawBackend(t, (sock: Socket) => {
    let got = ''
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1')
      const end = got.indexOf('\r\n\r\n')
      if (end < 0) return
      const interim = got.startsWith('GET /102') ? 'HTTP/1.1 102 Processing\r\n\r\n' : 'HTTP/1.1 100 Continue\r\n\r\n'
      got = got.slice(end + 4)
      sock.write(`${interim}HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal`)
    })
  })
  const { s } = await serveKilled(t, configFile(t, { routes: [{ protocol: 'http', backends: [be.address] }] }))
  const port = Number(new URL(s.url).port)
  for (const path of ['/100', '/102', '/100']) {
    const raw = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`)
    t.match(raw, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nfinal$/, `${path}: the 200 alone`)
  }
  t.equal(be.sockets.length, 1, 'one backend connection for the three')
})

t.test('the Upgrade refusals the guide lists, through proxycore serve: a 101 without Upgrade, a request with a body (curl --http2 -d)', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const no101 = /\*\*A `101` without an `Upgrade` field\*\*[^]*?`(\d{3}) (ERR_[A-Z_]+)`/.exec(guide)
  const body = /\*\*An Upgrade request with a body\*\*[^]*?`(\d{3})\s+(ERR_[A-Z_]+)`/.exec(guide)
  t.same([no101?.slice(1), body?.slice(1)], [['502', 'ERR_UPGRADE_FAILED'], ['400', 'ERR_BAD_REQUEST']], 'the guide\'s statuses and codes')
  let posts = 0
  const be = createServer((req, res) => { posts++; let n = 0; req.on('data', (d: Buffer) => { n += d.length }); req.on('end', () => res.end(`read ${n}`)) })
  be.on('upgrade', (_req, sock: Socket) => { sock.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n') })
  const port = await listen(be, t)
  const { s } = await serveKilled(t, configFile(t, { routes: [{ protocol: 'http', backends: [`127.0.0.1:${port}`] }] }))
  const up = await rawRequest(Number(new URL(s.url).port), 'GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  t.match(up, new RegExp(`^HTTP/1\\.1 ${no101?.[1] ?? ''} [^]*\\r\\nconnection: close\\r\\n[^]*\\n${no101?.[2] ?? ''}\\n$`), 'a 101 without Upgrade: the status, the code in the body')
  if (!havePeer(t, '/usr/bin/curl')) return
  const curl = (args: string[]): Promise<string> => new Promise((resolve, reject) => {
    execFile('/usr/bin/curl', ['-sS', '-w', ' %{http_code}', ...args, `${s.url}/form`], { timeout: 10_000 }, (err, stdout) => { if (err !== null) reject(err); else resolve(stdout) })
  })
  // `curl --http2 -d hello`: an h2c upgrade carrying its POST body.
  const h2c = await curl(['--http2', '-d', 'hello'])
  if (await probeShouldUpgrade()) {
    // Node >= 22.21 / 24.9: the guide's "Upgrades a route cannot carry", a plain POST.
    t.equal(h2c, 'read 5 200', 'curl --http2 -d: a plain POST, its 5 bytes read')
    t.equal(posts, 1, 'the backend saw it once')
  } else {
    t.match(h2c, new RegExp(`^${body?.[1] ?? ''} [^\\n]*\\n${body?.[2] ?? ''}\\n ${body?.[1] ?? ''}$`), 'curl --http2 -d: refused with the status and code the guide says')
    t.equal(posts, 0, 'the backend never saw it')
  }
  t.equal(await curl(['-d', 'hello']), 'read 5 200', 'without --http2, the POST and its 5 bytes go through')
})
