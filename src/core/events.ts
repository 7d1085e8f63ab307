/**
 * Observability without log scraping. Every event goes to a node:diagnostics_channel (so APMs and the
 * status module can subscribe without a reference to the proxy) and to the proxy's own typed
 * EventEmitter. Publishing is skipped when nobody listens: the hot path pays one boolean check.
 */
import diagnostics from 'node:diagnostics_channel'
import { EventEmitter } from 'node:events'
import type { ErrorCode } from './errors.js'

export interface RequestStartEvent { id: number, route: string, method: string, url: string, client: string }
export interface RequestEndEvent {
  id: number
  route: string
  method: string
  url: string
  client: string
  status: number
  /** Backend that answered (`127.0.0.1:9000`), '' when none was reached. */
  backend: string
  /** Milliseconds from arrival to response head / to the end. */
  headMs: number
  totalMs: number
  bytesOut: number
  /** Stable code when the exchange failed; null on success. Client aborts are `ERR_CLIENT_ABORTED`. */
  error: ErrorCode | null
  /**
   * node's strings of the request (`req.httpVersion`, the `Referer` and `User-Agent` headers; as
   * node decodes them: one char per byte): undefined when absent, or the request never got parsed.
   */
  httpVersion?: string | undefined
  referer?: string | undefined
  userAgent?: string | undefined
  /**
   * The backend's status when it answered and the client then went away (`status` is 499 then);
   * absent otherwise (`status` is the backend's, or the proxy made the response itself).
   */
  upstreamStatus?: number
}
/** What an exchange (or an upgrade) knows when it ends; `endEvent` derives the rest. */
export interface EndFacts {
  id: number, route: string, method: string, url: string, client: string, status: number, backend: string,
  startedAt: number, headAt: number, bytesOut: number
  httpVersion: string, referer: string | undefined, userAgent: string | undefined
}

/**
 * The `request:end` of an exchange that reached routing, one rule for requests and upgrades: a
 * client abort is 499, no head is headMs -1.
 */
export function endEvent (f: EndFacts, error: ErrorCode | null, now: number): RequestEndEvent {
  const e: RequestEndEvent = {
    id: f.id, route: f.route, method: f.method, url: f.url, client: f.client,
    status: error === 'ERR_CLIENT_ABORTED' ? 499 : f.status,
    backend: f.backend,
    headMs: f.headAt === 0 ? -1 : f.headAt - f.startedAt,
    totalMs: now - f.startedAt,
    bytesOut: f.bytesOut,
    error,
    httpVersion: f.httpVersion,
    referer: f.referer,
    userAgent: f.userAgent,
  }
  // 499 for the client; the access log still says what the backend answered.
  if (error === 'ERR_CLIENT_ABORTED' && f.headAt !== 0 && f.backend !== '' && f.status !== 0) e.upstreamStatus = f.status
  return e
}

export interface BackendStateEvent { pool: string, backend: string, state: 'up' | 'disabled' | 'down', reason?: string }

export interface ProxyEventMap {
  'request:start': [RequestStartEvent]
  'request:end': [RequestEndEvent]
  'backend:disabled': [BackendStateEvent]
  'backend:enabled': [BackendStateEvent]
  'pool:down': [BackendStateEvent]
  'pool:up': [BackendStateEvent]
}

export const channels = {
  requestStart: diagnostics.channel('proxycore:request:start'),
  requestEnd: diagnostics.channel('proxycore:request:end'),
  backendState: diagnostics.channel('proxycore:backend:state'),
} as const

export class ProxyEvents extends EventEmitter<ProxyEventMap> {
  requestStart (e: RequestStartEvent): void {
    if (channels.requestStart.hasSubscribers) channels.requestStart.publish(e)
    if (this.listenerCount('request:start') > 0) this.emit('request:start', e)
  }

  requestEnd (e: RequestEndEvent): void {
    if (channels.requestEnd.hasSubscribers) channels.requestEnd.publish(e)
    if (this.listenerCount('request:end') > 0) this.emit('request:end', e)
  }

  backendState (kind: 'backend:disabled' | 'backend:enabled' | 'pool:down' | 'pool:up', e: BackendStateEvent): void {
    if (channels.backendState.hasSubscribers) channels.backendState.publish({ kind, ...e })
    this.emit(kind, e)
  }

  /** Does anybody want request events? Lets the pipeline skip building them. */
  get wantsRequests (): boolean {
    return channels.requestStart.hasSubscribers || channels.requestEnd.hasSubscribers ||
      this.listenerCount('request:start') > 0 || this.listenerCount('request:end') > 0
  }
}
