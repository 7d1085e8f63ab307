/**
 * Body scavenging through a real proxy and a real node:http backend: a 20 MiB upload and a 20 MiB
 * download each ask V8 for young-generation collections (src/core/scavenge.ts) and arrive intact;
 * small exchanges never do; `gc: false` and the default (globalThis.gc, as `node --expose-gc` sets
 * it) are honoured. The gc handed in is V8's real one, counted on the way.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { request, type IncomingMessage } from 'node:http'
import { gcFromV8, type GcFunction } from '../../src/core/scavenge.js'
import { createProxy, silentLogger, type CreateProxyOptions } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'

const MiB = 1024 * 1024
const SIZE = 20 * MiB
const realGc = gcFromV8()

function counting (): { gc: GcFunction, calls: unknown[] } {
  const calls: unknown[] = []
  return { gc: (o) => { calls.push(o); return realGc(o) }, calls }
}

const chunk = (i: number): Buffer => Buffer.alloc(64 * 1024, i & 0xff)

/** The backend hashes uploads and streams downloads of `/down/<bytes>`. */
async function rig (t: Test, opts: Partial<CreateProxyOptions>): Promise<string> {
  const be = await backend(t, (req, res) => {
    if (req.url?.startsWith('/down/') === true) {
      let left = Number(req.url.slice(6))
      res.writeHead(200, { 'content-length': left })
      let i = 0
      const more = (): void => {
        while (left > 0) {
          const c = chunk(i++).subarray(0, Math.min(64 * 1024, left))
          left -= c.length
          if (!res.write(c)) { res.once('drain', more); return }
        }
        res.end()
      }
      more()
      return
    }
    const h = createHash('sha256')
    req.on('data', (c: Buffer) => h.update(c))
    req.on('end', () => res.end(h.digest('hex')))
  })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }], ...opts })
  return url
}

/** POST `size` bytes, chunked, as fast as the proxy takes them; resolves to the backend's sha256. */
function upload (url: string, size: number): Promise<{ status: number, body: string, sent: string }> {
  return new Promise((resolve, reject) => {
    const sent = createHash('sha256')
    const req = request(`${url}/up`, { method: 'POST', agent: false }, (res: IncomingMessage) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, sent: sent.digest('hex') }))
    })
    req.on('error', reject)
    let left = size
    let i = 0
    const more = (): void => {
      while (left > 0) {
        const c = chunk(i++)
        left -= c.length
        sent.update(c)
        if (!req.write(c)) { req.once('drain', more); return }
      }
      req.end()
    }
    more()
  })
}

function expectedDownload (size: number): string {
  const h = createHash('sha256')
  for (let i = 0, left = size; left > 0; i++) { const c = chunk(i).subarray(0, Math.min(64 * 1024, left)); left -= c.length; h.update(c) }
  return h.digest('hex')
}

t.test('a 20 MiB upload and a 20 MiB download each scavenge, and every byte arrives', async (t) => {
  guardLeaks(t)
  const { gc, calls } = counting()
  const url = await rig(t, { gc })
  const up = await upload(url, SIZE)
  t.equal(up.status, 200)
  t.equal(up.body, up.sent, 'the backend hashed exactly what was sent')
  const afterUpload = calls.length
  t.ok(afterUpload >= 1, `the upload asked for young-generation collections (${afterUpload})`)
  const down = await get(`${url}/down/${SIZE}`)
  t.equal(down.status, 200)
  t.equal(createHash('sha256').update(down.body).digest('hex'), expectedDownload(SIZE), 'the download is intact')
  t.ok(calls.length > afterUpload, `the download asked for more (${calls.length - afterUpload})`)
  t.ok(calls.every((c) => JSON.stringify(c) === '{"type":"minor"}'), 'only minor collections')
})

t.test('small bodies never scavenge', async (t) => {
  guardLeaks(t)
  const { gc, calls } = counting()
  const url = await rig(t, { gc })
  for (let i = 0; i < 40; i++) {
    const r = await get(`${url}/up`, { method: 'POST', body: Buffer.alloc(100, i) })
    t.equal(r.status, 200)
    const d = await get(`${url}/down/512`)
    t.equal(d.body.length, 512)
  }
  t.equal(calls.length, 0, '40 small uploads and downloads: no collection asked for')
})

t.test('the default is globalThis.gc when node exposes one; gc: false turns it off', async (t) => {
  guardLeaks(t)
  const g = globalThis as { gc?: unknown }
  const had = Object.getOwnPropertyDescriptor(globalThis, 'gc')
  const { gc, calls } = counting()
  g.gc = gc
  t.teardown(() => { if (had !== undefined) Object.defineProperty(globalThis, 'gc', had); else delete g.gc })
  const off = await rig(t, { gc: false })
  const on = await rig(t, {})
  const a = await upload(off, 12 * MiB)
  t.equal(a.body, a.sent)
  t.equal(calls.length, 0, 'gc: false: none')
  const b = await upload(on, 12 * MiB)
  t.equal(b.body, b.sent)
  t.ok(calls.length >= 1, `default: globalThis.gc was asked (${calls.length})`)
})

t.test('a gc option that is neither a function nor false is a config error at /gc', async (t) => {
  guardLeaks(t)
  const bad = { routes: [{ protocol: 'http', backends: ['127.0.0.1:9'] }], gc: true } as unknown as CreateProxyOptions
  await t.rejects(createProxy({ ...bad, logger: silentLogger }), { name: 'ConfigError', issues: [{ path: '/gc', expected: 'function | false' }] })
})
