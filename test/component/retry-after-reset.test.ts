/**
 * A backend process that dies under load (docs/guides/spawn.md, "A process that dies under
 * load"): a real php-cgi spawned by proxycore is SIGKILLed while one request runs in it and others
 * wait in its listen queue. An idempotent request whose connection went before any response byte
 * goes to the restarted process (counted against `retries`); a POST is never sent twice; a
 * response whose head reached the client stays cut. Then the bounds: `retries: 0`, a request that
 * kills every process (1 + retries runs), a live master whose worker died (not sent to it again);
 * and the same through the HTTP adapter (a spawned Node server) and SCGI (two uWSGI backends).
 * Deterministic: each app appends a line to a log and waits (bounded) for a gate file, so the test
 * knows what runs when it kills.
 */
import t, { type Test } from 'tap'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { createServer, request, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, listen, closeServer, type Got } from '../helpers/servers.js'
import { havePeer, PHP_CGI } from '../fastcgi/helpers/peers.js'
import { haveUwsgi, launchUwsgi, type UwsgiPeer } from '../scgi/uwsgi-peer.js'
import { createProxy, type CreateProxyOptions, type Proxy } from '../../src/index.js'
import type { SpawnManager } from '../../src/spawn/manager.js'

/**
 * `proxy` behind a node:http server on loopback. At teardown the gate opens first (so no backend
 * is left waiting for it), then the server and the proxy close and the temp dir `T` goes.
 */
async function serveGated (t: Test, proxy: Proxy, gateFile: string, T: string): Promise<{ port: number, m: SpawnManager }> {
  const server: Server = createServer(proxy.handler)
  const port = await listen(server)
  t.teardown(async () => {
    writeFileSync(gateFile, '')
    await closeServer(server)
    await proxy.close(2000)
    rmSync(T, { recursive: true, force: true })
  })
  return { port, m: proxy.spawns as SpawnManager }
}

guardLeaks(t, { timeoutMs: 10_000 })

interface Host { proxy: Proxy, m: SpawnManager, url: string, port: number, T: string, log: () => string[], gate: () => void }

const quiet = { debug () {}, info () {}, warn () {}, error () {} }

async function host (t: Test, socket: 'unix' | 'tcp', retries?: number, children = 0): Promise<Host> {
  const T = mkdtempSync(join(tmpdir(), 'pc-retry-reset-'))
  chmodSync(T, 0o755)
  const www = join(T, 'www')
  mkdirSync(www, { mode: 0o755 })
  const logFile = join(T, 'runs.log')
  const gateFile = join(T, 'gate')
  writeFileSync(logFile, '')
  // Each run appends "METHOD query pid", then waits (at most 30 s) for the gate file.
  const wait = `for ($i = 0; $i < 3000 && !file_exists(${JSON.stringify(gateFile)}); $i++) { usleep(10000); clearstatcache(); }`
  writeFileSync(join(www, 'block.php'), `<?php file_put_contents(${JSON.stringify(logFile)}, $_SERVER['REQUEST_METHOD'] . ' ' . $_SERVER['QUERY_STRING'] . ' ' . getmypid() . ' ' . md5(file_get_contents('php://input')) . "\\n", FILE_APPEND | LOCK_EX); ${wait} echo getmypid();`)
  // The head and a first body chunk go out before the wait: the client has the head when it is killed.
  writeFileSync(join(www, 'streamed.php'), `<?php file_put_contents(${JSON.stringify(logFile)}, $_SERVER['REQUEST_METHOD'] . ' ' . $_SERVER['QUERY_STRING'] . ' ' . getmypid() . "\\n", FILE_APPEND | LOCK_EX); while (ob_get_level() > 0) ob_end_flush(); header('Content-Type: text/plain'); echo str_repeat('x', 100); flush(); ${wait} echo 'done';`)
  // A "query of death": the request kills the process that runs it, every time.
  writeFileSync(join(www, 'die.php'), `<?php file_put_contents(${JSON.stringify(logFile)}, $_SERVER['REQUEST_METHOD'] . ' ' . $_SERVER['QUERY_STRING'] . ' ' . getmypid() . "\\n", FILE_APPEND | LOCK_EX); if (function_exists('posix_kill')) posix_kill(getmypid(), 9); else exec('kill -9 ' . getmypid()); echo 'alive';`)
  const proxy = await createProxy({
    logger: quiet,
    spawns: {
      php: {
        binPath: PHP_CGI,
        socketName: socket === 'unix' ? join(T, 'php.sock') : '127.0.0.1:0',
        environment: { PHP_FCGI_CHILDREN: String(children), PHP_FCGI_MAX_REQUESTS: '0' },
        minProcs: 1,
        idleTimeout: 0,
        stopTimeout: 2000,
        restart: { initialDelay: 20, maxDelay: 100, maxStarts: 100, window: 60_000 },
      },
    },
    routes: [{ protocol: 'fastcgi', spawn: 'php', docroot: www, timeouts: { headers: '30s' }, ...(retries !== undefined ? { retries } : {}) }],
  } as CreateProxyOptions)
  const { port, m } = await serveGated(t, proxy, gateFile, T)
  t.ok(await waitFor(() => m.status()[0].processes.some((p) => p.state === 'ready'), 15_000), 'php-cgi is ready')
  return {
    proxy, m, url: `http://127.0.0.1:${port}`, port, T,
    log: () => readFileSync(logFile, 'utf8').split('\n').filter((l) => l !== ''),
    gate: () => writeFileSync(gateFile, ''),
  }
}

