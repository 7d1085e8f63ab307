/**
 * SERVER_NAME when the request names no host (HTTP/1.0 without Host, or an empty Host) falls back
 * to the local address. RFC 3875 §4.1.14: `server-name = hostname | ipv4-address | ( "[" ipv6-address "]" )`,
 * so an IPv6 local address is sent in brackets, as a Host header carries it: a script building
 * `http://$SERVER_NAME:$SERVER_PORT/` must not get `http://::1:8080/`. REMOTE_ADDR and SERVER_ADDR
 * stay bare addresses (§4.1.8), and an IPv4 peer of a dual-stack listener is shown unmapped.
 * Real peers: a shell CGI printing `env` and php-cgi as FastCGI printing $_SERVER, behind a
 * listener on `::` (dual stack).
 */
import t from 'tap'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createProxy } from '../../src/index.js'
import { buildCgiEnv } from '../../src/core/cgi/env.js'
import { guardLeaks } from '../helpers/leaks.js'
import { closeServer } from '../helpers/servers.js'
import { parseEnv, tempDir } from '../cgi/harness.js'
import { PHP_CGI, havePeer } from '../fastcgi/helpers/peers.js'

/** One raw request; everything until the server closes (every request here ends the connection). */
function raw (host: string, port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port })
    const out: Buffer[] = []
    s.on('data', (d: Buffer) => out.push(d))
    s.on('close', () => resolve(Buffer.concat(out).toString('latin1')))
    s.on('error', reject)
    s.write(text)
  })
}

function envOf (response: string): Record<string, string> {
  const at = response.indexOf('\r\n\r\n')
  return parseEnv(at < 0 ? '' : response.slice(at + 4))
}

t.test('buildCgiEnv: the local-address fallback is a server-name (§4.1.14)', async (t) => {
  const env = (localAddress: string, rawHeaders: string[], httpVersion = '1.1', defaultServerName?: string): Record<string, string> => buildCgiEnv({
    method: 'GET', url: '/x', path: '/x', query: '', httpVersion, headers: {}, rawHeaders,
    client: { address: '::1', port: 1, localAddress, localPort: 2, secure: false },
    script: { filename: '/srv/x', name: '/x', pathInfo: '', docroot: '/srv' },
    serverSoftware: 'proxycore/test', contentLength: null,
    ...(defaultServerName !== undefined ? { defaultServerName } : {}),
  })
  t.equal(env('::1', [], '1.0').SERVER_NAME, '[::1]', 'no Host, IPv6 local address: bracketed')
  t.equal(env('2001:db8::7', ['Host', '']).SERVER_NAME, '[2001:db8::7]', 'empty Host: bracketed')
  t.equal(env('::1', [], '1.0').SERVER_ADDR, '::1', 'SERVER_ADDR stays bare')
  t.equal(env('::ffff:10.1.2.3', [], '1.0').SERVER_NAME, '10.1.2.3', 'a mapped IPv4 address: plain, no brackets')
  t.equal(env('127.0.0.1', [], '1.0').SERVER_NAME, '127.0.0.1')
  t.equal(env('::1', [], '1.0', 'www.example').SERVER_NAME, 'www.example', 'the route serverName wins, as configured')
})

t.test('SERVER_NAME from the local address is bracketed for IPv6; REMOTE_ADDR is unmapped', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t, { timeoutMs: 10_000 })
  const dir = tempDir(t, 'pc-audit-sn-')
  const www = join(dir, 'www')
  mkdirSync(join(www, 'cgi'), { recursive: true })
  writeFileSync(join(www, 'cgi', 'env.sh'), "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nenv\n")
  chmodSync(join(www, 'cgi', 'env.sh'), 0o755)
  writeFileSync(join(www, 'env.php'), '<?php foreach (["SERVER_NAME", "SERVER_ADDR", "REMOTE_ADDR", "SERVER_PORT"] as $k) echo $k, "=", $_SERVER[$k] ?? "(unset)", "\\n";')
  chmodSync(dir, 0o755)
  const proxy = await createProxy({
    spawns: {
      cgi: { socketType: 'pipe', copyEnvironment: ['PATH'], stopTimeout: 500 },
      fcgi: { binPath: `${PHP_CGI} -n`, socketName: join(dir, 'php.sock'), environment: { PHP_FCGI_CHILDREN: '1' }, stopTimeout: '2s' },
    },
    routes: [
      { match: { prefix: '/cgi/' }, protocol: 'cgi', spawn: 'cgi', docroot: join(www, 'cgi'), stripPrefix: true },
      { match: { extension: '.php' }, protocol: 'fastcgi', spawn: 'fcgi', docroot: www },
    ],
  })
  const server = createServer(proxy.handler)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const listening = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false))
    server.listen(0, '::', () => resolve(true))
  })
  if (!listening) {
    t.plan(0, 'no IPv6 on this host')
    return
  }
  const port = (server.address() as { port: number }).port

  for (const path of ['/cgi/env.sh', '/env.php']) {
    const v6 = envOf(await raw('::1', port, `GET ${path} HTTP/1.0\r\n\r\n`))
    t.equal(v6.SERVER_NAME, '[::1]', `${path}: HTTP/1.0 without Host over IPv6: SERVER_NAME in brackets`)
    t.equal(v6.SERVER_ADDR, '::1', `${path}: SERVER_ADDR bare`)
    t.equal(v6.REMOTE_ADDR, '::1', `${path}: REMOTE_ADDR bare (§4.1.8)`)
    t.equal(v6.SERVER_PORT, String(port))

    const empty = envOf(await raw('::1', port, `GET ${path} HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n`))
    t.equal(empty.SERVER_NAME, '[::1]', `${path}: empty Host over IPv6: SERVER_NAME in brackets`)

    const named = envOf(await raw('::1', port, `GET ${path} HTTP/1.1\r\nHost: [::1]:${port}\r\nConnection: close\r\n\r\n`))
    t.equal(named.SERVER_NAME, '[::1]', `${path}: an IPv6 Host keeps its brackets, loses its port`)

    const v4 = envOf(await raw('127.0.0.1', port, `GET ${path} HTTP/1.0\r\n\r\n`))
    t.equal(v4.SERVER_NAME, '127.0.0.1', `${path}: IPv4 peer of a dual-stack listener: SERVER_NAME unmapped, no brackets`)
    t.equal(v4.REMOTE_ADDR, '127.0.0.1', `${path}: REMOTE_ADDR unmapped (not ::ffff:127.0.0.1)`)
    t.equal(v4.SERVER_ADDR, '127.0.0.1')
  }
})
