/**
 * An Upgrade on a `stripPrefix` route (src/core/upgrade.ts): what the backend says about its own
 * paths comes back mapped to the client's view, as for any request (guides/http-and-websockets.md,
 * "Paths: stripPrefix and what comes back"): a plain answer's `Location` (a WebSocket endpoint that
 * redirects to a login page) and `Set-Cookie` Path, and a 101's `Set-Cookie` Path. Real peers: a
 * node:http backend without an 'upgrade' listener (node:http answers the Upgrade as a request) and
 * a `ws` server that sets a cookie in its handshake.
 */
import t from 'tap'
import { createServer, type IncomingMessage } from 'node:http'
import { WebSocket, WebSocketServer } from 'ws'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, closeServer, get, listen, proxyServer } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

/** The answer a `ws` client gets to its handshake when it is not a 101. */
function refusedWith (url: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { followRedirects: false })
    ws.once('unexpected-response', (_req, res) => { res.resume(); resolve(res); ws.terminate() })
    ws.once('open', () => { ws.terminate(); reject(new Error('opened')) })
    ws.once('error', () => {})
  })
}

t.test('a plain answer to an Upgrade: Location and Set-Cookie Path mapped back, as for a plain request', async (t) => {
  const paths: string[] = []
  const be = await backend(t, (req, res) => {
    paths.push(req.url ?? '')
    res.writeHead(302, { location: '/login?next=/chat', 'set-cookie': 'sid=1; Path=/; HttpOnly' })
    res.end('to the login page')
  })
  const { port } = await proxyServer(t, { routes: [{ match: { prefix: '/ws/' }, stripPrefix: true, protocol: 'http', backends: [be.address] }] })
  const plain = await get(`http://127.0.0.1:${port}/ws/chat`)
  t.equal(plain.headers.location, '/ws/login?next=/chat', 'a plain request: Location mapped back (the reference)')
  const res = await refusedWith(`ws://127.0.0.1:${port}/ws/chat`)
  t.same(paths, ['/chat', '/chat'], 'the backend saw both without the prefix')
  t.equal(res.statusCode, 302)
  t.equal(res.headers.location, '/ws/login?next=/chat', 'the Upgrade\'s 302: Location mapped back')
  t.same(res.headers['set-cookie'], ['sid=1; Path=/ws/; HttpOnly'], 'and its Set-Cookie Path')
})

t.test('a 101: Set-Cookie Path mapped back, and the tunnel works', async (t) => {
  const server = createServer((_req, res) => res.end('plain'))
  const wss = new WebSocketServer({ server })
  const sockets: WebSocket[] = []
  wss.on('headers', (headers) => { headers.push('Set-Cookie: ws=1; Path=/chat') })
  wss.on('connection', (ws) => { sockets.push(ws); ws.on('message', (d, binary) => ws.send(d, { binary })) })
  const bePort = await listen(server)
  t.teardown(async () => { for (const s of sockets) s.terminate(); wss.close(); await closeServer(server) })
  const { port } = await proxyServer(t, { routes: [{ match: { prefix: '/ws/' }, stripPrefix: true, protocol: 'http', backends: [`127.0.0.1:${bePort}`] }] })
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`)
  const opened = new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  const upgrade = await new Promise<IncomingMessage>((resolve) => ws.once('upgrade', resolve))
  await opened
  t.same(upgrade.headers['set-cookie'], ['ws=1; Path=/ws/chat'], 'the 101\'s Set-Cookie Path mapped back')
  ws.send('ping')
  const [echo] = await new Promise<[Buffer]>((resolve) => ws.once('message', (...a) => resolve(a as unknown as [Buffer])))
  t.equal(echo.toString(), 'ping', 'the tunnel carries messages')
  await new Promise<void>((resolve) => { ws.once('close', () => resolve()); ws.close() })
})