/** The pid of the one ready php-cgi. */
function phpPid (h: Host): number {
  const p = h.m.status()[0].processes.find((x) => x.state === 'ready')
  if (p === undefined || p.pid === null) throw new Error('no ready php-cgi')
  return p.pid
}

/** Requests leased to php-cgi: in its process or its listen queue. */
function inflight (h: Host): number {
  return h.m.status()[0].processes.reduce((n, p) => n + p.inflight, 0)
}

/**
 * A process killed under a request: php-cgi's socket is reset (ERR_BACKEND_RESET, what was
 * measured every time); Linux ends a connection with a plain EOF instead when its closing end had
 * nothing unread (ERR_BACKEND_CLOSED, test/scgi/scgi-reset-killed-worker.test.ts), so both are taken.
 */
const LOST = /^ERR_BACKEND_(RESET|CLOSED)$/

/** The error code an error page names, or ''. */
function code (r: Got): string {
  return /ERR_[A-Z_]+/.exec(r.body.toString())?.[0] ?? ''
}

/**
 * Start `first` (it runs in php-cgi: its log line appears), then `queued` (leased to php-cgi, in
 * its listen queue), SIGKILL php-cgi, open the gate, and collect every answer.
 */
async function killWhileBusy (t: Test, h: Host, first: { method: string, query: string }, queued: Array<{ method: string, query: string }>): Promise<{ first: Got, queued: Got[], killed: number }> {
  const send = (r: { method: string, query: string }): Promise<Got> => get(`${h.url}/block.php?${r.query}`, { method: r.method, ...(r.method === 'POST' || r.method === 'PUT' ? { body: `body-${r.query}` } : {}) })
  const a = send(first)
  t.ok(await waitFor(() => h.log().some((l) => l.startsWith(`${first.method} ${first.query} `)), 15_000), `${first.method} ${first.query} runs in php-cgi`)
  const rest = queued.map(send)
  t.ok(await waitFor(() => inflight(h) === 1 + queued.length, 15_000), `${1 + queued.length} requests leased to the php-cgi process`)
  const killed = phpPid(h)
  process.kill(killed, 'SIGKILL')
  h.gate()
  return { first: await a, queued: await Promise.all(rest), killed }
}

