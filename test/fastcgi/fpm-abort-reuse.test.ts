/**
 * php-fpm (a real peer; it does not multiplex): a client that goes away in the middle of a
 * response closes that request's connection (FastCGI 1.0 §5.4), and keep-alive goes on working for
 * the requests after it — the worker is freed, the next request is answered, and the one after it
 * reuses that request's connection.
 */
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS, type FastcgiOptions } from '../../src/protocols/fastcgi/options.js'
import type { ResponseHandler } from '../../src/core/types.js'
import { makeExchange, record, testContext, unixEndpoint } from './helpers/harness.js'
import { PHP_FIXTURE, PHP_FPM, havePeer, startPhpFpm, tempDir } from './helpers/peers.js'

/** Part of the answer, flushed; then a pause; then the rest (the client leaves during the pause). */
const SLOW = `<?php
header('Content-Type: text/plain');
echo str_repeat('a', 10000); flush();
usleep(400000);
for ($i = 0; $i < 64; $i++) { echo str_repeat('b', 65536); flush(); }
`

type Mode = { name: string, query: string, script: string, opts: Partial<FastcgiOptions> }
const MODES: Mode[] = [
  { name: 'a 16 MiB answer, client paused then gone', query: `big=${16 * 1024 * 1024}`, script: 't.php', opts: { maxConnections: 1 } },
  { name: 'a 16 MiB answer, backend limit unknown', query: `big=${16 * 1024 * 1024}`, script: 't.php', opts: {} },
  { name: 'an answer with a pause, client gone in it', query: '', script: 'slow.php', opts: { maxConnections: 1 } },
]

for (const m of MODES) {
  t.test(`php-fpm, 1 worker: ${m.name}; the next requests are answered on a kept-alive connection`, async (t: Test) => {
    if (!havePeer(t, PHP_FPM)) return
    guardLeaks(t)
    const dir = tempDir(t)
    writeFileSync(join(dir, 't.php'), PHP_FIXTURE)
    writeFileSync(join(dir, 'slow.php'), SLOW)
    const fpm = await startPhpFpm(t, dir, 1)
    const ctx = testContext()
    const client = new FastcgiClient(unixEndpoint(fpm.socketPath), { ...FASTCGI_DEFAULTS, ...m.opts }, ctx)
    t.teardown(() => client.destroy())
    const env = (script: string) => ({ SCRIPT_FILENAME: join(dir, script) })

    // Warm up: one answered request leaves a kept-alive connection.
    const first = record()
    client.dispatch(makeExchange({ query: 'x=1', env: env('t.php') }), first.handler)
    t.equal((await first.done).status, 200)

    const ac = new AbortController()
    let got = 0
    let error: string | null = null
    const gone = new Promise<void>((resolve) => {
      const handler: ResponseHandler = {
        onHead () {},
        // A client that reads a little and stops reading (its socket is full), then leaves.
        onData (chunk) { got += chunk.length; return false },
        onEnd () { error = 'ended'; resolve() },
        onError (err) { error = err.code; resolve() },
        onLocalRedirect () { error = 'redirect'; resolve() },
      }
      client.dispatch(makeExchange({ query: m.query, env: env(m.script), signal: ac.signal }), handler)
    })
    t.ok(await waitFor(() => got > 0, 10_000), 'part of the answer arrived')
    ac.abort()
    await gone
    t.equal(error, 'ERR_CLIENT_ABORTED')
    t.equal(client.inflight, 0)

    const connectsBefore = ctx.connects
    const next = record()
    client.dispatch(makeExchange({ query: 'x=2', env: env('t.php') }), next.handler)
    const rn = await next.done
    t.equal(rn.error, null, 'the next request is answered')
    t.match(rn.body.toString(), /^pid \d+$/)
    t.ok(await waitFor(() => client.connections === 1), 'one connection kept alive')
    const connectsAfterNext = ctx.connects
    t.ok(connectsAfterNext - connectsBefore <= 1, 'at most one new connection for it')
    for (let i = 0; i < 3; i++) {
      const r = record()
      client.dispatch(makeExchange({ query: `x=${3 + i}`, env: env('t.php') }), r.handler)
      t.equal((await r.done).body.toString(), rn.body.toString(), 'the same worker')
    }
    t.equal(ctx.connects, connectsAfterNext, 'the following requests reused that connection')
    t.equal(client.connections, 1)
  })
}
