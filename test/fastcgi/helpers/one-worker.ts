/**
 * A php-fpm pool of one worker (while it waits for the rest of a body, nobody else is served) with
 * two clients of it: `a`, which keeps its one connection (options added to it), and `b`, a
 * connection per request; and a streamed 4 MiB request body of which only the first 64 KiB has
 * come from the client. For the cases where a script answers before the body is sent
 * (test/fastcgi/audit37-*.test.ts).
 */
import { PassThrough } from 'node:stream'
import { FastcgiClient } from '../../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS, type FastcgiOptions } from '../../../src/protocols/fastcgi/options.js'
import { testContext, unixEndpoint } from './harness.js'
import type { Test as Tap } from 'tap'
import { startPhpFpm } from './peers.js'

export const PARTIAL_BODY_LENGTH = 4 << 20

export async function oneWorkerPool (t: Tap, dir: string, aOptions: Partial<FastcgiOptions> = {}): Promise<{ a: FastcgiClient, b: FastcgiClient, body: PassThrough }> {
  const fpm = await startPhpFpm(t, dir, 1)
  const a = new FastcgiClient(unixEndpoint(fpm.socketPath), { ...FASTCGI_DEFAULTS, discovery: false, maxConnections: 1, ...aOptions }, testContext())
  t.teardown(() => a.destroy())
  const b = new FastcgiClient(unixEndpoint(fpm.socketPath), { ...FASTCGI_DEFAULTS, discovery: false, keepConn: false }, testContext())
  t.teardown(() => b.destroy())
  const body = new PassThrough()
  t.teardown(() => { body.destroy() })
  body.write(Buffer.alloc(65536, 0x41))
  return { a, b, body }
}