for (const socket of ['unix', 'tcp'] as const) {
  t.test(`${socket}: GET and HEAD in flight and queued when php-cgi is SIGKILLed go to the restarted process`, async (t) => {
    if (!havePeer(t, PHP_CGI)) return
    const h = await host(t, socket)
    const r = await killWhileBusy(t, h, { method: 'GET', query: 'g0' }, [
      { method: 'GET', query: 'g1' }, { method: 'GET', query: 'g2' }, { method: 'HEAD', query: 'h1' }, { method: 'GET', query: 'g3' },
    ])
    t.equal(r.first.status, 200, `the GET the killed process was running: 200 (${code(r.first)})`)
    t.not(r.first.body.toString(), String(r.killed), 'answered by another process')
    t.same(r.queued.map((x) => x.status), [200, 200, 200, 200], `the queued GETs and HEAD: 200 (${r.queued.map(code).join(' ')})`)
    const log = h.log()
    t.equal(log.filter((l) => l.startsWith('GET g0 ')).length, 2, 'the GET that was running ran again in the new process')
    t.equal(log.filter((l) => l.startsWith('HEAD h1 ')).length, 1, 'the HEAD ran once (it waited in the queue)')
  })
}

t.test('a POST the killed process was running: 502 ERR_BACKEND_RESET, run once; the GET queued behind it: 200', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  const h = await host(t, 'unix')
  const r = await killWhileBusy(t, h, { method: 'POST', query: 'p0' }, [{ method: 'GET', query: 'g1' }])
  t.equal(r.first.status, 502, 'the POST: 502')
  t.match(code(r.first), LOST, `ERR_BACKEND_RESET (${code(r.first)})`)
  t.equal(r.queued[0].status, 200, `the GET queued behind it: 200 (${code(r.queued[0])})`)
  t.equal(h.log().filter((l) => l.startsWith('POST p0 ')).length, 1, 'the POST ran once')
})

t.test('a PUT (idempotent) with a body the killed process was running: sent again from its spooled body', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  const h = await host(t, 'unix')
  const r = await killWhileBusy(t, h, { method: 'PUT', query: 'u0' }, [])
  t.equal(r.first.status, 200, `the PUT: 200 (${code(r.first)})`)
  const runs = h.log().filter((l) => l.startsWith('PUT u0 '))
  t.equal(runs.length, 2, 'it ran again in the new process')
  const md5 = createHash('md5').update('body-u0').digest('hex')
  t.same(runs.map((l) => l.split(' ')[3]), [md5, md5], 'with the whole body both times')
})

t.test('retries: 0: the GET the killed process was running is not sent again', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  const h = await host(t, 'unix', 0)
  const r = await killWhileBusy(t, h, { method: 'GET', query: 'g0' }, [])
  t.equal(r.first.status, 502, 'the GET: 502')
  t.match(code(r.first), LOST, `ERR_BACKEND_RESET (${code(r.first)})`)
  t.equal(h.log().filter((l) => l.startsWith('GET g0 ')).length, 1, 'it ran once')
})

t.test('a GET whose response head reached the client: cut when php-cgi is killed, not sent again', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  const h = await host(t, 'unix')
  const got = new Promise<{ status: number, bytes: number, aborted: boolean }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: h.port, path: '/streamed.php?s0' }, (res) => {
      let bytes = 0
      let first = true
      res.on('data', (c: Buffer) => {
        bytes += c.length
        // The head and the first chunk are here: now kill the process that is sending them.
        if (first) { first = false; process.kill(phpPid(h), 'SIGKILL') }
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, aborted: false }))
      res.on('error', () => resolve({ status: res.statusCode ?? 0, bytes, aborted: true }))
      res.on('aborted', () => resolve({ status: res.statusCode ?? 0, bytes, aborted: true }))
    })
    req.on('error', reject)
    req.end()
  })
  const r = await got
  t.equal(r.status, 200, 'the head was 200')
  t.ok(r.aborted, `the response was cut (${r.bytes} bytes)`)
  t.ok(r.bytes > 0 && r.bytes <= 100, `only what php-cgi sent before it died (${r.bytes} of its 100 bytes)`)
  h.gate()
  // The restarted process is up and serving: anything sent again would have run by the time it answers.
  const after = await get(`${h.url}/block.php?after`)
  t.equal(after.status, 200, 'the restarted process answers')
  t.equal(h.log().filter((l) => l.startsWith('GET s0 ')).length, 1, 'the cut GET ran once')
})

