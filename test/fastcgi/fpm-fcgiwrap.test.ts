/**
 * Integration against php-fpm (static pool of 2) and fcgiwrap running a shell CGI script, plus a
 * differential cross-check: npm fastcgi-client and our client ask the same php-fpm the same thing.
 */
import t, { type Test } from 'tap'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createRequire } from 'node:module'
import { guardLeaks } from '../helpers/leaks.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import { header, makeExchange, record, testContext, unixEndpoint, type ExchangeInit } from './helpers/harness.js'
import { FCGIWRAP, PHP_FIXTURE, PHP_FPM, havePeer, startFcgiwrap, startPhpFpm, tempDir } from './helpers/peers.js'

function clientFor (t: Test, socketPath: string, defaults: Record<string, string>) {
  const ctx = testContext()
  const client = new FastcgiClient(unixEndpoint(socketPath), { ...FASTCGI_DEFAULTS }, ctx)
  t.teardown(() => client.destroy())
  const ask = (init: ExchangeInit = {}) => {
    const r = record()
    client.dispatch(makeExchange({ ...init, env: { ...defaults, ...init.env } }), r.handler)
    return r.done
  }
  return { ctx, client, ask }
}

t.test('php-fpm', async (t) => {
  if (!havePeer(t, PHP_FPM)) return

  t.test('GET, POST, keep-alive, queueing over pm.max_children=2, STDERR', async (t) => {
    guardLeaks(t)
    const dir = tempDir(t)
    writeFileSync(join(dir, 't.php'), PHP_FIXTURE)
    const fpm = await startPhpFpm(t, dir, 2)
    const { ctx, client, ask } = clientFor(t, fpm.socketPath, { SCRIPT_FILENAME: join(dir, 't.php') })
    const r = await ask()
    t.equal(r.status, 200, r.error?.message ?? fpm.log())
    t.match(r.body.toString(), /^pid \d+$/)
    t.ok(client.backendValues.answered, 'php-fpm answers FCGI_GET_VALUES')
    t.equal(client.backendValues.mpxsConns, false)
    const body = Buffer.alloc(100_000, 0x41)
    const p = await ask({ method: 'POST', query: 'echo=1', body })
    t.match(p.body.toString(), /^POST 100000 100000 [0-9a-f]{32}$/)
    const all = await Promise.all(Array.from({ length: 12 }, () => ask({ query: 'sleep=10' })))
    t.same(all.map((x) => x.error?.code ?? x.status), Array(12).fill(200), 'none fails')
    const pids = new Set(all.map((x) => x.body.toString().split(' ')[1]))
    t.ok(pids.size <= 2, `served by ${pids.size} workers`)
    // php-fpm gives no usable FCGI_MAX_CONNS: one connection per concurrent request, and idle ones
    // are closed while others wait, so none is parked in the backlog behind a kept-alive worker.
    t.ok(client.connections <= 2, `connections kept: ${client.connections}`)
    const told = ctx.logs.filter((l) => l.level === 'warn' && /options\.maxConnections/.test(l.msg ?? ''))
    t.equal(told.length, 1, 'the operator is told once to set maxConnections')
    t.same(told[0]?.obj, { backend: client.backend })
    const e = await ask({ query: 'stderr=fpm' })
    t.equal(e.status, 200)
    t.match(e.stderr, /to-stderr-fpm/)
    const s = await ask({ query: 'status=1' })
    t.equal(s.status, 404)
    t.equal(header(s, 'x-test'), 'yes')
  })

  t.test('maxConnections: 2 matches the pool: pure reuse, nothing parked', async (t) => {
    guardLeaks(t)
    const dir = tempDir(t)
    writeFileSync(join(dir, 't.php'), PHP_FIXTURE)
    const fpm = await startPhpFpm(t, dir, 2)
    const ctx = testContext()
    const client = new FastcgiClient(unixEndpoint(fpm.socketPath), { ...FASTCGI_DEFAULTS, maxConnections: 2 }, ctx)
    t.teardown(() => client.destroy())
    const all = await Promise.all(Array.from({ length: 10 }, () => {
      const r = record()
      client.dispatch(makeExchange({ query: 'sleep=5', env: { SCRIPT_FILENAME: join(dir, 't.php') } }), r.handler)
      return r.done
    }))
    t.same(all.map((x) => x.error?.code ?? x.status), Array(10).fill(200), 'none fails')
    t.equal(ctx.connects, 3, 'discovery + 2 kept-alive connections')
    t.same(ctx.logs.filter((l) => l.level === 'warn'), [], 'nothing to tell the operator')
  })

  t.test('differential: fastcgi-client 0.2.0 and our client see the same response from php-fpm', async (t) => {
    guardLeaks(t)
    const dir = tempDir(t)
    writeFileSync(join(dir, 't.php'), PHP_FIXTURE)
    const fpm = await startPhpFpm(t, dir, 2)
    const { ask } = clientFor(t, fpm.socketPath, { SCRIPT_FILENAME: join(dir, 't.php') })
    const require = createRequire(import.meta.url)
    const fcgiClient = require('fastcgi-client') as (o: object) => NodeJS.EventEmitter & { request: Function }
    const theirs = fcgiClient({ sockFile: fpm.socketPath, maxConns: 1, maxReqs: 1, mpxsConns: false, skipCheckServer: true })
    await new Promise<void>((resolve, reject) => { theirs.once('ready', resolve); theirs.once('error', reject) })
    // Kept under one socket read: fastcgi-client throws when a record header straddles two reads
    // (BENCH.md), which made a 200 KB comparison flaky.
    const query = 'big=30000'
    const env = makeExchange({ query, env: { SCRIPT_FILENAME: join(dir, 't.php') } }).env!
    const theirBytes = await new Promise<Buffer>((resolve, reject) => {
      theirs.request(env, (err: Error | null, req: { stdin: NodeJS.WritableStream, stdout: NodeJS.ReadableStream, stderr: NodeJS.ReadableStream }) => {
        if (err) return reject(err)
        const parts: Buffer[] = []
        req.stdout.on('data', (c: Buffer) => parts.push(c))
        req.stdout.on('end', () => resolve(Buffer.concat(parts)))
        req.stderr.resume()
        req.stdin.end()
      })
    })
    const ours = await ask({ query })
    const sep = theirBytes.indexOf('\r\n\r\n')
    t.ok(sep > 0, 'their raw STDOUT has a CGI head')
    t.ok(theirBytes.subarray(sep + 4).equals(ours.body), 'identical body bytes')
    t.equal(ours.body.length, 30_000)
    const theirHead = theirBytes.subarray(0, sep).toString('latin1').split('\r\n').map((l) => l.split(': ')[0].toLowerCase()).sort()
    const ourNames = ours.headers.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase()).sort()
    t.same(ourNames, theirHead, 'same header names')
  })
})

