/**
 * The bench's Node floors (bench/servers/floor-*.mjs) against real peers: each answers what the
 * backend said, byte for byte, at both bench sizes and with requests in parallel, so the bench
 * compares proxycore with proxies that work. Not a performance test.
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, listen } from '../helpers/servers.js'
import { PHP_CGI, PHP_FPM, havePeer, startPhpCgi, startPhpFpm, tempDir } from '../fastcgi/helpers/peers.js'
import { startUwsgi, uwsgiSkip } from '../scgi/uwsgi-peer.js'
import { repo } from './run-bench.js'

/** Start a floor server as the bench does; its port, stopped at teardown. */
async function startFloor (t: Test, file: string, args: string[]): Promise<number> {
  const child = spawn(process.execPath, [join(repo, 'bench/servers', file), ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  t.teardown(async () => { child.kill('SIGTERM'); await exited })
  let out = ''
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString()
      const m = /LISTENING (\d+)/.exec(out)
      if (m !== null) resolve(Number(m[1]))
    })
    child.once('exit', (code) => reject(new Error(`${file} exited with ${code} before it listened`)))
  })
  child.stdout.resume()
  return port
}

/** Both bench sizes, eight at a time each, through the floor at `url(n)`. */
async function checkSizes (t: Test, url: (n: number) => string): Promise<void> {
  for (const n of [100, 65536]) {
    const all = await Promise.all(Array.from({ length: 8 }, () => get(url(n))))
    t.same(all.map((r) => r.status), Array(8).fill(200), `${n} B: all 200`)
    t.ok(all.every((r) => r.body.equals(Buffer.alloc(n, 'x'))), `${n} B: every body intact`)
  }
}

t.test('floor-http: kept-alive raw TCP to a node:http backend', async (t) => {
  guardLeaks(t)
  const backend = createServer((req, res) => {
    const n = Number(req.url!.slice(1))
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': n, 'x-seen-xff': String(req.headers['x-forwarded-for']) })
    res.end(Buffer.alloc(n, 'x'))
  })
  const backendPort = await listen(backend, t)
  const port = await startFloor(t, 'floor-http.mjs', [String(backendPort)])
  await checkSizes(t, (n) => `http://127.0.0.1:${port}/${n}`)
  const r = await get(`http://127.0.0.1:${port}/100`)
  t.equal(r.headers['x-seen-xff'], '127.0.0.1', 'the backend saw X-Forwarded-For')
})

// Over kept-alive connections, two of them: to php-fpm (the FastCGI scenario) and to php-cgi's
// own children (the spawn scenario).
const FASTCGI_PEERS = [
  { name: 'php-fpm', bin: PHP_FPM, startPeer: startPhpFpm },
  { name: 'php-cgi', bin: PHP_CGI, startPeer: startPhpCgi },
]
for (const { name, bin, startPeer } of FASTCGI_PEERS) {
  t.test(`floor-fastcgi: ${name} over kept-alive connections`, async (t) => {
    if (!havePeer(t, bin)) return
    guardLeaks(t)
    const dir = tempDir(t)
    writeFileSync(join(dir, 'bench.php'), "<?php header('Content-Type: text/plain'); echo str_repeat('x', (int)$_SERVER['QUERY_STRING']);\n")
    const peer = await startPeer(t, dir, 2)
    const port = await startFloor(t, 'floor-fastcgi.mjs', [peer.socketPath, dir, '2'])
    await checkSizes(t, (n) => `http://127.0.0.1:${port}/bench.php?${n}`)
  })
}

t.test('floor-scgi: uWSGI, one connection per request', { skip: uwsgiSkip() }, async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  const app = join(dir, 'app.py')
  writeFileSync(app, [
    'def application(environ, start_response):',
    "    n = int(environ.get('QUERY_STRING') or '100')",
    "    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(n))])",
    "    return [b'x' * n]",
    '',
  ].join('\n'))
  const uwsgi = await startUwsgi('scgi', app)
  t.teardown(() => uwsgi.stop())
  const port = await startFloor(t, 'floor-scgi.mjs', [uwsgi.socketPath, app])
  await checkSizes(t, (n) => `http://127.0.0.1:${port}/app?${n}`)
})
