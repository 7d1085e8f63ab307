/**
 * HTTP adapter audit (round 36): forwarding headers for a client of a unix-socket listener
 * (`listen: unix:/path`), whose peer has no address.
 * - X-Forwarded-For: the entry proxycore appends was empty (`X-Forwarded-For: ` alone, or
 *   `1.2.3.4, ` after a client's own list): a backend that drops empty list elements took the
 *   client's `1.2.3.4` for the address the proxy saw. Now `unix:`, as nginx writes (`$remote_addr`).
 * - Forwarded: `for=;proto=http`, an empty value RFC 7239 has no syntax for (a strict parser drops
 *   the whole field). Now `for=unknown` (RFC 7239 §6.3).
 * A TCP client is unchanged (its address), checked alongside.
 */
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createProxy, silentLogger } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, closeServer, get, listen } from '../helpers/servers.js'

guardLeaks(t)

/** One GET over the unix socket at `path`, with `headers`; resolves at the response's end. */
function getUnix (path: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: path, path: '/x', headers, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('a unix-socket client: X-Forwarded-For names `unix:`, Forwarded `for=unknown`', async (t) => {
  const seen: Array<Record<string, string | string[] | undefined>> = []
  const b = await backend(t, (req, res) => { seen.push(req.headers); res.end('ok') })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: [b.address], forwarded: true }] })
  const dir = mkdtempSync(join(tmpdir(), 'pc-audit36-unix-'))
  const sock = join(dir, 'front.sock')
  const front = createServer(proxy.handler)
  await new Promise<void>((resolve) => front.listen(sock, resolve))
  const tcp = createServer(proxy.handler)
  const tcpPort = await listen(tcp)
  t.teardown(async () => {
    await closeServer(front)
    await closeServer(tcp)
    await proxy.close(1000)
    rmSync(dir, { recursive: true, force: true })
  })

  t.equal(await getUnix(sock, {}), 200)
  t.equal(seen[0]?.['x-forwarded-for'], 'unix:', 'no client list: the entry alone')
  t.equal(seen[0]?.forwarded, 'for=unknown;proto=http;host=localhost', 'Forwarded: for=unknown')

  t.equal(await getUnix(sock, { 'x-forwarded-for': '1.2.3.4', forwarded: 'for=1.2.3.4' }), 200)
  t.equal(seen[1]?.['x-forwarded-for'], '1.2.3.4, unix:', 'the client\'s list, then the entry proxycore appends')
  t.equal(seen[1]?.forwarded, 'for=unknown;proto=http;host=localhost', 'an untrusted client\'s own Forwarded element is dropped')

  // A TCP client: its address, as before.
  t.equal((await get(`http://127.0.0.1:${tcpPort}/x`, { headers: { 'x-forwarded-for': '1.2.3.4' } })).status, 200)
  t.equal(seen[2]?.['x-forwarded-for'], '1.2.3.4, 127.0.0.1')
  t.equal(seen[2]?.forwarded, `for=127.0.0.1;proto=http;host="127.0.0.1:${tcpPort}"`)
})
