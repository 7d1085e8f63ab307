/**
 * Loopback servers for tests: a proxy in front of backends, with teardown that closes everything
 * (keep-alive sockets included) so the leak oracle sees a clean fd table.
 */
import { createServer, request, type IncomingHttpHeaders, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http'
import { connect, createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { createProxy, silentLogger, type CreateProxyOptions, type Proxy } from '../../src/index.js'

interface Tap { teardown (fn: () => void | Promise<void>): void }

/**
 * `port` 0 (the default) lets the kernel pick. A backend that a test stops and then expects to be
 * refused (or binds again) takes a port from freePort() (helpers/ports.ts) instead: once closed, a
 * kernel-picked port may go to the next listen(0) of any test running alongside.
 */
export async function listen (server: Server | NetServer, t?: Tap, port = 0): Promise<number> {
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  if (t !== undefined) t.teardown(() => closeServer(server))
  return (server.address() as AddressInfo).port
}

export async function closeServer (server: Server | NetServer): Promise<void> {
  const s = server as Server
  if (typeof s.closeAllConnections === 'function') s.closeAllConnections()
  await new Promise<void>((resolve) => server.close(() => resolve()))
}

/** A node:http backend (`port`: see listen). */
export async function backend (t: Tap, fn: RequestListener, port = 0): Promise<{ server: Server, port: number, address: string }> {
  const server = createServer(fn)
  const bound = await listen(server, t, port)
  return { server, port: bound, address: `127.0.0.1:${bound}` }
}

/** A node:http backend whose 'upgrade' listener gets the raw socket (a generic Upgrade protocol); plain requests get `plain`. */
export async function upgradeBackend (t: Tap, fn: (req: IncomingMessage, socket: Duplex, head: Buffer) => void): Promise<{ address: string, sockets: Duplex[] }> {
  const server = createServer((_req, res) => res.end('plain'))
  const sockets: Duplex[] = []
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => { sockets.push(socket); socket.on('error', () => {}); fn(req, socket, head) })
  const port = await listen(server)
  t.teardown(async () => { for (const s of sockets) s.destroy(); await closeServer(server) })
  return { address: `127.0.0.1:${port}`, sockets }
}

/** A raw TCP backend for faults a real peer cannot produce: `fn` gets every accepted socket. */
export async function rawBackend (t: Tap, fn: (socket: Socket) => void): Promise<{ server: NetServer, port: number, address: string, sockets: Socket[] }> {
  const sockets: Socket[] = []
  const server = createNetServer((s) => { sockets.push(s); s.on('error', () => {}); fn(s) })
  const port = await listen(server)
  t.teardown(async () => { for (const s of sockets) s.destroy(); await closeServer(server) })
  return { server, port, address: `127.0.0.1:${port}`, sockets }
}

/**
 * For a raw backend: calls `fn(method, path)` for each request head the socket receives (requests
 * without a body), in order, however the bytes are split.
 */
export function eachRequestHead (sock: Socket, fn: (method: string, path: string) => void): void {
  let buf = ''
  sock.on('data', (d: Buffer) => {
    buf += d.toString('latin1')
    for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
      const [method = '', path = ''] = buf.slice(0, end).split(' ')
      buf = buf.slice(end + 4)
      fn(method, path)
    }
  })
}

/** createProxy + a node:http server on loopback; closed at teardown. */
export async function proxyServer (t: Tap, config: CreateProxyOptions): Promise<{ proxy: Proxy, server: Server, port: number, url: string }> {
  const proxy = await createProxy({ logger: silentLogger, ...config })
  const server = createServer(proxy.handler)
  server.on('upgrade', proxy.upgrade)
  server.on('connect', proxy.connect)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  return { proxy, server, port, url: `http://127.0.0.1:${port}` }
}

export interface Got { status: number, headers: IncomingHttpHeaders, body: Buffer, trailers: NodeJS.Dict<string>, rawHeaders: string[] }

/** One request without keep-alive (no pooled socket outlives the test); `socketPath`: over a unix socket. */
export function get (url: string, opts: { method?: string, headers?: Record<string, string | string[]>, body?: string | Buffer, socketPath?: string } = {}): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false, ...(opts.socketPath !== undefined ? { socketPath: opts.socketPath } : {}) }, (res: IncomingMessage) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), trailers: res.trailers, rawHeaders: res.rawHeaders }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** Send raw bytes, collect everything until the server closes (or `until` matches). */
export function rawRequest (port: number, bytes: string | Buffer, until?: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port })
    let out = ''
    s.on('data', (d: Buffer) => { out += d.toString('latin1'); if (until?.test(out)) s.destroy() })
    s.on('close', () => resolve(out))
    s.on('error', reject)
    s.write(bytes)
  })
}

export type { ServerResponse }