t.test('a query of death (a GET that kills its process): run 1 + retries times, each by a new process, then 502', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  const h = await host(t, 'unix')
  const r = await get(`${h.url}/die.php?q0`)
  t.equal(r.status, 502, 'then 502')
  t.match(code(r), LOST, `the last attempt's reset (${code(r)})`)
  const runs = h.log().filter((l) => l.startsWith('GET q0 '))
  t.equal(runs.length, 3, 'run 3 times: once, then retries (2) more')
  t.equal(new Set(runs.map((l) => l.split(' ')[2])).size, 3, 'by 3 different processes')
})

t.test('a live process whose worker died (php-cgi with PHP_FCGI_CHILDREN=2): the GET is not sent to it again', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  const h = await host(t, 'unix', undefined, 2)
  const master = phpPid(h)
  const started = Date.now()
  const a = get(`${h.url}/block.php?w0`)
  t.ok(await waitFor(() => h.log().some((l) => l.startsWith('GET w0 ')), 15_000), 'GET w0 runs in a php-cgi worker')
  const worker = Number(h.log().find((l) => l.startsWith('GET w0 '))?.split(' ')[2])
  t.not(worker, master, 'a worker, not the master the spawn lists')
  process.kill(worker, 'SIGKILL')
  h.gate()
  const r = await a
  t.equal(r.status, 502, 'the GET: 502')
  t.match(code(r), LOST, `ERR_BACKEND_RESET (${code(r)})`)
  t.equal(h.log().filter((l) => l.startsWith('GET w0 ')).length, 1, 'it ran once')
  // The wait for a replacement gives up once the listed process is still there after 1 s, far
  // from the 30 s bound of the wait (timeouts.headers).
  t.ok(Date.now() - started < 15_000, `answered within 15 s (${Date.now() - started} ms), not at the end of the 30 s wait`)
  t.equal(phpPid(h), master, 'the master still serves')
  t.equal((await get(`${h.url}/block.php?w1`)).status, 200, 'and answers the next request')
})

t.test('http: a spawned Node server SIGKILLed with GETs in it: they go to the restarted process', async (t) => {
  const T = mkdtempSync(join(tmpdir(), 'pc-retry-reset-http-'))
  const logFile = join(T, 'runs.log')
  const gateFile = join(T, 'gate')
  writeFileSync(logFile, '')
  const app = join(T, 'app.mjs')
  // Logs "GET url pid", then answers once the gate file exists (polled, at most 30 s).
  writeFileSync(app, `import { createServer } from 'node:http'
import { appendFileSync, existsSync } from 'node:fs'
const server = createServer((req, res) => {
  appendFileSync(${JSON.stringify(logFile)}, req.method + ' ' + req.url + ' ' + process.pid + '\\n')
  let n = 0
  const poll = () => { if (existsSync(${JSON.stringify(gateFile)}) || ++n > 3000) res.end(String(process.pid)); else setTimeout(poll, 10) }
  poll()
})
server.listen(Number(process.env.PORT), process.env.HOST)
`)
  const proxy = await createProxy({
    logger: quiet,
    spawns: { app: { binPath: [process.execPath, app], socketName: '127.0.0.1:0', handoff: 'self', minProcs: 1, idleTimeout: 0, stopTimeout: 2000, restart: { initialDelay: 20, maxDelay: 100, maxStarts: 100, window: 60_000 } } },
    routes: [{ protocol: 'http', spawn: 'app', timeouts: { headers: '30s' } }],
  } as CreateProxyOptions)
  const { port, m } = await serveGated(t, proxy, gateFile, T)
  const ready = (): Array<{ pid: number | null, inflight: number }> => m.status()[0].processes.filter((p) => p.state === 'ready')
  t.ok(await waitFor(() => ready().length === 1, 15_000), 'the Node server is ready')
  const lines = (): string[] => readFileSync(logFile, 'utf8').split('\n').filter((l) => l !== '')
  const all = [0, 1, 2, 3].map((i) => get(`http://127.0.0.1:${port}/n${i}`))
  t.ok(await waitFor(() => lines().length === 4, 15_000), 'the 4 GETs are in the Node server')
  const killed = ready()[0].pid as number
  process.kill(killed, 'SIGKILL')
  writeFileSync(gateFile, '')
  const got = await Promise.all(all)
  t.same(got.map((r) => r.status), [200, 200, 200, 200], `all 200 (${got.map(code).join(' ')})`)
  t.ok(got.every((r) => r.body.toString() !== String(killed)), 'answered by the restarted process')
  t.equal(lines().length, 8, 'each ran again in the new process')
})

