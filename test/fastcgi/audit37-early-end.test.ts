/**
 * END_REQUEST before the request's whole STDIN stream was written (FastCGI 1.0 §6.2): the rest of
 * the body is never sent, so the connection must not be kept. php-fpm's fastcgi_finish_request()
 * sends END_REQUEST and drains the body at the script's end: on a kept connection its worker waited
 * for STDIN records that never came, for as long as the connection stayed idle (idleTimeout). nginx
 * keeps no connection whose request body was not sent whole (request_body_sent).
 */
import t from 'tap'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import { makeExchange, record, testContext, unixEndpoint } from './helpers/harness.js'
import { endBody, rec } from './helpers/records.js'
import { PHP_FPM, havePeer, tempDir } from './helpers/peers.js'
import { PARTIAL_BODY_LENGTH, oneWorkerPool } from './helpers/one-worker.js'

t.test('php-fpm: fastcgi_finish_request() before the body arrived frees its worker at once', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  guardLeaks(t)
  const dir = tempDir(t)
  const script = join(dir, 't.php')
  const marker = join(dir, 'read')
  writeFileSync(script, `<?php
if (isset($_GET['finish'])) {
  echo 'early';
  fastcgi_finish_request();
  file_put_contents(__DIR__ . '/read', strlen(file_get_contents('php://input')));
  exit;
}
echo 'pid ', getmypid();
`)
  const { a, b, body } = await oneWorkerPool(t, dir, { idleTimeout: 120_000 })
  const env = { SCRIPT_FILENAME: script }
  const r1 = record()
  a.dispatch(makeExchange({ method: 'PUT', query: 'finish=1', body, contentLength: PARTIAL_BODY_LENGTH, env }), r1.handler)
  const first = await r1.done
  t.same({ status: first.status, body: first.body.toString(), error: first.error?.code }, { status: 200, body: 'early', error: undefined })
  // With the connection kept, the script's read blocked until idleTimeout (120 s) closed it.
  t.ok(await waitFor(() => existsSync(marker), 30_000), 'the script\'s read of php://input returns (the connection was closed)')
  const read = Number(readFileSync(marker, 'utf8'))
  t.ok(read < 4 << 20, `php saw a short body (${read} bytes), never a whole one we did not send`)
  const r2 = record()
  b.dispatch(makeExchange({ env }), r2.handler)
  const second = await r2.done
  t.equal(second.status, 200, 'the one worker serves another client')
  const r3 = record()
  a.dispatch(makeExchange({ env }), r3.handler)
  t.equal((await r3.done).status, 200, 'and the first client\'s next request')
})

t.test('the wire: no request follows a STDIN stream cut by END_REQUEST on that connection', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  const path = join(dir, 'raw.sock')
  // Records received, per connection, as "type:id:contentLength".
  const conns: string[][] = []
  const sockets = new Set<Socket>()
  const server = createServer((sock) => {
    const seen: string[] = []
    conns.push(seen)
    sockets.add(sock)
    sock.on('close', () => sockets.delete(sock))
    sock.on('error', () => {})
    let buf = Buffer.alloc(0)
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk])
      while (buf.length >= 8) {
        const type = buf[1]; const id = buf.readUInt16BE(2); const len = buf.readUInt16BE(4); const pad = buf[6]
        if (buf.length < 8 + len + pad) return
        buf = buf.subarray(8 + len + pad)
        seen.push(`${type}:${id}:${len}`)
        // Answer once the params are in, without waiting for STDIN (an application may: §6.2).
        if (type === 4 && len === 0) sock.write(Buffer.concat([rec(6, id, 'Status: 403\r\n\r\nno'), rec(6, id), rec(3, id, endBody(0, 0))]))
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(path, resolve))
  t.teardown(async () => { for (const s of sockets) s.destroy(); await new Promise<void>((resolve) => server.close(() => resolve())) })
  const ctx = testContext()
  const client = new FastcgiClient(unixEndpoint(path), { ...FASTCGI_DEFAULTS, discovery: false, maxConnections: 4 }, ctx)
  t.teardown(() => client.destroy())
  const body = new PassThrough()
  t.teardown(() => { body.destroy() })
  body.write(Buffer.alloc(1000, 0x41))
  const r1 = record()
  client.dispatch(makeExchange({ method: 'PUT', body, contentLength: 100_000 }), r1.handler)
  t.equal((await r1.done).status, 403)
  const r2 = record()
  client.dispatch(makeExchange({}), r2.handler)
  t.equal((await r2.done).status, 403)
  t.equal(ctx.connects, 2, 'the second request went on a new connection')
  t.ok(await waitFor(() => conns.length === 2 && conns[1].length === 4, 10_000), 'both requests arrived')
  t.same(conns[0].filter((r) => r.startsWith('1:')), ['1:1:8'], 'one BEGIN_REQUEST on the first connection')
  t.same(conns[1], ['1:1:8', conns[1][1], '4:1:0', '5:1:0'], 'the GET alone on the second')
})
