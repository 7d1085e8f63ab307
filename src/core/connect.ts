/**
 * The one way adapters open stream connections: with the route's connect timeout, errors mapped to
 * stable codes (ERR_CONNECT_REFUSED / _TIMEOUT / _FAILED, phase 'connect' so the core may fail over).
 */
import { Socket, type SocketConstructorOpts } from 'node:net'
import { ProxyError, fromSocketError } from './errors.js'
import type { Endpoint } from './types.js'

/**
 * Readable high-water mark of backend sockets. Node's default (16 KiB on Node 20) is below one
 * 64 KiB read, so every large read stops the handle (epoll_ctl) and the reader's next `read()`
 * starts it again (epoll_ctl): undici reads in paused mode, and strace showed 1.4 epoll_ctl per
 * 64 KiB response. 256 KiB lets a socket carry a few reads; it is also the most one paused
 * backend connection buffers in the process before the kernel's receive window takes over.
 */
export const BACKEND_READ_HIGH_WATER_MARK = 256 * 1024

/**
 * The options of every backend socket, one constant object that already has every property
 * net.Socket's constructor sets on its copy of it.
 *
 * The constructor copies its options (`{ ...options }`) and then adds `allowHalfOpen`,
 * `emitClose`, `autoDestroy` and `decodeStrings` to the copy. On Node 20's V8, adding a property
 * to a spread copy of a non-empty object does not follow a cached map transition: each socket
 * paid ~5.8 µs for it (0.3 µs when the properties are already there, as here), and the socket's
 * objects outlived two scavenges, ~390 B promoted to the old generation per socket (0 here).
 * SCGI opens a socket per request. The four values are the ones the constructor forces anyway;
 * `test/component/connect.test.ts` checks that the constructor still adds no other property.
 * net.Socket hands the options to stream.Duplex; @types/node only lists the socket's own.
 */
export const SOCKET_OPTIONS: SocketConstructorOpts & { readableHighWaterMark: number, emitClose: boolean, autoDestroy: boolean, decodeStrings: boolean } = {
  allowHalfOpen: false,
  emitClose: false,
  autoDestroy: true,
  decodeStrings: false,
  readableHighWaterMark: BACKEND_READ_HIGH_WATER_MARK,
}

export function connectEndpoint (endpoint: Endpoint, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (endpoint.kind === 'process') {
      reject(new ProxyError('ERR_CONNECT_FAILED', `${endpoint.id} is not a socket endpoint`, { phase: 'connect', backend: endpoint.id }))
      return
    }
    const socket = new Socket(SOCKET_OPTIONS)
    if (endpoint.kind === 'unix') socket.connect({ path: endpoint.path })
    else socket.connect({ host: endpoint.host, port: endpoint.port, noDelay: true })
    let timer: NodeJS.Timeout | null = null
    const onError = (err: NodeJS.ErrnoException): void => {
      if (timer !== null) clearTimeout(timer)
      socket.destroy()
      reject(fromSocketError(err, 'connect', endpoint.id))
    }
    // on(), each removed by hand: once() wraps its listener in two more objects per connection
    // (~300 B per SCGI request, one connection each: bench --allocations).
    const onConnect = (): void => {
      if (timer !== null) clearTimeout(timer)
      socket.removeListener('error', onError)
      socket.removeListener('connect', onConnect)
      resolve(socket)
    }
    socket.on('error', onError)
    socket.on('connect', onConnect)
    if (timeoutMs > 0) {
      timer = setTimeout(() => {
        socket.destroy()
        reject(new ProxyError('ERR_CONNECT_TIMEOUT', `${timeoutMs} ms`, { phase: 'connect', backend: endpoint.id }))
      }, timeoutMs)
    }
  })
}
