/**
 * The bench's Node floors (bench/servers/floor-*.mjs) against real peers: each answers what the
 * backend said, byte for byte, at both bench sizes and with requests in parallel, so the bench
 * compares proxycore with proxies that work; the static floor serves a docroot's files as a static
 * server must. Not a performance test.
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import { randomBytes } from 'node:crypto'
import { mkdirSync, statSync, writeFileSync } from 'node:fs'
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

// The two HTTP floors: raw kept-alive TCP (the least Node can do), and undici's Pool (what proxycore
// builds on), each to the same node:http backend.
const HTTP_FLOORS = [
  { file: 'floor-http.mjs', what: 'kept-alive raw TCP to a node:http backend' },
  { file: 'floor-undici.mjs', what: 'undici Pool to a node:http backend' },
]
for (const { file, what } of HTTP_FLOORS) {
  t.test(`${file.replace('.mjs', '')}: ${what}`, async (t) => {
    guardLeaks(t)
    const backend = createServer((req, res) => {
      const n = Number(req.url!.slice(1))
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': n, 'x-seen-xff': String(req.headers['x-forwarded-for']) })
      res.end(Buffer.alloc(n, 'x'))
    })
    const backendPort = await listen(backend, t)
    const port = await startFloor(t, file, [String(backendPort)])
    await checkSizes(t, (n) => `http://127.0.0.1:${port}/${n}`)
    const r = await get(`http://127.0.0.1:${port}/100`)
    t.equal(r.headers['x-seen-xff'], '127.0.0.1', 'the backend saw X-Forwarded-For')
  })
}

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

t.test('floor-static: the files of a docroot, exact bytes and length, 404 for what is not there', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-floor-static-')
  const root = join(dir, 'www')
  mkdirSync(join(root, 'sub'), { recursive: true })
  // Random bytes, not a fill: a body from the wrong offset or the wrong file shows. 200 000 B takes
  // several 64 KiB reads.
  const files = new Map([100, 65536, 200_000].map((n) => [`/${n}.txt`, randomBytes(n)]))
  for (const [name, bytes] of files) writeFileSync(join(root, name), bytes)
  writeFileSync(join(root, 'sub', 'a b.css'), 'p{}')
  writeFileSync(join(dir, 'outside.txt'), 'not served')
  const port = await startFloor(t, 'floor-static.mjs', [root])
  const url = (p: string): string => `http://127.0.0.1:${port}${p}`

  for (const [name, bytes] of files) {
    const all = await Promise.all(Array.from({ length: 8 }, () => get(url(name))))
    t.same(all.map((r) => r.status), Array(8).fill(200), `${name}: all 200`)
    t.ok(all.every((r) => r.body.equals(bytes)), `${name}: every body is the file, byte for byte`)
    t.ok(all.every((r) => r.headers['content-length'] === String(bytes.length)), `${name}: Content-Length ${bytes.length}`)
    t.equal(all[0].headers['content-type'], 'text/plain; charset=utf-8', `${name}: Content-Type from the extension`)
    t.equal(all[0].headers['last-modified'], statSync(join(root, name)).mtime.toUTCString(), `${name}: Last-Modified is the file's mtime`)
    t.equal(all[0].headers['transfer-encoding'], undefined, `${name}: not chunked`)
  }

  const head = await get(url('/65536.txt'), { method: 'HEAD' })
  t.equal(head.status, 200, 'HEAD: 200')
  t.equal(head.headers['content-length'], '65536', 'HEAD: the length of the file')
  t.equal(head.body.length, 0, 'HEAD: no body')

  const q = await get(url('/sub/a%20b.css?v=3'))
  t.equal(q.status, 200, 'a query is dropped and the path decoded')
  t.equal(q.body.toString(), 'p{}')
  t.equal(q.headers['content-type'], 'text/css; charset=utf-8')

  for (const [path, status, what] of [
    ['/nope.txt', 404, 'a missing file'],
    ['/sub', 404, 'a directory'],
    ['/sub/', 404, 'a directory with its slash'],
    ['/%2e%2e/outside.txt', 404, 'an encoded .. stays inside the docroot'],
    ['/%E0%A4%A', 400, 'a malformed escape'],
  ] as const) {
    const r = await get(url(path))
    t.equal(r.status, status, `${what}: ${status}`)
    t.notOk(r.body.toString().includes('not served'), `${what}: nothing from outside the docroot`)
  }
  const post = await get(url('/100.txt'), { method: 'POST', body: 'x' })
  t.equal(post.status, 405, 'POST: 405')
  t.equal(post.headers.allow, 'GET, HEAD')

  // Still serving after the refusals (no descriptor or handler left in a bad state).
  const again = await get(url('/100.txt'))
  t.ok(again.body.equals(files.get('/100.txt') ?? Buffer.alloc(0)), 'then the file again')
})
