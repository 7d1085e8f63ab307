/**
 * php-fpm killing a worker in the middle of a POST (`request_terminate_timeout`): the script has
 * acted, the connection closes without a response byte. That looks like the keep-alive race, but a
 * POST is not idempotent and must not be run again (docs/protocols/fastcgi.md "Retry and replay").
 */
import t from 'tap'
import { readFileSync, writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import { makeExchange, record, testContext, unixEndpoint } from './helpers/harness.js'
import { PHP_FPM, havePeer, startPhpFpm, tempDir } from './helpers/peers.js'

const SCRIPT = `<?php
if ($_SERVER['REQUEST_METHOD'] !== 'GET') {
  file_put_contents(__DIR__ . '/ran.log', $_SERVER['REQUEST_METHOD'] . "\\n", FILE_APPEND);
  sleep(30);
}
echo 'ok';
`

t.test('php-fpm: a bodiless POST whose worker is killed after acting runs once, on a fresh connection', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  guardLeaks(t)
  const dir = tempDir(t)
  writeFileSync(join(dir, 't.php'), SCRIPT)
  const fpm = await startPhpFpm(t, dir, 1, 'request_terminate_timeout = 1s')
  // maxConnections 1: the GET's kept-alive connection is the one a replayable request would reuse.
  const client = new FastcgiClient(unixEndpoint(fpm.socketPath), { ...FASTCGI_DEFAULTS, maxConnections: 1 }, testContext())
  t.teardown(() => client.destroy())
  const ask = (method: string) => {
    const r = record()
    client.dispatch(makeExchange({ method, env: { SCRIPT_FILENAME: join(dir, 't.php') } }), r.handler)
    return r.done
  }
  const g = await ask('GET')
  t.equal(g.status, 200, g.error?.message ?? fpm.log())
  const p = await ask('POST')
  t.ok(p.error?.code === 'ERR_BACKEND_CLOSED' || p.error?.code === 'ERR_BACKEND_RESET', `${p.error?.code ?? p.status}: the POST fails, it is not sent again`)
  t.equal(p.error?.retryable, false)
  const ran = existsSync(join(dir, 'ran.log')) ? readFileSync(join(dir, 'ran.log'), 'utf8') : ''
  t.equal(ran, 'POST\n', 'the script ran once')
  const again = await ask('GET')
  t.equal(again.status, 200, 'php-fpm replaced the worker; the next request is served')
})
