/**
 * WebSocket (and any Upgrade) tunnelled through the HTTP adapter, with `ws` as the real client and
 * the real backend; close and errors propagate both ways (AC-70 e).
 */
import t from 'tap'
import { createServer } from 'node:http'
import { WebSocket, WebSocketServer } from 'ws'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { closeServer, listen, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

async function wsBackend (t: { teardown (fn: () => unknown): void }) {
  const server = createServer((_req, res) => res.end('plain'))
  const wss = new WebSocketServer({ server })
  const sockets: WebSocket[] = []
  wss.on('connection', (ws, req) => {
    sockets.push(ws)
    ws.send(`hello ${req.url} xff=${req.headers['x-forwarded-for']}`)
    ws.on('message', (data, binary) => ws.send(data, { binary }))
  })
  const port = await listen(server)
  t.teardown(async () => { for (const s of sockets) s.terminate(); wss.close(); await closeServer(server) })
  return { address: `127.0.0.1:${port}`, sockets }
}

function open (url: string): Promise<{ ws: WebSocket, first: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.once('message', (d) => resolve({ ws, first: d.toString() }))
    ws.once('error', reject)
  })
}

t.test('messages flow both ways; text and binary; forwarding headers set', async (t) => {
  const be = await wsBackend(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const { ws, first } = await open(`ws://127.0.0.1:${port}/chat?room=1`)
  t.equal(first, 'hello /chat?room=1 xff=127.0.0.1')
  const echo = (data: string | Buffer): Promise<Buffer> => new Promise((resolve) => { ws.once('message', (d) => resolve(d as Buffer)); ws.send(data) })
  t.equal((await echo('ping')).toString(), 'ping')
  const big = Buffer.alloc(1024 * 1024, 7)
  t.ok((await echo(big)).equals(big), '1 MiB binary frame intact')
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
  ws.close(4001, 'bye')
  t.equal(await closed, 4001, 'close code reaches the client back')
  t.ok(await waitFor(() => be.sockets.every((s) => s.readyState === WebSocket.CLOSED), 2000), 'backend side closed')
})

t.test('backend going away closes the client', async (t) => {
  const be = await wsBackend(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const { ws } = await open(`ws://127.0.0.1:${port}/x`)
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()))
  be.sockets[0].terminate()
  await closed
  t.pass('client closed when the backend dropped')
})

t.test('client going away closes the backend', async (t) => {
  const be = await wsBackend(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const { ws } = await open(`ws://127.0.0.1:${port}/x`)
  ws.terminate()
  t.ok(await waitFor(() => be.sockets[0].readyState === WebSocket.CLOSED, 2000), 'backend socket closed')
})

t.test('upgrade to an unmatched route or a dead backend is refused cleanly', async (t) => {
  const { port } = await proxyServer(t, { routes: [{ match: { prefix: '/ws/' }, protocol: 'http', backends: ['127.0.0.1:1'] }] })
  await t.rejects(open(`ws://127.0.0.1:${port}/nope`), /404/)
  await t.rejects(open(`ws://127.0.0.1:${port}/ws/x`), /502/)
})
