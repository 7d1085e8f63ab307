/**
 * php-fpm's fastcgi_finish_request(): the worker sends END_REQUEST and keeps running the script.
 * The client gets its answer at once. Nothing on the wire says when the script ends, so with
 * keepConn (FCGI_KEEP_CONN, nginx's `fastcgi_keep_conn on`) the next request sent on that kept-alive
 * connection waits for the script's end even while another worker is idle; without keepConn it
 * goes on a new connection that an idle worker takes (nginx's default). This records both (see
 * docs/guides/php.md), by order of events, not by timing.
 */
import t, { type Test } from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import { makeExchange, record, testContext, unixEndpoint } from './helpers/harness.js'
import { PHP_FPM, havePeer, startPhpFpm, tempDir } from './helpers/peers.js'

const SCRIPT = `<?php
if (isset($_GET['finish'])) {
  echo 'early';
  fastcgi_finish_request();
  sleep(3);
  touch(__DIR__ . '/script-ended');
  exit;
}
echo 'pid ', getmypid();
`

async function run (t: Test, keepConn: boolean) {
  guardLeaks(t)
  const dir = tempDir(t)
  writeFileSync(join(dir, 't.php'), SCRIPT)
  const fpm = await startPhpFpm(t, dir, 2)
  const client = new FastcgiClient(unixEndpoint(fpm.socketPath), { ...FASTCGI_DEFAULTS, keepConn, multiplex: false, maxConnections: 2 }, testContext())
  t.teardown(() => client.destroy())
  const ended = () => existsSync(join(dir, 'script-ended'))
  const ask = async (query: string) => {
    const r = record()
    client.dispatch(makeExchange({ query, env: { SCRIPT_FILENAME: join(dir, 't.php') } }), r.handler)
    const got = await r.done
    return { status: got.status, body: got.body.toString(), error: got.error?.code, scriptEnded: ended() }
  }
  t.equal((await ask('')).status, 200, 'warm')
  const first = await ask('finish=1')
  t.same(first, { status: 200, body: 'early', error: undefined, scriptEnded: false }, 'answered before the script ended')
  return ask('')
}

t.test('php-fpm fastcgi_finish_request()', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  t.test('keepConn: the next request on that connection waits for the script to end', async (t) => {
    const next = await run(t, true)
    t.same(next, { status: 200, body: next.body, error: undefined, scriptEnded: true })
  })
  t.test('keepConn false: the next request is taken by the idle worker at once', async (t) => {
    const next = await run(t, false)
    t.same(next, { status: 200, body: next.body, error: undefined, scriptEnded: false })
  })
})