t.test('fcgiwrap', async (t) => {
  if (!havePeer(t, FCGIWRAP)) return
  guardLeaks(t)
  const dir = tempDir(t)
  const script = join(dir, 'hello.sh')
  writeFileSync(script, [
    '#!/bin/sh',
    'printf "Content-Type: text/plain\\r\\nX-Method: %s\\r\\n\\r\\n" "$REQUEST_METHOD"',
    'echo "query=$QUERY_STRING"',
    'echo "oops" >&2',
    '[ "$REQUEST_METHOD" = POST ] && wc -c',
    'exit 0',
    '',
  ].join('\n'))
  chmodSync(script, 0o755)
  const wrap = await startFcgiwrap(t, dir, 1)
  const { client, ask } = clientFor(t, wrap.socketPath, { SCRIPT_FILENAME: script, SCRIPT_NAME: '/hello.sh', DOCUMENT_ROOT: dir })
  const r = await ask({ query: 'a=1' })
  t.equal(r.status, 200, r.error?.message ?? wrap.log())
  t.equal(header(r, 'x-method'), 'GET')
  t.equal(r.body.toString(), 'query=a=1\n')
  t.match(r.stderr, /oops/, 'fcgiwrap -f forwards the script stderr as FCGI_STDERR')
  t.equal(client.backendValues.mpxsConns, false, `fcgiwrap discovery: ${JSON.stringify(client.backendValues)}`)
  const p = await ask({ method: 'POST', body: Buffer.alloc(70_000, 0x42) })
  t.match(p.body.toString(), /70000/)
  const missing = await ask({ env: { SCRIPT_FILENAME: join(dir, 'missing.sh') } })
  t.equal(missing.status, 403, 'fcgiwrap\'s own status for a missing script passes through')
  const all = await Promise.all(Array.from({ length: 5 }, () => ask()))
  t.same(all.map((x) => x.status), Array(5).fill(200), 'queued behind one fcgiwrap worker')
})
