/**
 * FAKE-FCGI: a raw `net.Server` that parses BEGIN_REQUEST / PARAMS / STDIN / ABORT_REQUEST and lets
 * each test answer with crafted bytes (RELIABILITY "Harness conventions"). Its record parser is
 * independent of the adapter's decoder.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import type { Test } from 'tap'
import { rec, endBody } from './records.js'
import { makeExchange, record, testContext, unixEndpoint, type ExchangeInit } from './harness.js'
import { tempDir } from './peers.js'
import type { Endpoint } from '../../../src/core/types.js'
import { FastcgiClient } from '../../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS, type FastcgiOptions } from '../../../src/protocols/fastcgi/options.js'

export interface FakeRequest {
  conn: number
  id: number
  role: number
  flags: number
  params: Map<string, string>
  stdin: Buffer
  /** Content lengths of every PARAMS and STDIN record, in order. */
  paramRecords: Buffer[]
  stdinRecords: number[]
  sock: Socket
}

export interface Fake {
  endpoint: Endpoint
  server: Server
  accepted: number
  requests: FakeRequest[]
  aborts: Array<{ conn: number, id: number }>
  getValues: number
}

export interface FakeOptions {
  /** Answer FCGI_GET_VALUES with this record (else ignore it). */
  values?: Buffer
  /** Listen on 127.0.0.1 instead of a Unix socket (a TCP socket can be reset: `resetAndDestroy`). */
  tcp?: boolean
  onRequest: (req: FakeRequest, fake: Fake) => void
}

/** Send a complete good response: STDOUT head+body, empty STDOUT, END_REQUEST. */
export function respond (req: FakeRequest, body = 'ok', head = 'Content-Type: text/plain\r\n\r\n'): void {
  req.sock.write(Buffer.concat([rec(6, req.id, head + body), rec(6, req.id), rec(3, req.id, endBody(0, 0))]))
}

function parsePairs (buf: Buffer, into: Map<string, string>): boolean {
  let off = 0
  const len = (): number => {
    if (buf[off] & 0x80) { const n = buf.readUInt32BE(off) & 0x7fffffff; off += 4; return n }
    return buf[off++]
  }
  while (off < buf.length) {
    const n = len(); const v = len()
    if (off + n + v > buf.length) return false
    into.set(buf.toString('utf8', off, off + n), buf.toString('utf8', off + n, off + n + v))
    off += n + v
  }
  return true
}

export async function startFake (t: Test, dir: string, opts: FakeOptions): Promise<Fake> {
  const path = join(dir, `fake-${Math.random().toString(36).slice(2)}.sock`)
  const sockets = new Set<Socket>()
  const fake: Fake = { endpoint: unixEndpoint(path), server: createServer(), accepted: 0, requests: [], aborts: [], getValues: 0 }
  fake.server.on('connection', (sock) => {
    const conn = fake.accepted++
    sockets.add(sock)
    sock.on('close', () => sockets.delete(sock))
    sock.on('error', () => {})
    let buf = Buffer.alloc(0)
    const open = new Map<number, FakeRequest>()
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk])
      while (buf.length >= 8) {
        const type = buf[1]; const id = buf.readUInt16BE(2); const len = buf.readUInt16BE(4); const pad = buf[6]
        if (buf.length < 8 + len + pad) return
        const content = buf.subarray(8, 8 + len)
        buf = buf.subarray(8 + len + pad)
        if (type === 1) {
          open.set(id, { conn, id, role: content.readUInt16BE(0), flags: content[2], params: new Map(), stdin: Buffer.alloc(0), paramRecords: [], stdinRecords: [], sock })
        } else if (type === 4 && len > 0) {
          const r = open.get(id)!
          r.paramRecords.push(Buffer.from(content))
          if (!parsePairs(content, r.params)) r.params.set('__STRADDLED__', '1')
        } else if (type === 5) {
          const r = open.get(id)!
          r.stdinRecords.push(len)
          if (len > 0) { r.stdin = Buffer.concat([r.stdin, content]) } else { open.delete(id); fake.requests.push(r); opts.onRequest(r, fake) }
        } else if (type === 2) {
          fake.aborts.push({ conn, id })
        } else if (type === 9) {
          fake.getValues++
          if (opts.values) sock.write(opts.values)
        }
      }
    })
  })
  if (opts.tcp === true) {
    await new Promise<void>((resolve) => fake.server.listen(0, '127.0.0.1', resolve))
    const port = (fake.server.address() as AddressInfo).port
    fake.endpoint = { kind: 'tcp', host: '127.0.0.1', port, id: `127.0.0.1:${port}` }
  } else {
    await new Promise<void>((resolve) => fake.server.listen(path, resolve))
  }
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => fake.server.close(() => resolve()))
  })
  return fake
}

/**
 * A FastcgiClient (no discovery) on a fresh fake: what the fault tests start with. `ask` dispatches
 * one exchange and resolves with what its handler recorded.
 */
export async function fakeClient (t: Test, onRequest: FakeOptions['onRequest'], opts: Partial<FastcgiOptions> = {}, values?: Buffer, tcp = false) {
  const fake = await startFake(t, tempDir(t), { onRequest, tcp, ...(values ? { values } : {}) })
  const ctx = testContext()
  const client = new FastcgiClient(fake.endpoint, { ...FASTCGI_DEFAULTS, discovery: false, ...opts }, ctx)
  t.teardown(() => client.destroy())
  const ask = (init: ExchangeInit = {}) => {
    const r = record()
    client.dispatch(makeExchange(init), r.handler)
    return r.done
  }
  return { fake, ctx, client, ask }
}
