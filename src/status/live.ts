/**
 * The live view: a WebSocket at `<path>/live` that pushes a fresh snapshot every `intervalMs` and,
 * coalesced, soon after anything changes state (a backend disabled, a pool down, a process ready,
 * exited or FAILED). Messages are `{ type: 'snapshot', seq, snapshot }`; the server never reads
 * from clients.
 *
 * A slow client is skipped rather than queued for: a tick is dropped for a socket that still has
 * more than `maxBuffered` bytes unsent, so one stalled browser cannot grow the host's memory. A
 * client that stays that far behind for `stallMs` (it connected and stopped reading, or its network
 * went away without a FIN) is cut, so stuck clients do not keep a socket and `maxBuffered` bytes
 * each for ever.
 */
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { WebSocket } from 'ws'
import { lazy } from '../lazy.js'

const ws = lazy<typeof import('ws')>('ws')
import type { ProxyEventMap } from '../core/events.js'
import type { SpawnEvents } from '../spawn/types.js'
import type { StatusSnapshot, StatusTarget } from './model.js'

export interface LiveOptions {
  /** Push period, ms (default 1000). */
  intervalMs?: number
  /** Delay that coalesces a burst of state events into one push, ms (default 100). */
  coalesceMs?: number
  /** Unsent bytes above which a client misses a tick (default 1 MiB). */
  maxBuffered?: number
  /** How long a client may stay more than `maxBuffered` behind before it is cut, ms (default 30000). */
  stallMs?: number
  /**
   * Live clients at once (default 64); one more gets 503. Each may hold up to `maxBuffered` bytes
   * until `stallMs` cuts it, so without a cap an allowed peer opening thousands of sockets could
   * hold gigabytes.
   */
  maxClients?: number
}

const STATE_EVENTS = ['backend:disabled', 'backend:enabled', 'pool:down', 'pool:up'] as const satisfies ReadonlyArray<keyof ProxyEventMap>
const SPAWN_EVENTS = ['ready', 'exit', 'failed', 'restart', 'recycle'] as const satisfies ReadonlyArray<keyof SpawnEvents>

export class LiveView {
  private readonly wss = new (ws().WebSocketServer)({ noServer: true, maxPayload: 1024, perMessageDeflate: false })
  private readonly clients = new Set<WebSocket>()
  private tick: NodeJS.Timeout | null = null
  private soon: NodeJS.Timeout | null = null
  private seq = 0
  private closed = false
  private readonly intervalMs: number
  private readonly coalesceMs: number
  private readonly maxBuffered: number
  private readonly stallMs: number
  private readonly maxClients: number
  /** Clients over `maxBuffered`, and since when. */
  private readonly stalled = new Map<WebSocket, number>()

  constructor (private readonly proxy: StatusTarget, private readonly snapshot: () => StatusSnapshot, opts: LiveOptions = {}) {
    this.intervalMs = opts.intervalMs ?? 1000
    this.coalesceMs = opts.coalesceMs ?? 100
    this.maxBuffered = opts.maxBuffered ?? 1024 * 1024
    this.stallMs = opts.stallMs ?? 30_000
    this.maxClients = opts.maxClients ?? 64
    for (const e of STATE_EVENTS) proxy.events.on(e, this.changed)
    for (const e of SPAWN_EVENTS) proxy.spawns?.on(e, this.changed)
  }

  get size (): number { return this.clients.size }

  /** No room for one more client (`maxClients`). */
  get full (): boolean { return this.clients.size >= this.maxClients }

  /**
   * Take over an upgrade already checked for path, peer access and Origin (see handler.ts).
   * `opened` is called once the 101 handshake is written, before the first snapshot.
   */
  accept (req: IncomingMessage, socket: Duplex, head: Buffer, opened?: () => void): void {
    if (this.closed) { socket.destroy(); return }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      opened?.()
      this.clients.add(ws)
      ws.on('close', () => { this.clients.delete(ws); this.stalled.delete(ws); if (this.clients.size === 0) this.stopTick() })
      ws.on('error', () => ws.terminate())
      // Clients have nothing to say; a message is a misuse and ends the connection.
      ws.on('message', () => ws.close(1003, 'read-only'))
      this.send(ws, this.message())
      this.startTick()
    })
  }

  private readonly changed = (): void => {
    if (this.clients.size === 0 || this.soon !== null || this.closed) return
    this.soon = setTimeout(() => { this.soon = null; this.broadcast() }, this.coalesceMs)
  }

  private startTick (): void {
    if (this.tick !== null) return
    this.tick = setInterval(() => this.broadcast(), this.intervalMs)
  }

  private stopTick (): void {
    if (this.tick !== null) { clearInterval(this.tick); this.tick = null }
    if (this.soon !== null) { clearTimeout(this.soon); this.soon = null }
  }

  private message (): string {
    return JSON.stringify({ type: 'snapshot', seq: ++this.seq, snapshot: this.snapshot() })
  }

  /** Push one snapshot to every client now. */
  broadcast (): void {
    if (this.clients.size === 0) return
    const msg = this.message()
    for (const ws of this.clients) this.send(ws, msg)
  }

  private send (ws: WebSocket, msg: string): void {
    if (ws.readyState !== ws.OPEN) return
    if (ws.bufferedAmount > this.maxBuffered) {
      const now = Date.now()
      const since = this.stalled.get(ws)
      if (since === undefined) this.stalled.set(ws, now)
      // Checked at each push: a client that stopped reading is cut rather than kept for ever.
      else if (now - since >= this.stallMs) ws.terminate()
      return
    }
    this.stalled.delete(ws)
    ws.send(msg)
  }

  /** Close every client (1001 going away) and stop all timers. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.stopTick()
    for (const e of STATE_EVENTS) this.proxy.events.off(e, this.changed)
    for (const e of SPAWN_EVENTS) this.proxy.spawns?.off(e, this.changed)
    const gone = [...this.clients].map((ws) => new Promise<void>((resolve) => {
      ws.once('close', () => resolve())
      ws.close(1001, 'status closing')
      // A peer that never answers the close frame is cut (ws's own close timeout is 30 s).
      setTimeout(() => ws.terminate(), 1000).unref()
    }))
    await Promise.all(gone)
    await new Promise<void>((resolve) => this.wss.close(() => resolve()))
  }
}

