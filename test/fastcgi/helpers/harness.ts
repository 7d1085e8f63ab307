/**
 * Drives a FastCGI `BackendClient` directly: a ClientContext over node:net, a hand-built Exchange,
 * and a ResponseHandler that records everything (optionally applying backpressure).
 */
import { connect, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { ProxyError, fromSocketError } from '../../../src/core/errors.js'
import type { ClientContext, Endpoint, Exchange, FlowControl, RawHeaders, ResponseHandler } from '../../../src/core/types.js'

export function unixEndpoint (path: string): Endpoint {
  return { kind: 'unix', path, id: `unix:${path}` }
}

export interface TestContext extends ClientContext {
  /** Sockets opened through `connect` (discovery included). */
  connects: number
  logs: Array<{ level: string, obj: object, msg?: string }>
}

export function testContext (maxResponseHeadSize = 65536): TestContext {
  const ctx: TestContext = {
    connects: 0,
    logs: [],
    log: {
      debug: (obj, msg) => { ctx.logs.push({ level: 'debug', obj, msg }) },
      info: (obj, msg) => { ctx.logs.push({ level: 'info', obj, msg }) },
      warn: (obj, msg) => { ctx.logs.push({ level: 'warn', obj, msg }) },
      error: (obj, msg) => { ctx.logs.push({ level: 'error', obj, msg }) },
    },
    limits: { maxResponseHeadSize },
    connect: (endpoint: Endpoint) => new Promise<Socket>((resolve, reject) => {
      if (endpoint.kind === 'process') return reject(new ProxyError('ERR_CONNECT_FAILED', 'no socket'))
      ctx.connects++
      const s = endpoint.kind === 'unix' ? connect(endpoint.path) : connect(endpoint.port, endpoint.host)
      s.once('connect', () => { s.off('error', onError); resolve(s) })
      const onError = (err: NodeJS.ErrnoException): void => reject(fromSocketError(err, 'connect', endpoint.id))
      s.once('error', onError)
    }),
  }
  return ctx
}

let nextId = 1

export interface ExchangeInit {
  method?: string
  query?: string
  env?: Record<string, string>
  body?: Buffer | Readable | null
  contentLength?: number
  signal?: AbortSignal
  role?: 'responder' | 'authorizer'
  script?: string
}

/** An Exchange with the RFC 3875 variables php and fcgiwrap need. */
export function makeExchange (init: ExchangeInit = {}): Exchange {
  const method = init.method ?? 'GET'
  const query = init.query ?? ''
  const body = init.body === undefined || init.body === null ? null : Buffer.isBuffer(init.body) ? Readable.from([init.body]) : init.body
  const contentLength = init.contentLength ?? (Buffer.isBuffer(init.body) ? init.body.length : 0)
  const script = init.script ?? '/t.php'
  const env: Record<string, string> = {
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_PROTOCOL: 'HTTP/1.1',
    SERVER_SOFTWARE: 'proxycore-test',
    SERVER_NAME: 'localhost',
    SERVER_PORT: '80',
    REMOTE_ADDR: '127.0.0.1',
    REQUEST_METHOD: method,
    QUERY_STRING: query,
    REQUEST_URI: script + (query ? `?${query}` : ''),
    SCRIPT_NAME: script,
    REDIRECT_STATUS: '200',
    ...(contentLength > 0 ? { CONTENT_LENGTH: String(contentLength), CONTENT_TYPE: 'application/octet-stream' } : {}),
    ...init.env,
  }
  return {
    id: nextId++,
    method,
    url: env.REQUEST_URI,
    path: script,
    query,
    httpVersion: '1.1',
    requestHeaders: {},
    headers: [],
    env,
    script: null,
    body,
    contentLength,
    client: { address: '127.0.0.1', port: 40000, localAddress: '127.0.0.1', localPort: 80, secure: false },
    signal: init.signal ?? new AbortController().signal,
    role: init.role ?? 'responder',
    options: {},
    routeName: 'test',
  }
}

export interface Recorded {
  status: number | null
  statusText?: string
  headers: RawHeaders
  body: Buffer
  stderr: string
  error: ProxyError | null
  redirect: string | null
  ended: boolean
  /** Times onData returned false. */
  pauses: number
}

/**
 * A recording handler. With `pauseEvery`, onData returns false after that many bytes and resumes
 * on the next macrotask (a slow consumer).
 */
export function record (opts: { pauseEvery?: number } = {}): { handler: ResponseHandler, result: Recorded, done: Promise<Recorded>, settledCount: () => number } {
  const result: Recorded = { status: null, headers: [], body: Buffer.alloc(0), stderr: '', error: null, redirect: null, ended: false, pauses: 0 }
  const parts: Buffer[] = []
  let flow: FlowControl | null = null
  let sincePause = 0
  let settled = 0
  let resolve!: (r: Recorded) => void
  const done = new Promise<Recorded>((r) => { resolve = r })
  const finish = (): void => {
    settled++
    result.body = Buffer.concat(parts)
    resolve(result)
  }
  const handler: ResponseHandler = {
    onHead (status, headers, f, statusText) {
      result.status = status
      result.headers = headers
      if (statusText !== undefined) result.statusText = statusText
      flow = f
    },
    onData (chunk) {
      parts.push(Buffer.from(chunk))
      sincePause += chunk.length
      if (opts.pauseEvery !== undefined && sincePause >= opts.pauseEvery) {
        sincePause = 0
        result.pauses++
        setImmediate(() => flow!.resume())
        return false
      }
      return true
    },
    onEnd () { result.ended = true; finish() },
    onError (err) { result.error = err; finish() },
    onLocalRedirect (location) { result.redirect = location; finish() },
    onStderr (chunk) { result.stderr += chunk.toString() },
  }
  return { handler, result, done, settledCount: () => settled }
}

export function header (r: Recorded, name: string): string | undefined {
  for (let i = 0; i < r.headers.length; i += 2) if (r.headers[i].toLowerCase() === name.toLowerCase()) return r.headers[i + 1]
  return undefined
}
