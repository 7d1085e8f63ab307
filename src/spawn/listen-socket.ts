/**
 * Binding a listening socket in the host and handing it to a child (as fd 0 for FastCGI, or fd 3
 * for systemd socket activation). This is the one module that touches Node internals
 * (`server._handle.fd`); everything else sees `BoundSocket`.
 *
 * Why each step is the way it is:
 * - Node has no public "bind without accepting" call, so the host listens through a `net.Server`
 *   and must stop watching the fd before anything can connect: `handOff()` spawns and drops the
 *   host's copy in the same synchronous block. That also matters because libuv clears O_NONBLOCK
 *   on fds 0-2 of the child, and the file description is shared: a host still polling the fd
 *   could block its event loop in accept(2).
 * - libuv unlinks a unix socket path when the listening handle closes (uv__pipe_close). The host
 *   therefore binds a private temporary name and renames it onto the operator's path before it
 *   closes its copy, so a socket file is never unlinked while a child listens on it.
 * - That private name lies in a fresh directory of its own (root's, mode 0700) next to the
 *   operator's path. The socket's owner and mode are set there, where nobody else can swap the
 *   file for a symlink: chown and chmod follow symlinks, and root chowning a path in a directory a
 *   tenant can write would hand the tenant any file it links there (spawn-fcgi and php-fpm set them
 *   on a socket nobody else can reach, too).
 */
import net from 'node:net'
import { closeSync, constants as fsConstants, lstatSync, mkdtempSync, openSync, renameSync, rmSync, unlinkSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { SpawnAddress } from './types.js'
import { spawnError } from './types.js'
import { formatAddress } from './spec.js'

export interface BoundSocket {
  /** The address actually bound (port 0 resolved). */
  readonly address: SpawnAddress
  /**
   * Run `start(fd)` (which must spawn synchronously, passing `fd` in its stdio), then drop the
   * host's copy of the socket in the same tick. `beforePublish` sees a unix socket under its
   * private name, before it appears at the operator's path. Returns what `start` returned.
   */
  handOff<T> (start: (fd: number) => T, beforePublish?: (path: string) => void): T
  /** Drop the socket without handing it off (error paths); unlinks a unix path we created. */
  close (): void
}

let tmpSeq = 0

/** The longest unix socket path: sun_path holds 108 bytes with the terminating NUL. */
export const UNIX_PATH_MAX = 107

/**
 * ERR_SPAWN_BAD_ADDRESS for a unix socket path nothing can be bound at or connected to: a failed
 * start at once, rather than a bind error (older libuv bound a truncated name) or, with handoff
 * self, a program that cannot bind and a wait for startTimeout.
 */
export function checkUnixPath (path: string): void {
  const bytes = Buffer.byteLength(path)
  if (bytes > UNIX_PATH_MAX) throw spawnError('ERR_SPAWN_BAD_ADDRESS', `socketName unix:${path}: ${bytes} bytes, longer than the ${UNIX_PATH_MAX} bytes a unix socket path can have (sun_path)`)
}

/**
 * Is something accepting connections at `addr`? Resolves false on refusal, absence or timeout.
 *
 * The timeout is the backend's, not the proxy's: after the proxy's own event loop stalled past it
 * (a busy moment, a long GC), the timer runs before the I/O poll that would report the connect
 * made meanwhile, so it waits that one poll (setImmediate runs after it) before calling the probe
 * failed. Two such stalls in a row stopped a healthy backend as unhealthy.
 */
export function probeConnect (addr: SpawnAddress, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = addr.kind === 'unix' ? net.connect(addr.path) : net.connect(addr.port, addr.host)
    let settled = false
    const done = (ok: boolean): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      sock.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => setImmediate(done, false), timeoutMs)
    sock.once('connect', () => done(true))
    sock.once('error', () => done(false))
  })
}

/**
 * Remove a stale unix socket file left by a dead process (lighttpd gw_spawn_connection: connect
 * first; only a refused path is stale). A live listener is an error, never unlinked.
 */
export async function removeStaleUnixSocket (path: string): Promise<void> {
  let st
  try { st = lstatSync(path) } catch { return }
  // Only a socket is ever unlinked: a file, a symlink or a directory there is the operator's.
  if (!st.isSocket()) throw spawnError('ERR_SPAWN_BIND', `unix:${path} exists and is not a socket`)
  if (await probeConnect({ kind: 'unix', path }, 1000)) {
    throw spawnError('ERR_SPAWN_ADDRESS_IN_USE', `unix:${path} is in use by a process this manager does not own`)
  }
  try { unlinkSync(path) } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
}

/**
 * handoff self, after the readiness probe connected: the path must be a socket (not a symlink)
 * owned by `uid`, the uid the program runs as. Anything else means another process bound the name
 * before the program did (the proxy would send it the site's requests): a failed start. The probe
 * only connected and closed; no request reached it. ERR_SPAWN_SOCKET_NOT_OWNED.
 */
