/**
 * Drives a BackendClient the way the core does: a hand-built Exchange and a ResponseHandler that
 * records every call, so adapter tests need no pipeline. Shared by the SCGI tests and the uwsgi
 * example's tests.
 */
import { Readable } from 'node:stream'
import { connectEndpoint } from '../../src/core/connect.js'
import type { ProxyError } from '../../src/core/errors.js'
import type { ClientContext, Endpoint, Exchange, FlowControl, RawHeaders, ResponseHandler } from '../../src/core/types.js'

export const silent = { debug () {}, info () {}, warn () {}, error () {} }

export function testContext (maxResponseHeadSize = 8192): ClientContext {
  return { log: silent, connect: (e: Endpoint) => connectEndpoint(e, 2000), limits: { maxResponseHeadSize } }
}

export function unixEndpoint (path: string): Endpoint {
  return { kind: 'unix', path, id: `unix:${path}` }
}

export function tcpEndpoint (port: number, host = '127.0.0.1'): Endpoint {
  return { kind: 'tcp', host, port, id: `${host}:${port}` }
}

let nextId = 1

export interface ExchangeInit {
  method?: string
  path?: string
  query?: string
  env?: Record<string, string> | null
  body?: Buffer | Readable | null
  contentLength?: number | null
  signal?: AbortSignal
  options?: unknown
}

export function makeExchange (init: ExchangeInit = {}): Exchange {
  const path = init.path ?? '/'
  const query = init.query ?? ''
  const body = Buffer.isBuffer(init.body) ? Readable.from([init.body]) : (init.body ?? null) as Readable | null
  const length = init.contentLength !== undefined ? init.contentLength : init.body instanceof Buffer ? init.body.length : null
  return {
    id: nextId++,
    method: init.method ?? 'GET',
    url: path + (query !== '' ? `?${query}` : ''),
    path,
    query,
    httpVersion: '1.1',
    requestHeaders: {},
    headers: [],
    env: init.env === undefined ? {} : init.env,
    script: null,
    body,
    contentLength: length,
    client: { address: '127.0.0.1', port: 50000, localAddress: '127.0.0.1', localPort: 8080, secure: false },
    signal: init.signal ?? new AbortController().signal,
    role: 'responder',
    options: init.options,
    routeName: 'test'
  }
}

export interface Recorded {
  status?: number
  statusText?: string
  headers?: RawHeaders
  body: Buffer
  redirect?: string
  error?: ProxyError
  ended: boolean
  /** Names of the handler calls in order, for exactly-one-ending checks. */
  calls: string[]
}

/** A recording handler; `finished` resolves at the first ending (onEnd / onError / onLocalRedirect). */
export function recorder (opts: { pauseAfterFirstChunk?: boolean } = {}): { handler: ResponseHandler, rec: Recorded, finished: Promise<Recorded>, flow: () => FlowControl | null } {
  const rec: Recorded = { body: Buffer.alloc(0), ended: false, calls: [] }
  let flow: FlowControl | null = null
  let resolve!: (r: Recorded) => void
  const finished = new Promise<Recorded>((res) => { resolve = res })
  let chunks = 0
  const handler: ResponseHandler = {
    onHead (status, headers, f, statusText) {
      rec.calls.push('head')
      rec.status = status
      rec.headers = headers
      if (statusText !== undefined) rec.statusText = statusText
      flow = f
    },
    onData (chunk) {
      rec.calls.push('data')
      rec.body = Buffer.concat([rec.body, chunk])
      chunks++
      return !(opts.pauseAfterFirstChunk === true && chunks === 1)
    },
    onEnd () { rec.calls.push('end'); rec.ended = true; resolve(rec) },
    onError (err) { rec.calls.push('error'); rec.error = err; resolve(rec) },
    onLocalRedirect (location) { rec.calls.push('redirect'); rec.redirect = location; resolve(rec) }
  }
  return { handler, rec, finished, flow: () => flow }
}

/** Raw headers as an object of lower-case name → value (last wins), for assertions. */
export function headerMap (raw: RawHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (let i = 0; raw !== undefined && i + 1 < raw.length; i += 2) out[raw[i].toLowerCase()] = raw[i + 1]
  return out
}
