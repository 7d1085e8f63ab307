/**
 * A slow-drip upload (slowloris on the request body), byte by byte on a raw socket, against a
 * route with one admission slot (maxConcurrent 1, queue 0): while bytes keep coming the upload is
 * alive and holds the slot (another request is refused 503), and once the client pauses for
 * timeouts.clientIdle it gets 408 ERR_REQUEST_TIMEOUT and the slot is free again. Both for a body
 * streamed to an HTTP backend and for one spooled for a CGI script.
 */
import t, { type Test } from 'tap'
import { type Socket } from 'node:net'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { Raw } from '../helpers/raw-client.js'
import { backend, get, proxyServer } from '../helpers/servers.js'
import { cgiProxy, tempDir, writeScripts } from '../cgi/harness.js'

const CLIENT_IDLE = 400

interface Drip { socket: Socket, raw: () => string, closed: () => boolean, stop: () => void }

/** Send `head`, then the bytes of `body` one at a time every `everyMs` until stop(). */
function drip (port: number, head: string, body: Buffer, everyMs: number): Drip {
  const c = new Raw(port, head)
  let i = 0
  const timer = setInterval(() => {
    if (c.closed || i >= body.length) { clearInterval(timer); return }
    c.socket.write(body.subarray(i, i + 1))
    i++
  }, everyMs)
  return { socket: c.socket, raw: () => c.raw, closed: () => c.closed, stop: () => clearInterval(timer) }
}

const spoolFds = (): number => [...openFds().values()].filter((p) => p.includes('proxycore-spool-')).length

async function slowloris (t: Test, port: number, path: string, extraCheck?: () => void): Promise<void> {
  // A chunked body of one 70 000-byte chunk whose bytes trickle in: more than the spool keeps in memory.
  const payload = Buffer.alloc(70_000, 'x')
  const body = Buffer.concat([Buffer.from(`${payload.length.toString(16)}\r\n`), payload])
  const d = drip(port, `POST ${path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n`, body, 20)
  t.teardown(() => { d.stop(); d.socket.destroy() })
  // Dripping for several clientIdle periods: alive, and holding the route's only slot.
  const until = Date.now() + CLIENT_IDLE * 4
  await waitFor(() => Date.now() >= until || d.raw() !== '', CLIENT_IDLE * 10)
  t.equal(d.raw(), '', 'a trickle faster than clientIdle is not idle')
  const other = await get(`http://127.0.0.1:${port}${path}`)
  t.equal(other.status, 503, 'the slot is held meanwhile (maxConcurrent 1, queue 0)')
  extraCheck?.()
  d.stop()
  const started = Date.now()
  t.ok(await waitFor(() => d.raw().includes('\r\n\r\n'), 15_000), 'answered once the client pauses')
  t.match(d.raw(), /^HTTP\/1\.1 408 /, '408', { raw: d.raw().slice(0, 200) })
  t.match(d.raw(), /ERR_REQUEST_TIMEOUT/)
  t.ok(Date.now() - started < 15_000, 'within a bound of clientIdle (generous)')
  t.ok(await waitFor(() => d.closed(), 5000), 'the connection is closed')
  const after = await get(`http://127.0.0.1:${port}${path}`)
  t.equal(after.status, 200, 'the slot is free again')
}

t.test('HTTP backend: streamed body', async (t) => {
  guardLeaks(t)
  const up = await backend(t, (req, res) => { req.resume(); req.on('end', () => res.end('ok')) })
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [up.address], maxConcurrent: 1, queue: 0, timeouts: { clientIdle: CLIENT_IDLE } }] })
  await slowloris(t, port, '/x')
})

t.test('CGI: spooled body', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, { 'ok.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok'\n" })
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: dir, match: { prefix: '/' }, maxConcurrent: 1, queue: 0, timeouts: { clientIdle: CLIENT_IDLE } }])
  await slowloris(t, p.port, '/ok.sh')
  t.ok(await waitFor(() => spoolFds() === 0, 5000), 'no spool fd left')
})