t.test('scgi: a uWSGI worker SIGKILLed with a GET in it: the GET goes to the other backend; a POST: 502, run once', async (t) => {
  if (!haveUwsgi(t)) return
  const T = mkdtempSync(join(tmpdir(), 'pc-retry-reset-scgi-'))
  chmodSync(T, 0o755)
  const logFile = join(T, 'runs.log')
  const gateFile = join(T, 'gate')
  writeFileSync(logFile, '')
  const app = join(T, 'app.py')
  // Logs "METHOD query pid", reads the body, then answers once the gate file exists (at most 30 s).
  writeFileSync(app, [
    'import os, time',
    'def application(environ, start_response):',
    `    with open(${JSON.stringify(logFile)}, 'a') as f: f.write('%s %s %d\\n' % (environ['REQUEST_METHOD'], environ.get('QUERY_STRING', ''), os.getpid()))`,
    "    n = int(environ.get('CONTENT_LENGTH') or 0)",
    "    if n: environ['wsgi.input'].read(n)",
    '    for i in range(3000):',
    `        if os.path.exists(${JSON.stringify(gateFile)}): break`,
    '        time.sleep(0.01)',
    "    start_response('200 OK', [('Content-Type', 'text/plain')])",
    '    return [str(os.getpid()).encode()]',
    '',
  ].join('\n'))
  const args = (socketPath: string): string[] => ['--plugin', 'python3', '--scgi-socket', socketPath, '--wsgi-file', app, '--master', '--processes', '2', '--die-on-term', '--disable-logging']
  const peers: UwsgiPeer[] = []
  t.teardown(async () => {
    writeFileSync(gateFile, '')
    for (const p of peers) await p.stop()
    rmSync(T, { recursive: true, force: true })
  })
  peers.push(await launchUwsgi(args), await launchUwsgi(args))
  const proxy = await createProxy({
    logger: quiet,
    routes: [{ protocol: 'scgi', backends: peers.map((p) => `unix:${p.socketPath}`), scriptFilename: app, balance: 'round-robin', timeouts: { headers: '30s' } }],
  } as CreateProxyOptions)
  const server: Server = createServer(proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(2000) })
  const lines = (): string[] => readFileSync(logFile, 'utf8').split('\n').filter((l) => l !== '')
  const runs = (m: string): string[] => lines().filter((l) => l.startsWith(m))
  const killWhileRunning = async (method: string, query: string): Promise<{ r: Got, worker: number }> => {
    const a = get(`http://127.0.0.1:${port}/x?${query}`, { method, ...(method === 'POST' ? { body: 'payload' } : {}) })
    t.ok(await waitFor(() => runs(`${method} ${query} `).length === 1, 15_000), `${method} ${query} runs in a uWSGI worker`)
    const worker = Number(runs(`${method} ${query} `)[0].split(' ')[2])
    process.kill(worker, 'SIGKILL')
    writeFileSync(gateFile, '')
    const r = await a
    rmSync(gateFile, { force: true })
    return { r, worker }
  }
  const g = await killWhileRunning('GET', 'g0')
  t.equal(g.r.status, 200, `the GET: 200 (${code(g.r)})`)
  t.not(g.r.body.toString(), String(g.worker), 'answered by another worker')
  t.equal(runs('GET g0 ').length, 2, 'it ran again on the other backend')
  const p = await killWhileRunning('POST', 'p0')
  t.equal(p.r.status, 502, 'the POST: 502')
  t.match(code(p.r), LOST, `the reset (${code(p.r)})`)
  t.equal(runs('POST p0 ').length, 1, 'the POST ran once')
})
