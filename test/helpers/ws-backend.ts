/** A real `ws` backend for Upgrade tests: echoes every message, greets with `hello <url>` unless told not to. */
import { createServer } from 'node:http'
import { WebSocket, WebSocketServer } from 'ws'
import { closeServer, listen } from './servers.js'

interface Tap { teardown (fn: () => unknown): void }

export async function wsBackend (t: Tap, opts: { greet?: boolean } = {}): Promise<{ address: string, sockets: WebSocket[] }> {
  const server = createServer((_req, res) => res.end('plain'))
  const wss = new WebSocketServer({ server })
  const sockets: WebSocket[] = []
  wss.on('connection', (ws, req) => {
    sockets.push(ws)
    if (opts.greet !== false) ws.send(`hello ${req.url}`)
    ws.on('message', (data, binary) => ws.send(data, { binary }))
  })
  const port = await listen(server)
  t.teardown(async () => { for (const s of sockets) s.terminate(); wss.close(); await closeServer(server) })
  return { address: `127.0.0.1:${port}`, sockets }
}
