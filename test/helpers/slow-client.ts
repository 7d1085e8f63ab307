/**
 * A slow client: GET `path` from a proxy on 127.0.0.1:`port`, read nothing until `until()` holds
 * (the backend has its whole response in the kernel), then read everything. What arrived: status,
 * byte count, sha256 and whether node:http saw the response complete (a cut one is not).
 */
import { createHash } from 'node:crypto'
import { request } from 'node:http'
import { waitFor } from './leaks.js'

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
