/**
 * A response that fails after its head (the backend closed or broke mid-body) stays truncated, and
 * what the backend did send before the failure still reaches a client that reads slowly: the
 * connection is ended after what the proxy queued for it, not destroyed with it (up to 256 KiB of
 * the backend's bytes were dropped). A client that stopped reading altogether is still cut at
 * clientIdle. The backend is a test adapter, so the failure comes exactly when the proxy holds
 * bytes the client has not taken.
 */
import t from 'tap'
import { connect } from 'node:net'
import type { ServerResponse } from 'node:http'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { proxyServer } from '../helpers/servers.js'
import { ProxyError, type BackendClient, type Exchange, type ProtocolAdapter, type ResponseHandler } from '../../src/index.js'

guardLeaks(t)

const CHUNK = Buffer.alloc(16 * 1024, 120)
/** Each exchange's response as node:http has it (captured before the proxy's handler runs). */
let responses: ServerResponse[] = []
let sent = 0

/** Streams 16 KiB chunks until the proxy holds some the client has not taken, then fails. */
class CuttingClient implements BackendClient {
  inflight = 0
  dispatch (ex: Exchange, h: ResponseHandler): void {
    sent = 0
    h.onHead(200, ['content-type', 'application/octet-stream', 'content-length', String(64 * 1024 * 1024)], { resume () {} })
    const step = (): void => {
      const res = responses[responses.length - 1]
      if (res.writableLength > 0 || sent >= 48 * 1024 * 1024) {
        h.onError(new ProxyError(ex.path === '/reset' ? 'ERR_BACKEND_RESET' : 'ERR_BACKEND_CLOSED', 'the test backend broke off', { phase: 'body' }))
        return
      }
      sent += CHUNK.length
      h.onData(CHUNK)
      setImmediate(step)
    }
    setImmediate(step)
  }

  close (): Promise<void> { return Promise.resolve() }
  destroy (): void {}
}

const cutting: ProtocolAdapter = {
  name: 'cutting',
  capabilities: { keepAlive: false, multiplex: true, upgrade: false, cgiEnv: false, needsContentLength: false, perRequestProcess: false },
  parseOptions: () => ({}),
  createClient: () => new CuttingClient(),
}

/** A raw client that reads nothing until `readFrom` resolves, then everything until the close. */
async function slowClient (port: number, path: string, readFrom: () => Promise<unknown>): Promise<{ head: string, body: number }> {
  const s = connect({ host: '127.0.0.1', port })
  s.write(`GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`)
  s.pause()
  await readFrom()
  const parts: Buffer[] = []
  s.on('data', (c: Buffer) => parts.push(c))
  s.resume()
  await new Promise((resolve) => s.on('close', resolve))
  const all = Buffer.concat(parts)
  const end = all.indexOf('\r\n\r\n')
  return { head: all.subarray(0, end).toString('latin1'), body: all.length - end - 4 }
}

for (const path of ['/closed', '/reset']) {
  t.test(`${path}: a response cut while the proxy still holds the client's bytes delivers every byte the backend sent, then ends short`, async (t) => {
    const ends: Array<{ code: string | null, bytesOut: number }> = []
    const { server, port, proxy } = await proxyServer(t, { adapters: [cutting], routes: [{ protocol: 'cutting', backends: ['127.0.0.1:9'] }] })
    responses = []
    server.prependListener('request', (_req, res) => { responses.push(res) })
    proxy.events.on('request:end', (e) => ends.push({ code: e.error, bytesOut: e.bytesOut }))
    const got = await slowClient(port, path, () => waitFor(() => ends.length === 1, 30_000))
    t.match(got.head, /^HTTP\/1\.1 200 OK\r\n/)
    t.match(got.head, /content-length: 67108864/i, 'the backend\'s length: the client sees the cut')
    t.ok(sent > 0 && sent < 48 * 1024 * 1024, `the proxy queued bytes before the cut (${sent} sent)`)
    t.equal(got.body, sent, `every byte the backend sent arrived (${got.body} of ${sent})`)
    t.equal(ends[0].code, path === '/reset' ? 'ERR_BACKEND_RESET' : 'ERR_BACKEND_CLOSED', JSON.stringify(ends))
  })
}

t.test('a cut response whose client never reads on: the connection is destroyed after clientIdle, not kept for ever', async (t) => {
  const ends: Array<string | null> = []
  const { server, port, proxy } = await proxyServer(t, { adapters: [cutting], routes: [{ protocol: 'cutting', backends: ['127.0.0.1:9'], timeouts: { clientIdle: '300ms' } }] })
  responses = []
  server.prependListener('request', (_req, res) => { responses.push(res) })
  proxy.events.on('request:end', (e) => ends.push(e.error))
  const s = connect({ host: '127.0.0.1', port })
  t.teardown(() => s.destroy())
  s.write('GET /closed HTTP/1.1\r\nHost: a\r\n\r\n')
  s.pause()
  t.ok(await waitFor(() => ends.length === 1, 30_000), 'the exchange ended')
  t.same(ends, ['ERR_BACKEND_CLOSED'])
  const open = (): Promise<number> => new Promise((resolve) => server.getConnections((_e, n) => resolve(n)))
  let n = await open()
  const deadline = Date.now() + 20_000
  while (n > 0 && Date.now() < deadline) { await new Promise((resolve) => setTimeout(resolve, 50)); n = await open() }
  t.equal(n, 0, 'the proxy closed the connection of the client that reads nothing')
})
