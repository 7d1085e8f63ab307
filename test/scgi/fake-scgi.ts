/**
 * FAKE-SCGI (RELIABILITY harness): a raw net.Server on a unix socket that captures the exact
 * request bytes and answers with scripted bytes. The netstring is parsed here independently of
 * the adapter's encoder, so a wrong encoder cannot agree with itself.
 */
import { createServer, type Server, type Socket } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface CapturedRequest {
  /** Everything received up to the moment the script ran. */
  raw: Buffer
  /** Header pairs in wire order. */
  pairs: Array<[string, string]>
  /** The netstring's declared length, as text (to check for leading zeros). */
  lengthText: string
  body: Buffer
}

export interface FakeScgi {
  path: string
  /** Requests in arrival order (completed captures). */
  requests: CapturedRequest[]
  connections: number
  close (): Promise<void>
}

/**
 * `respond` runs once the netstring (and, with `waitForBody`, CONTENT_LENGTH body bytes) arrived.
 * A malformed netstring fails the capture loudly (the test sees no response and a thrown error).
 */
export async function fakeScgi (respond: (req: CapturedRequest, socket: Socket) => void, opts: { waitForBody?: boolean } = {}): Promise<FakeScgi> {
  const dir = await mkdtemp(join(tmpdir(), 'proxycore-fake-scgi-'))
  const path = join(dir, 's.sock')
  const sockets = new Set<Socket>()
  const fake: FakeScgi = {
    path,
    requests: [],
    connections: 0,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await rm(dir, { recursive: true, force: true })
    }
  }
  const server: Server = createServer((socket) => {
    fake.connections++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let raw = Buffer.alloc(0)
    let answered = false
    socket.on('data', (chunk: Buffer) => {
      raw = Buffer.concat([raw, chunk])
      if (answered) return
      const req = parseRequest(raw)
      if (req === null) return
      const length = Number(req.pairs[0]?.[1] ?? 0)
      if (opts.waitForBody !== false && req.body.length < length) return
      answered = true
      fake.requests.push(req)
      respond(req, socket)
    })
  })
  await new Promise<void>((resolve) => server.listen(path, resolve))
  return fake
}

function parseRequest (raw: Buffer): CapturedRequest | null {
  const colon = raw.indexOf(0x3a)
  if (colon === -1) return null
  const lengthText = raw.toString('latin1', 0, colon)
  if (!/^\d+$/.test(lengthText)) throw new Error(`bad netstring length ${JSON.stringify(lengthText)}`)
  const n = Number(lengthText)
  if (raw.length < colon + 1 + n + 1) return null
  if (raw[colon + 1 + n] !== 0x2c) throw new Error('netstring not followed by ","')
  const fields = raw.subarray(colon + 1, colon + 1 + n).toString('utf8').split('\0')
  if (fields.pop() !== '') throw new Error('netstring payload does not end in NUL')
  const pairs: Array<[string, string]> = []
  for (let i = 0; i < fields.length; i += 2) pairs.push([fields[i], fields[i + 1]])
  return { raw, pairs, lengthText, body: raw.subarray(colon + 2 + n) }
}
