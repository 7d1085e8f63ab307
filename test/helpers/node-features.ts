/**
 * What the running node:http can do, probed by feature rather than by version number.
 */
import { createServer, type ServerOptions } from 'node:http'
import type { Duplex } from 'node:stream'
import { Raw } from './raw-client.js'
import { closeServer, listen } from './servers.js'

/**
 * Does this node:http take `shouldUpgradeCallback` (Node >= 22.21 / 24.9; Node 20 ignores it)? A
 * server that refuses every upgrade with it, and one Upgrade request: does it reach 'request'?
 */
export async function probeShouldUpgrade (): Promise<boolean> {
  let plain = false
  const server = createServer({ shouldUpgradeCallback: () => false } as ServerOptions, (_req, res) => { plain = true; res.end('plain') })
  server.on('upgrade', (_req, socket: Duplex) => { socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n') })
  const port = await listen(server)
  const r = new Raw(port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: probe\r\n\r\n')
  await r.answered(10_000)
  r.socket.destroy()
  await closeServer(server)
  return plain
}
