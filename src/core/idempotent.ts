/**
 * RFC 9110 §9.2.2: the methods whose intended effect is the same however often they are sent. A
 * request that may have reached a backend is only ever sent again (the keep-alive race, in the HTTP
 * and FastCGI adapters) when its method is one of these: a POST the backend may have acted on is
 * never run twice.
 */
const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])

export function isIdempotent (method: string): boolean {
  return IDEMPOTENT.has(method)
}
