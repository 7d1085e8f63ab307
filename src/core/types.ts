/**
 * The seams of proxycore. The core owns routing, admission, balancing, failover, timeouts and
 * streaming; a protocol adapter only translates one exchange to and from its wire format.
 *
 *   route ──> BackendPool ──> Backend (one per endpoint) ──> BackendClient (adapter's, one per endpoint)
 *                 ^
 *                 └── BackendSource (fixed list, or a spawn's live processes)
 *
 * Everything in this file is public API: framework authors implement `ProtocolAdapter`.
 */
import type { Duplex, Readable } from 'node:stream'
import type { IncomingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import type { ProxyError } from './errors.js'

/** Where a backend listens. `id` is its display form: `127.0.0.1:9000`, `[::1]:9000`, `unix:/run/a.sock`. */
export type Endpoint =
  | { readonly kind: 'tcp', readonly host: string, readonly port: number, readonly id: string }
  | { readonly kind: 'unix', readonly path: string, readonly id: string }
  /** No socket: the adapter starts a process per request (CGI). `id` names the spawn. */
  | { readonly kind: 'process', readonly id: string }

/** Minimal structured logger (pino-compatible subset). */
export interface Logger {
  debug (obj: object, msg?: string): void
  info (obj: object, msg?: string): void
  warn (obj: object, msg?: string): void
  error (obj: object, msg?: string): void
}

/** Flat raw header list: [name, value, name, value, ...] — what node:http's writeHead accepts. */
export type RawHeaders = string[]

/** The client side of an exchange, after trusted-proxy processing. */
export interface ClientInfo {
  /** Address of the client (X-Forwarded-For resolved when the peer is a trusted proxy). */
  readonly address: string
  readonly port: number
  /** The address/port the request arrived on (SERVER_ADDR/SERVER_PORT). */
  readonly localAddress: string
  readonly localPort: number
  /** https as seen by the client (TLS socket, or X-Forwarded-Proto from a trusted proxy). */
  readonly secure: boolean
}

/** Script resolution for CGI-family protocols (RFC 3875 §4.1.13, §4.1.5). */
export interface ScriptInfo {
  /** Absolute file the backend runs (SCRIPT_FILENAME). */
  readonly filename: string
  /** URL path of the script (SCRIPT_NAME). */
  readonly name: string
  /** The rest of the path after the script (PATH_INFO), '' when none. */
  readonly pathInfo: string
  /** DOCUMENT_ROOT, '' for single-entry-point apps. */
  readonly docroot: string
  /**
   * `filename`'s real path (realpath(3): every symlink resolved), as the core found it when it
   * walked the docroot for this path, within the last second (its script cache checks on every
   * hit, with one stat(2), that `filename` still leads to the same, unchanged file: device, inode,
   * change time), so an adapter need not resolve it again. Absent when the core did not resolve
   * one (no `docroot`): then call realpath yourself. A check made before the open, like any:
   * verify the opened descriptor (a directory above moved and linked back in leaves the file as
   * it was, and this path stale, until the entry's second is over).
   */
  readonly realFilename?: string
  /**
   * The route's `symlinks` policy the core resolved `filename` under (absent without a docroot
   * walk). An adapter that opens more files beside it (the static adapter's precompressed
   * siblings) applies it to them too.
   */
  readonly symlinks?: 'follow' | 'owner' | 'deny'
}

/**
 * One request as an adapter sees it. The core has already routed, admitted, cleaned the headers and
 * (for `cgiEnv` adapters) built the RFC 3875 environment.
 */
export interface Exchange {
  /** Monotonic id, for logs. */
  readonly id: number
  readonly method: string
  /** Request-target exactly as received (path + `?` + query), after any route rewrite. */
  readonly url: string
  /** Raw (still percent-encoded) path part of `url`. */
  readonly path: string
  /** Raw query string without the leading `?`, '' if none. */
  readonly query: string
  readonly httpVersion: string
  /** The client's request headers as node:http parsed them (lower-case names). */
  readonly requestHeaders: IncomingHttpHeaders
  /**
   * Headers to send to an HTTP-speaking backend: hop-by-hop removed, X-Forwarded-* / Forwarded / Via
   * applied per the route. Built only for adapters without `cgiEnv`.
   */
  readonly headers: RawHeaders
  /**
   * The RFC 3875 environment (CGI-family adapters: `capabilities.cgiEnv`). Values are text; a
   * request header byte that was not UTF-8 is the lone surrogate U+DC00 + byte ("surrogateescape"):
   * write the env with `envBytes` (exported) to put every byte on the wire as it came.
   */
  readonly env: Record<string, string> | null
  readonly script: ScriptInfo | null
  /**
   * Request body, or null when the request has none. Streamed, except for CGI-family routes with
   * `requestBuffering` (the default) and chunked bodies to `needsContentLength` adapters: those are
   * read whole first (memory up to 64 KiB, then an unlinked temp file).
   */
  readonly body: Readable | null
  /** Body length; null when unknown (chunked). With `needsContentLength` it is always known. */
  readonly contentLength: number | null
  readonly client: ClientInfo
  /** Aborted when the client goes away or the core times the exchange out. */
  readonly signal: AbortSignal
  /** Same as `signal.aborted`, without creating the signal (the core's exchanges create it lazily). */
  readonly aborted?: boolean
  /**
   * Fast path for hot adapters: the one function the core calls when it aborts this exchange
   * (instead of an 'abort' listener on `signal`, which costs an AbortController and an EventTarget
   * listener per request). Calling again replaces it; `null` clears it.
   */
  setAbortHandler? (fn: (() => void) | null): void
  /**
   * For an adapter that queues requests beyond its own connection cap (http `connections`): call
   * `waitingForConnection()` when the exchange is handed over and `connectionReady()` once it has
   * its connection and its head is being written. In between, the wait is bounded by the route's
   * `queueTimeout` (503 ERR_QUEUE_TIMEOUT, HAProxy's `timeout queue`), not by `timeouts.headers`,
   * which counts from `connectionReady()`. An adapter that calls neither: `timeouts.headers` counts
   * from the dispatch.
   */
  waitingForConnection? (): void
  connectionReady? (): void
  /** FastCGI role; other adapters ignore it. */
  readonly role: 'responder' | 'authorizer'
  /** The adapter options parsed from the route (`parseOptions`). */
  readonly options: unknown
  /** Name of the route (its index when unnamed), for logs and metrics. */
  readonly routeName: string
}

/** Flow control handed to `onHead`: call `resume()` after `onData` returned false. */
export interface FlowControl {
  resume (): void
}

/**
 * Receives one response. undici-style: `onData` returning false asks the adapter to stop reading the
 * backend until `resume()`. Exactly one of `onEnd` / `onError` / `onLocalRedirect` ends an exchange.
 */
export interface ResponseHandler {
  /** 1xx informational (100 Continue, 103 Early Hints). Optional for adapters to call. */
  onInformational? (status: number, headers: RawHeaders): void
  onHead (status: number, headers: RawHeaders, flow: FlowControl, statusText?: string): void
  onData (chunk: Buffer): boolean
  onEnd (trailers?: RawHeaders): void
  onError (err: ProxyError): void
  /** CGI local redirect (RFC 3875 §6.2.2): the core re-dispatches `location` as a GET. */
  onLocalRedirect? (location: string): void
  /**
   * Whether `onLocalRedirect` re-dispatches (the route enabled `localRedirects`). When false, an
   * adapter sends the head as it is, a 302 with Location and the script's other fields
   * (Set-Cookie…) and its body. Absent: true.
   */
  takesLocalRedirects? (): boolean
  /** Backend diagnostics (FastCGI STDERR, CGI stderr). The core logs it, capped. */
  onStderr? (chunk: Buffer): void
  /**
   * Close the client connection after this response (no keep-alive). Call before `onHead`. NPH
   * scripts need it: RFC 3875 §5.2 forbids them to let the client reuse the connection.
   */
  closeAfterResponse? (): void
}

/** Handles a protocol upgrade (WebSocket ...). */
export interface UpgradeHandler {
  /** The backend accepted: status 101, its headers, and the raw backend stream to tunnel. */
  onUpgrade (status: number, headers: RawHeaders, backend: Duplex, head: Buffer): void
  /** The backend answered with a normal response instead (e.g. 400/426). */
  onHead (status: number, headers: RawHeaders, flow: FlowControl, statusText?: string): void
  onData (chunk: Buffer): boolean
  onEnd (): void
  onError (err: ProxyError): void
}

/** One backend endpoint, speaking one protocol. Created by the adapter, owned by the core's pool. */
export interface BackendClient {
  /**
   * Start an exchange. Never throws: every failure goes to `handler.onError`. (The core guards
   * anyway: a throw or a rejected promise fails the exchange with ERR_INTERNAL, docs/adapters.md.)
   */
  dispatch (exchange: Exchange, handler: ResponseHandler): void
  /** Start an upgrade exchange (only when `capabilities.upgrade`). */
  upgrade? (exchange: Exchange, handler: UpgradeHandler): void
  /** Exchanges currently in flight on this client. */
  readonly inflight: number
  /** Finish in-flight exchanges, then release connections. */
  close (): Promise<void>
  /** Drop everything now. */
  destroy (reason?: Error): void
}

/** What the core offers an adapter's client: the shared plumbing an adapter must not re-invent. */
export interface ClientContext {
  readonly log: Logger
  /**
   * Open a stream connection to the endpoint with the route's connect timeout. Resolves when
   * connected; rejects with a ProxyError (phase 'connect', code ERR_CONNECT_*).
   */
  connect (endpoint: Endpoint): Promise<Socket>
  /** Limits the adapter must enforce while parsing. */
  readonly limits: {
    /** Largest response head (status line + headers / CGI head) accepted, bytes. */
    readonly maxResponseHeadSize: number
  }
  /**
   * Per-request process starter (only for `perRequestProcess` adapters, from the route's pipe spawn).
   */
  readonly processes?: ProcessStarter
}

/** Starts one process per request (CGI). Implemented by the spawn layer; see src/spawn. */
export interface ProcessStarter {
  /**
   * `cwd` undefined = the spawn's own working directory (programs without a script file).
   * `stdin: 'null'` = the request has no body: the program may read /dev/null instead of a pipe
   * (lighttpd's mod_cgi does the same); a starter that ignores it and gives a pipe works too.
   */
  start (req: { argv: string[], env: Record<string, string>, cwd?: string, stdin?: 'pipe' | 'null' }): import('node:child_process').ChildProcess
  /** Kill the whole process group (killSignal, then SIGKILL after grace). */
  kill (child: import('node:child_process').ChildProcess): void
}

export interface AdapterCapabilities {
  /** Connections are reused between exchanges. */
  readonly keepAlive: boolean
  /** Several exchanges may share one connection at once. */
  readonly multiplex: boolean
  /** Supports `BackendClient.upgrade`. */
  readonly upgrade: boolean
  /** Wants the RFC 3875 environment (`exchange.env`) instead of forwarded headers. */
  readonly cgiEnv: boolean
  /** Needs a known body length: the core spools chunked bodies to a bounded temp file first. */
  readonly needsContentLength: boolean
  /** Starts a process per request; endpoints are of kind 'process'. */
  readonly perRequestProcess: boolean
  /**
   * Answers from the proxy host itself (`static`: files under the route's `docroot`): its routes
   * take no `backends` or `spawn` and need `docroot`; the pool has one endpoint of kind 'process'
   * named after the route, and request bodies are never buffered for it. Default false.
   */
  readonly local?: boolean
}

/** One wire protocol. Register with `registerAdapter()` or pass in `createProxy({ adapters })`. */
export interface ProtocolAdapter<Opts = unknown> {
  /** The routes' `protocol:`; one name, one adapter (a built-in's name is taken). */
  readonly name: string
  readonly capabilities: AdapterCapabilities
  /**
   * Validate this protocol's route options (`route.options`). Throw a `ConfigError` whose issue
   * paths start with `at` for anything wrong.
   */
  parseOptions (raw: unknown, at: string): Opts
  /**
   * One client per endpoint, made synchronously (connect in `dispatch`): a promise (an `async
   * createClient`) is refused like a throw (docs/adapters.md).
   */
  createClient (endpoint: Endpoint, opts: Opts, ctx: ClientContext): BackendClient
}

/**
 * Where a pool gets its endpoints from: a fixed list, or a spawn's live processes. The spawn layer
 * implements this shape without importing the core.
 */
export interface BackendSource {
  readonly name: string
  /** Endpoints to route to now (processes that are ready and not draining). */
  list (): readonly SourceEndpoint[]
  /** Called whenever `list()` may have changed. Returns an unsubscribe function. */
  subscribe (fn: () => void): () => void
  /**
   * Resolves once at least one endpoint is routable (starting processes on demand). Rejects with an
   * Error whose `code` is ERR_SPAWN_FAILED or ERR_SPAWN_NOT_READY.
   */
  ensure (signal: AbortSignal): Promise<void>
  /** The core tells the source an exchange started/ended on an endpoint (maxRequests, in-flight). */
  requestStarted? (endpointId: string): void
  requestDone? (endpointId: string): void
}

export interface SourceEndpoint {
  /** Stable for the life of the process/endpoint (e.g. `php#3`). */
  readonly id: string
  /** `host:port`, `[v6]:port` or `unix:/path`. */
  readonly address: string
}
