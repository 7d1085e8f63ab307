/**
 * CONNECT (a tunnel to host:port, what a forward proxy opens) is not offered: a reverse proxy
 * answers 501 ERR_CONNECT_METHOD and closes, never leaves the client with a socket closed
 * unanswered (node:http without a 'connect' listener) or a hang. Both the embedding
 * (`proxy.connect` on the server's 'connect' event) and `proxycore serve`'s gateway.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createProxy, silentLogger } from '../../src/index.js'
import { Gateway } from '../../src/gateway/server.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, closeServer, listen, rawRequest } from '../helpers/servers.js'

const CONNECT = 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'

function check (t: Test, answer: string): void {
  t.match(answer, /^HTTP\/1\.1 501 Not Implemented\r\n/, 'a status line, not a socket closed unanswered')
  t.match(answer, /\r\nconnection: close\r\n/i)
  t.match(answer, /\r\nx-proxycore-error: ERR_CONNECT_METHOD\r\n|ERR_CONNECT_METHOD/)
}

t.test('embedded: proxy.connect answers 501 and the request is reported', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('ok'))
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: [be.address] }] })
  const server = createServer(proxy.handler)
  server.on('connect', proxy.connect)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const ends: Array<{ status: number, error: string | null, method: string }> = []
  proxy.events.on('request:end', (e) => ends.push(e))
  check(t, await rawRequest(port, CONNECT))
  t.match(ends, [{ status: 501, error: 'ERR_CONNECT_METHOD', method: 'CONNECT' }])
  // The same connection after it: closed; a fresh one is served as before.
  t.match(await rawRequest(port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 /)
})

t.test('proxycore serve (the gateway) answers it too', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('ok'))
  const dir = mkdtempSync(join(tmpdir(), 'pc-connect-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0\nroutes:\n  - protocol: http\n    backends: [${be.address}]\n`)
  const gw = new Gateway({ configFile: file, log: silentLogger })
  await gw.start()
  t.teardown(() => gw.close())
  const port = Number(new URL(gw.addresses[0]).port)
  check(t, await rawRequest(port, CONNECT))
  t.match(await rawRequest(port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 /)
})

t.test('a refused client that keeps its side open is closed after the lingering bound', { timeout: 90_000 }, async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('ok'))
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', match: { prefix: '/ws/' }, backends: [be.address] }] })
  const server = createServer(proxy.handler)
  server.on('connect', proxy.connect)
  server.on('upgrade', proxy.upgrade)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  for (const [what, head, status] of [
    ['an upgrade no route takes', 'GET /elsewhere HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n', 404],
    ['a CONNECT', CONNECT, 501],
  ] as const) {
    // allowHalfOpen: the client reads the answer and the proxy's FIN, and never ends its side.
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
    let got = ''
    let closed = false
    s.on('data', (d: Buffer) => { got += d.toString('latin1') })
    s.on('close', () => { closed = true })
    s.write(head)
    t.ok(await waitFor(() => got.includes('\r\n\r\n'), 10_000), `${what}: answered`)
    t.match(got, new RegExp(`^HTTP/1\\.1 ${status} `))
    // The proxy closes its socket within its 5 s idle bound (30 s in all; margin for a loaded
    // machine). The client, past the FIN, sees nothing of a close(2): the server's count tells.
    const open = async (): Promise<number> => await new Promise((resolve) => server.getConnections((_e, n) => resolve(n)))
    t.equal(await open(), 1, `${what}: held while the client may still send`)
    t.ok(await waitFor(async () => await open() === 0, 25_000), `${what}: the proxy closed the half-open socket`)
    t.notOk(closed, 'the client did not close it')
    s.destroy()
  }
})
