/**
 * An Upgrade request passes the same gates as any request before it is tunnelled (nginx and
 * lighttpd run access and auth before proxying): the route's FastCGI authorizer (real php-cgi) and
 * its admission limit. The backend is a real `ws` server whose node:http side also answers plain
 * requests, so an ungated upgrade would reach it either way.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { WebSocket } from 'ws'
import { havePeer } from '../fastcgi/helpers/peers.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { wsBackend } from '../helpers/ws-backend.js'
import { get, proxyServer, rawRequest } from '../helpers/servers.js'

const PHP = '/usr/bin/php-cgi'

interface Tap { teardown (fn: () => unknown): void }


/** An authorizer that lets `X-Token: secret` through and tells what it saw when it denies. */
function authScript (t: Tap): string {
  const root = mkdtempSync(join(tmpdir(), 'pc-upauthz-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  writeFileSync(join(root, 'auth.php'), `<?php
if (getenv('FCGI_ROLE') !== 'AUTHORIZER') { http_response_code(500); echo 'not called as authorizer'; exit; }
if (($_SERVER['HTTP_X_TOKEN'] ?? '') === 'secret') {
  header('Variable-USER_ROLE: admin');
  echo 'ignored body';
} else {
  http_response_code(401);
  header('WWW-Authenticate: Token');
  header('Variable-LEAK: no');
  echo 'denied ', $_SERVER['REQUEST_METHOD'], ' ', $_SERVER['REQUEST_URI'], ' from ', $_SERVER['REMOTE_ADDR'];
}`)
  return root
}

function open (url: string, token: string): Promise<{ ws: WebSocket, first: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { 'x-token': token } })
    ws.once('message', (d) => resolve({ ws, first: d.toString() }))
    ws.once('error', reject)
  })
}

function closeWs (ws: WebSocket): Promise<void> {
  return new Promise((resolve) => { ws.once('close', () => resolve()); ws.close() })
}

const UPGRADE = (path: string, token: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n` +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Token: ${token}\r\n\r\n`

const SWITCHED = /^HTTP\/1\.1 101 /

if (havePeer(t, PHP)) {
  guardLeaks(t, { timeoutMs: 10_000 })

  t.test('a denied Upgrade gets the authorizer answer on the raw socket, which then closes', async (t) => {
    const root = authScript(t)
    const be = await wsBackend(t)
    const { port } = await proxyServer(t, {
      spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } },
      routes: [{ match: { prefix: '/ws/' }, protocol: 'http', backends: [be.address], authorizer: { spawn: 'php', scriptFilename: join(root, 'auth.php') } }],
    })
    // rawRequest resolves when the proxy closes the socket (or at once on a 101: the bug).
    const raw = await rawRequest(port, UPGRADE('/ws/chat?room=1', 'wrong'), SWITCHED)
    const end = raw.indexOf('\r\n\r\n')
    const head = raw.slice(0, end + 2)
    const body = raw.slice(end + 4)
    t.match(head, /^HTTP\/1\.1 401 /, raw)
    t.match(head, /\r\nWWW-Authenticate: Token\r\n/i, 'the authorizer headers go to the client')
    t.match(head, /\r\nConnection: close\r\n/i)
    t.notMatch(head, /variable-leak/i, 'Variable-* never reaches the client')
    t.match(head, /\r\nTransfer-Encoding: chunked\r\n/i, 'framed by node:http')
    const text = 'denied GET /ws/chat?room=1 from 127.0.0.1'
    t.equal(body, `${text.length.toString(16)}\r\n${text}\r\n0\r\n\r\n`, 'the authorizer saw the request variables; its body is the whole answer')
    t.equal(be.sockets.length, 0, 'the backend never saw the upgrade')
    const refused = await open(`ws://127.0.0.1:${port}/ws/x`, 'wrong').then(({ ws }) => { ws.terminate(); return 'opened' }, (err: Error) => err.message)
    t.match(refused, /401/, 'a ws client is refused the same way')
    t.equal(be.sockets.length, 0)
  })

  t.test('an allowed Upgrade is tunnelled', async (t) => {
    const root = authScript(t)
    const be = await wsBackend(t)
    const { port } = await proxyServer(t, {
      spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } },
      routes: [{ match: { prefix: '/ws/' }, protocol: 'http', backends: [be.address], authorizer: { spawn: 'php', scriptFilename: join(root, 'auth.php') } }],
    })
    const { ws, first } = await open(`ws://127.0.0.1:${port}/ws/chat?room=1`, 'secret')
    t.equal(first, 'hello /ws/chat?room=1')
    const echoed = new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString())))
    ws.send('ping')
    t.equal(await echoed, 'ping')
    await closeWs(ws)
  })

  t.test('an open tunnel holds an admission slot; upgrades queue like requests', async (t) => {
    const root = authScript(t)
    const be = await wsBackend(t)
    const { port, url, proxy } = await proxyServer(t, {
      spawns: { php: { binPath: PHP, socketName: join(root, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' } },
      routes: [{
        match: { prefix: '/ws/' }, protocol: 'http', backends: [be.address], maxConcurrent: 1, queue: 1,
        authorizer: { spawn: 'php', scriptFilename: join(root, 'auth.php') },
      }],
    })
    const admission = proxy.routes[0].admission
    const a = await open(`ws://127.0.0.1:${port}/ws/a`, 'secret')
    t.equal(admission.active, 1, 'the open tunnel holds the slot')
    let bOpen = false
    const b = open(`ws://127.0.0.1:${port}/ws/b`, 'secret').then((r) => { bOpen = true; return r })
    t.ok(await waitFor(() => admission.queued === 1, 5000), 'B waits in the queue')
    const third = await get(`${url}/ws/plain`, { headers: { 'x-token': 'secret' } })
    t.equal(third.status, 503, 'a third exchange finds the queue full')
    t.match(third.body.toString(), /ERR_QUEUE_FULL/)
    const fourth = await rawRequest(port, UPGRADE('/ws/c', 'secret'), SWITCHED)
    t.match(fourth, /^HTTP\/1\.1 503 [^]*\r\nretry-after: \d+\r\n/i, 'so does an upgrade, with Retry-After')
    t.notOk(bOpen, 'B is not tunnelled while A holds the slot')
    t.equal(be.sockets.length, 1)
    await closeWs(a.ws)
    const { ws, first } = await b
    t.equal(first, 'hello /ws/b', 'B gets the slot once A closes')
    await closeWs(ws)
    t.ok(await waitFor(() => admission.active === 0, 5000), 'the slot is released when the tunnel closes')
    t.equal((await get(`${url}/ws/plain`, { headers: { 'x-token': 'secret' } })).status, 200)
  })

  t.test('an unreachable authorizer fails an Upgrade closed', async (t) => {
    const be = await wsBackend(t)
    const { port } = await proxyServer(t, {
      routes: [{ match: { prefix: '/ws/' }, protocol: 'http', backends: [be.address], authorizer: { backends: ['127.0.0.1:1'] } }],
    })
    const raw = await rawRequest(port, UPGRADE('/ws/x', 'secret'), SWITCHED)
    t.match(raw, /^HTTP\/1\.1 502 /, raw)
    t.equal(be.sockets.length, 0, 'the backend never saw the upgrade')
  })
}
