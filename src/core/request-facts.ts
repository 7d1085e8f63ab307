/**
 * The request-side fields every Exchange carries (the proxy's own exchanges, upgrades, authorizer
 * calls), filled once from the parsed request-target and the node:http request.
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { ClientInfo } from './types.js'

export abstract class RequestFacts {
  readonly method: string
  readonly url: string
  readonly path: string
  readonly query: string
  readonly httpVersion: string
  readonly requestHeaders: IncomingHttpHeaders

  constructor (
    readonly id: number,
    target: { readonly method: string, readonly url: string, readonly path: string, readonly query: string },
    req: { readonly httpVersion: string, readonly headers: IncomingHttpHeaders },
    readonly client: ClientInfo,
    readonly routeName: string,
    /** The adapter options parsed from the route (`parseOptions`). */
    readonly options: unknown,
  ) {
    this.method = target.method
    this.url = target.url
    this.path = target.path
    this.query = target.query
    this.httpVersion = req.httpVersion
    this.requestHeaders = req.headers
  }
}