export function verifySelfBoundSocket (path: string, uid: number): void {
  const refuse = (why: string): never => {
    throw spawnError('ERR_SPAWN_SOCKET_NOT_OWNED', `ERR_SPAWN_SOCKET_NOT_OWNED: unix:${path} ${why}; with handoff self the program must bind it itself, so another process took the name first or replaced it. Nothing was routed to it; stop that process (ss -xlp shows it) and keep the socket in a directory only the spawn's user can write`)
  }
  let st
  try { st = lstatSync(path) } catch (err) {
    return refuse(`is gone after the readiness probe connected (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
  if (!st.isSocket()) refuse(`is not a socket (${st.isSymbolicLink() ? 'a symlink' : 'another kind of file'})`)
  if (st.uid !== uid) refuse(`is owned by uid ${st.uid}, not uid ${uid} the program runs as`)
}

function listen (server: net.Server, opts: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => { server.off('listening', onListening); reject(err) }
    const onListening = (): void => { server.off('error', onError); resolve() }
    server.once('error', onError)
    server.once('listening', onListening)
    server.listen(opts)
  })
}

function handleFd (server: net.Server): number {
  // Node internal: the libuv stream handle exposes its fd on Unix.
  const fd = (server as unknown as { _handle?: { fd?: unknown } })._handle?.fd
  if (typeof fd !== 'number' || fd < 0) throw spawnError('ERR_SPAWN_FAILED', 'listening socket has no file descriptor')
  return fd
}

/** Bind and listen at `addr` (port 0 = ephemeral). Unix: stale files are removed first. */
export async function bindListenSocket (addr: SpawnAddress, backlog = 1024): Promise<BoundSocket> {
  // Nothing should connect before hand-off; if something does, refuse it rather than hold it.
  const server = net.createServer({ pauseOnConnect: true }, (sock) => sock.destroy())
  let bound: SpawnAddress
  let tmpPath: string | null = null
  let tmpDir: string | null = null
  let tmpDirFd: number | null = null
  // After server.close(): libuv unlinks the name it bound, through this fd (see below).
  const dropTmpDir = (): void => {
    if (tmpDirFd !== null) { try { closeSync(tmpDirFd) } catch {} tmpDirFd = null }
    if (tmpDir !== null) { try { rmSync(tmpDir, { recursive: true, force: true }) } catch {} tmpDir = null }
  }
  try {
    if (addr.kind === 'unix') {
      checkUnixPath(addr.path)
      await removeStaleUnixSocket(addr.path)
      tmpDir = mkdtempSync(join(dirname(addr.path), `.pc${++tmpSeq}-`))
      tmpPath = join(tmpDir, 's')
      // Bound through the directory's fd: sun_path holds 107 bytes, and the private name is longer
      // than an operator's path with a short last component (100 bytes + `.pcN-XXXXXX/s`), which
      // failed to bind (EINVAL) or, with an older libuv, was truncated and bound elsewhere.
      tmpDirFd = openSync(tmpDir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY)
      await listen(server, { path: `/proc/self/fd/${tmpDirFd}/s`, backlog })
      bound = addr
    } else {
      await listen(server, { host: addr.host, port: addr.port, backlog })
      const info = server.address() as net.AddressInfo
      bound = { kind: 'tcp', host: addr.host, port: info.port }
    }
  } catch (err) {
    server.close()
    dropTmpDir()
    const code = (err as NodeJS.ErrnoException).code
    if ((err as { code?: string }).code?.startsWith('ERR_SPAWN_') === true) throw err
    throw spawnError(code === 'EADDRINUSE' ? 'ERR_SPAWN_ADDRESS_IN_USE' : 'ERR_SPAWN_BIND', `cannot listen on ${formatAddress(addr)}: ${(err as Error).message}`, err)
  }
  let open = true
  const release = (): void => {
    if (!open) return
    open = false
    server.close()
    dropTmpDir()
  }
  return {
    address: bound,
    handOff<T> (start: (fd: number) => T, beforePublish?: (path: string) => void): T {
      if (!open) throw spawnError('ERR_SPAWN_FAILED', 'listening socket already handed off')
      try {
        const out = start(handleFd(server))
        if (tmpPath !== null && addr.kind === 'unix') {
          try {
            // Ownership and mode are set while the socket still has its private name.
            beforePublish?.(tmpPath)
            renameSync(tmpPath, addr.path)
          } catch (err) {
            // The child runs already: the caller must stop it (SpawnedProcess.start does).
            throw spawnError('ERR_SPAWN_BIND', `cannot publish the socket at unix:${addr.path}: ${(err as Error).message}`, err)
          }
        }
        return out
      } finally {
        release()
      }
    },
    close: release,
  }
}

/**
 * A free TCP port on `host`, for programs that bind their own socket (handoff 'self'). The kernel
 * picks it; the short window until the child binds is the usual price of self-binding programs.
 * `preferred` (a slot's remembered port): that one if it can be bound now, else a kernel pick.
 */
export async function freePort (host: string, preferred = 0): Promise<number> {
  let server = net.createServer()
  try {
    await listen(server, { host, port: preferred })
  } catch (err) {
    if (preferred === 0 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err
    server = net.createServer()
    await listen(server, { host, port: 0 })
  }
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}
