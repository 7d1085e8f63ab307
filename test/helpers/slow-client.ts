/**
 * A slow client: GET `path` from a proxy on 127.0.0.1:`port`, read nothing until `until()` holds
 * (the backend has its whole response in the kernel), then read everything. What arrived: status,
 * byte count, sha256 and whether node:http saw the response complete (a cut one is not).
 */
import { createHash } from 'node:crypto'
import { request } from 'node:http'
import type { RequestEndEvent } from '../../src/index.js'
import type { RouteConfig } from '../../src/config/schema.js'
import { captureLogger } from '../cgi/harness.js'
import { waitFor } from './leaks.js'
import { proxyServer } from './servers.js'

export interface SlowRead { status: number, bytes: number, sha: string, complete: boolean }

export async function slowGet (port: number, path: string, until: () => boolean, waitMs = 20_000): Promise<SlowRead> {
  return await new Promise<SlowRead>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let bytes = 0
      const hash = createHash('sha256')
      res.on('data', (c: Buffer) => { bytes += c.length; hash.update(c) })
      res.on('error', () => {}) // 'aborted' on a cut response; `complete` says it
      res.on('close', () => resolve({ status: res.statusCode ?? 0, bytes, sha: hash.digest('hex'), complete: res.complete }))
      res.pause()
      void waitFor(until, waitMs).then((ok) => {
        if (!ok) reject(new Error('the backend never got its response into the kernel'))
        res.resume()
      })
    })
    req.on('error', reject)
    req.end()
  })
}

/**
 * slowGet through a proxy of one route (a proxyServer with a captured log): what arrived, the
 * request's `request:end` event and the codes of its error and warn log lines.
 */
export async function slowGetThroughProxy (t: Parameters<typeof proxyServer>[0], route: RouteConfig, until: () => boolean): Promise<SlowRead & { event: RequestEndEvent, codes: unknown[] }> {
  const { logger, lines } = captureLogger()
  const { proxy, port } = await proxyServer(t, { logger, routes: [route] })
  const events: RequestEndEvent[] = []
  proxy.events.on('request:end', (e: RequestEndEvent) => events.push(e))
  const client = await slowGet(port, '/x', until)
  if (!await waitFor(() => events.length > 0, 10_000)) throw new Error('no request:end event')
  const codes = lines.filter((l) => l.level === 'error' || l.level === 'warn').map((l) => l.obj.code)
  return { ...client, event: events[0], codes }
}
