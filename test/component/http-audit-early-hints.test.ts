/**
 * A backend that floods `103 Early Hints` to a client that reads nothing: the hints are best
 * effort, so the proxy drops them while the client's queue is backed up instead of queueing every
 * one (measured before the fix: a 64 MiB flood left ~57 MiB queued on the client's socket, RSS
 * ~560 MiB). undici parses interim responses without pausing the connection, so the only bound is
 * on the client's side. No real peer sends 103s on demand: a raw TCP fake writes them.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

const HINTS = Buffer.from('HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n'.repeat(1000))
const FLOOD = 24 * 1024 * 1024

t.test('a 103 flood to a client that reads nothing stays bounded; the response after it arrives intact', async (t) => {
  let written = 0
  let flooded = false
  const be = await rawBackend(t, (s: Socket) => {
    s.on('error', () => {})
    s.once('data', () => {
      void (async () => {
        while (written < FLOOD && !s.destroyed) {
          written += HINTS.length
          if (!s.write(HINTS)) await new Promise((resolve) => { s.once('drain', resolve); s.once('close', resolve) })
        }
        flooded = true
        // Keep-alive, no FIN: the end of a paused response at the backend's FIN is another case
        // (test/component/http-audit-close-paused.test.ts).
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal')
      })()
    })
  })
  const { port, server } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], retries: 0, timeouts: { headers: '60s' } }] })
  const front: Socket[] = []
  server.on('connection', (s: Socket) => front.push(s))
  const c = connect({ port, host: '127.0.0.1' })
  t.teardown(() => c.destroy())
  c.on('error', () => {})
  c.pause()
  c.write('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.ok(await waitFor(() => flooded, 60_000), 'the backend sent its whole flood (the proxy kept reading it)')
  t.equal(front.length, 1, 'one client connection')
  // The kernel's socket buffers take a few MiB of what was written; the rest is the proxy's queue.
  t.ok(front[0].writableLength < 1024 * 1024, `queued for the client: ${front[0].writableLength} bytes (under 1 MiB)`)
  // The client reads now: the final response follows whatever hints went out.
  let got = ''
  c.on('data', (d: Buffer) => { got += d.toString('latin1') })
  c.resume()
  t.ok(await waitFor(() => c.readableEnded || /\r\n\r\nfinal$/.test(got), 60_000), 'the response ends')
  t.match(got, /HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nfinal$/, 'the 200 and its body, after the hints')
  t.ok(got.startsWith('HTTP/1.1 103 Early Hints\r\n'), 'hints did go out while the client could take them')
})
