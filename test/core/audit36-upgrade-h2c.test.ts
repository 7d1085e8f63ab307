/**
 * `Upgrade: h2c` is never tunnelled (src/core/upgrade.ts). An HTTP/2 connection through the
 * tunnel would carry requests for any path of the backend past everything the proxy decides per
 * request (the route's match and stripPrefix, its authorizer): "h2c smuggling". nginx never passes
 * Upgrade unless told to; proxycore asks the backend as it does today, but:
 * - HTTP2-Settings is connection-specific (RFC 7540 §3.2.1) and never forwarded, even when the
 *   client's Connection does not list it, so an HTTP/2 server must not switch (§3.2);
 * - a backend that switches to h2c anyway gets no tunnel: 502 ERR_UPGRADE_FAILED, its connection
 *   closed, and the route keeps serving; it answered, so it is no failed attempt (passive health):
 *   clients asking for h2c do not get it disabled.
 * No h2c-capable server is installed here (no nghttpd, Go or python h2): the permissive backend
 * that switches without HTTP2-Settings is raw TCP, writing what such a server writes.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import type { Proxy, RequestEndEvent } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

interface Tap { teardown (fn: () => unknown): void }

function ends (proxy: Proxy): RequestEndEvent[] {
  const out: RequestEndEvent[] = []
  proxy.events.on('request:end', (e) => out.push(e))
  return out
}

function client (t: Tap, port: number, head: string): { text: () => string, closed: () => boolean } {
  const c = connect({ port, host: '127.0.0.1' })
  let text = ''
  let closed = false
  c.on('data', (d: Buffer) => { text += d.toString('latin1') })
  c.on('error', () => {})
  c.on('close', () => { closed = true })
  c.write(head)
  t.teardown(() => { c.destroy() })
  return { text: () => text, closed: () => closed }
}

/** The connection preface an HTTP/2 client sends first, then a SETTINGS frame header. */
const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'

/** A permissive h2c server: switches whether or not HTTP2-Settings came; plain requests get 200. */
function h2cServer (heads: string[], afterSwitch: { text: string }, sockets: Socket[]): (s: Socket) => void {
  return (s) => {
    sockets.push(s)
    let got = ''
    let switched = false
    s.on('data', (d: Buffer) => {
      if (switched) { afterSwitch.text += d.toString('latin1'); return }
      got += d.toString('latin1')
      let i
      while (!switched && (i = got.indexOf('\r\n\r\n')) >= 0) {
        const head = got.slice(0, i)
        got = got.slice(i + 4)
        heads.push(head)
        if (/\r\nupgrade: *h2c/i.test(head)) {
          switched = true
          // Its 101, then its SETTINGS frame (an empty one).
          s.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00')
          if (got !== '') afterSwitch.text += got
        } else {
          s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
        }
      }
    })
  }
}

const H2C = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`

t.test('an h2c upgrade a backend accepts is not tunnelled, and HTTP2-Settings never reaches it', async (t) => {
  const heads: string[] = []
  const backendSockets: Socket[] = []
  const after = { text: '' }
  const be = await rawBackend(t, h2cServer(heads, after, backendSockets))
  const { port, url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const ev = ends(proxy)

  // What h2csmuggler sends: HTTP2-Settings not named in Connection, so not hop-by-hop by that rule.
  const c = client(t, port, H2C('/public') + PREFACE)
  t.ok(await waitFor(() => c.closed(), 5000), 'the client connection ends')
  t.equal(heads.length, 1, 'the backend was asked once')
  t.notMatch(heads[0] ?? '', /http2-settings/i, 'without HTTP2-Settings')
  t.match(c.text(), /^HTTP\/1\.1 502 [^]*ERR_UPGRADE_FAILED/, '502 ERR_UPGRADE_FAILED, not a 101')
  t.notMatch(c.text(), /101 Switching/, 'no 101 reaches the client')
  t.equal(after.text, '', 'no client byte (the HTTP/2 preface) reaches the backend')
  t.ok(await waitFor(() => backendSockets.every((s) => s.destroyed), 5000), 'the switched backend connection is closed')
  t.ok(await waitFor(() => ev.length === 1, 5000))
  t.match(ev[0], { status: 502, error: 'ERR_UPGRADE_FAILED' })

  t.equal((await get(`${url}/next`)).status, 200, 'the route still serves')
})

t.test('h2c upgrades a backend switches for do not count against it: maxFails 1, two backends, each still asked in turn', async (t) => {
  const heads: string[][] = [[], []]
  const sockets: Socket[] = []
  const after = { text: '' }
  const b0 = await rawBackend(t, h2cServer(heads[0], after, sockets))
  const b1 = await rawBackend(t, h2cServer(heads[1], after, sockets))
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [b0.address, b1.address], balance: 'round-robin', maxFails: 1 }] })
  const ev = ends(proxy)
  for (let i = 0; i < 4; i++) {
    const c = client(t, port, H2C(`/n${i}`))
    t.ok(await waitFor(() => c.closed(), 5000), `attempt ${i}: the client connection ends`)
    t.match(c.text(), /^HTTP\/1\.1 502 /)
  }
  t.ok(await waitFor(() => ev.length === 4, 5000))
  t.same(heads.map((h) => h.length), [2, 2], 'round-robin over both: neither was disabled')
  t.ok(await waitFor(() => sockets.every((s) => s.destroyed), 5000), 'every switched connection closed')
})
