/**
 * An upgrade that fails before the backend's answer gets the code a plain request gets for the same
 * fault (the HTTP adapter's mapping): a connection the backend closes is ERR_BACKEND_CLOSED, a reset
 * ERR_BACKEND_RESET, a malformed or oversized head ERR_BAD_RESPONSE / ERR_RESPONSE_HEAD_TOO_LARGE,
 * no answer ERR_HEADERS_TIMEOUT, a refused connect ERR_CONNECT_REFUSED: in the client's status and
 * body, in `request:end` (the access log's source) and in passive health (a close or a reset counts
 * against the backend). ERR_UPGRADE_FAILED is left for a 101 that does not switch to a protocol
 * (test/component/http-upgrade-refusals.test.ts). node:http upgrade backends where they can do it;
 * raw TCP for the reset and the malformed heads a real server does not send.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { deadPort } from '../helpers/ports.js'
import { proxyServer, rawBackend, rawRequest, upgradeBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

interface Tap { teardown (fn: () => void | Promise<void>): void }

const UPGRADE = (path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n` +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'

interface Case {
  name: string
  backend: (t: Tap) => Promise<{ address: string, sockets: unknown[] }>
  status: number
  code: string
  /** Counted by passive health (BackendPool.attemptFailed). */
  counts: boolean
  timeouts?: Record<string, string>
}

const cases: Case[] = [
  {
    name: 'a node:http backend that closes the socket it got for the upgrade',
    backend: (t) => upgradeBackend(t, (_req, socket) => { socket.end() }),
    status: 502, code: 'ERR_BACKEND_CLOSED', counts: true,
  },
  {
    name: 'a backend that resets the connection after reading the Upgrade',
    backend: (t) => rawBackend(t, (s) => s.once('data', () => s.resetAndDestroy())),
    status: 502, code: 'ERR_BACKEND_RESET', counts: true,
  },
  {
    name: 'a backend that closes in the middle of its head',
    backend: (t) => rawBackend(t, (s) => s.once('data', () => s.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: webs'))),
    status: 502, code: 'ERR_BACKEND_CLOSED', counts: true,
  },
  {
    // Bytes that are not HTTP at all: ERR_PROTOCOL (llhttp's HPE_INVALID_CONSTANT at the start of
    // a message), as for a plain request (the last test).
    name: 'a backend whose answer is no HTTP',
    backend: (t) => rawBackend(t, (s) => s.once('data', () => s.write('SSH-2.0-OpenSSH_9.2\r\n\r\n'))),
    status: 502, code: 'ERR_PROTOCOL', counts: true,
  },
  {
    name: 'a backend whose head is over maxResponseHeadSize',
    backend: (t) => rawBackend(t, (s) => s.once('data', () => s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-Big: ${'a'.repeat(200 * 1024)}\r\n\r\n`))),
    status: 502, code: 'ERR_RESPONSE_HEAD_TOO_LARGE', counts: false,
  },
  {
    name: 'a node:http backend that never answers',
    backend: (t) => upgradeBackend(t, () => {}),
    status: 504, code: 'ERR_HEADERS_TIMEOUT', counts: true, timeouts: { headers: '300ms' },
  },
]

for (const c of cases) {
  t.test(`${c.name}: ${c.status} ${c.code}`, async (t) => {
    const be = await c.backend(t)
    const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0, ...(c.timeouts ? { timeouts: c.timeouts } : {}) }] })
    const ends: RequestEndEvent[] = []
    proxy.events.on('request:end', (e) => ends.push(e))
    const out = await rawRequest(port, UPGRADE('/ws'))
    t.match(out, new RegExp(`^HTTP/1\\.1 ${c.status} [^]*\\r\\n\\r\\n${c.status} [^\\n]*\\n${c.code}\\n$`), 'the status and the code in the body', { out })
    t.ok(await waitFor(() => ends.length === 1), 'request:end')
    t.match(ends, [{ status: c.status, error: c.code, backend: be.address }], 'request:end names the code and the backend')
    t.equal(proxy.routes[0].pool.backends[0].attemptFails, c.counts ? 1 : 0, c.counts ? 'passive health counted the failed attempt' : 'passive health counted nothing')
    // The proxy's side is gone: the backend's socket is closed or has read the proxy's FIN (a
    // node:http server keeps its half open).
    t.ok(await waitFor(() => be.sockets.length > 0 && be.sockets.every((s) => (s as Duplex).destroyed || (s as Duplex).readableEnded), 5000), 'the backend connection is closed')
  })
}

t.test('a backend that refuses the connection: 502 ERR_CONNECT_REFUSED (the connect phase, as a request)', async (t) => {
  const dead = `127.0.0.1:${await deadPort()}`
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [dead], retries: 0 }] })
  const ends: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => ends.push(e))
  const out = await rawRequest(port, UPGRADE('/ws'))
  t.match(out, /^HTTP\/1\.1 502 [^]*\r\n\r\n502 [^\n]*\nERR_CONNECT_REFUSED\n$/, 'the status and the code in the body', { out })
  t.ok(await waitFor(() => ends.length === 1), 'request:end')
  t.match(ends, [{ status: 502, error: 'ERR_CONNECT_REFUSED', backend: dead }])
})

t.test('passive health: a backend that closes every upgrade is disabled after maxFails, its reason ERR_BACKEND_CLOSED', async (t) => {
  const bad = await upgradeBackend(t, (_req, socket) => { socket.end() })
  const good = await upgradeBackend(t, (_req, socket) => {
    socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n')
  })
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [bad.address, good.address], balance: 'round-robin', retries: 0, disableTime: '60s' }] })
  const reasons: string[] = []
  proxy.events.on('backend:disabled', (e) => reasons.push(e.reason ?? ''))
  const b = proxy.routes[0].pool.backends.find((x) => x.endpoint.id === bad.address)!
  const lines: string[] = []
  for (let i = 0; i < 12 && b.state === 'up'; i++) lines.push((await rawRequest(port, UPGRADE(`/u${i}`))).split('\r\n')[0])
  t.equal(b.state, 'disabled', lines.join(' | '))
  t.equal(bad.sockets.length, 3, 'three failed upgrades')
  t.match(reasons, [/^ERR_BACKEND_CLOSED \(3 /])
})

t.test('the same faults on an upgrade and on a plain request to the same backend: the same code', async (t) => {
  const faults: Array<[string, (s: Socket) => void]> = [
    ['a reset', (s) => s.once('data', () => s.resetAndDestroy())],
    ['a close inside the head', (s) => s.once('data', () => s.end('HTTP/1.1 101 Switching Protocols\r\nContent-Type: te'))],
    ['no HTTP', (s) => s.once('data', () => s.write('SSH-2.0-OpenSSH_9.2\r\n\r\n'))],
    ['a field without its colon', (s) => s.once('data', () => s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade websocket\r\n\r\n'))],
  ]
  const codeOf = (out: string): string => /\n(ERR_[A-Z_]+)\n$/.exec(out)?.[1] ?? `none in ${JSON.stringify(out)}`
  for (const [name, fn] of faults) {
    const be = await rawBackend(t, fn)
    const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
    const plain = codeOf(await rawRequest(port, 'POST /plain HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'))
    const upgrade = codeOf(await rawRequest(port, UPGRADE('/ws')))
    t.match(plain, /^ERR_(BACKEND_RESET|BACKEND_CLOSED|BAD_RESPONSE|PROTOCOL)$/, `${name}: the plain request's code`)
    t.equal(upgrade, plain, `${name}: the upgrade's code is the plain request's (${plain})`)
  }
})
