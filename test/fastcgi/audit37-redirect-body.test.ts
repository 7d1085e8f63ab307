/**
 * A local redirect (RFC 3875 §6.2.2: a head of only `Location: /path`) that comes while the
 * request's body is still being sent. The adapter stops sending the body when the exchange settles;
 * the request used to stay on the wire until its END_REQUEST — which php-fpm sends only after it
 * has drained the body at the script's end. The worker waited for STDIN that never came, holding
 * the connection (not idle, so no idleTimeout) and itself for good. php-fpm makes such a head with
 * `default_mimetype` empty and status 200; for a PUT it reads no body before the script runs.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { makeExchange, record, type Recorded } from './helpers/harness.js'
import { PHP_FPM, havePeer, tempDir } from './helpers/peers.js'
import { PARTIAL_BODY_LENGTH, oneWorkerPool } from './helpers/one-worker.js'

/** `done`, or null after `ms` (a deadline for a request that, before the fix, never ended). */
function within (done: Promise<Recorded>, ms: number): Promise<Recorded | null> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<null>((resolve) => { timer = setTimeout(() => resolve(null), ms) })
  return Promise.race([done, late]).finally(() => clearTimeout(timer))
}

t.test('php-fpm: a local redirect before the body was sent frees the worker', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  guardLeaks(t)
  const dir = tempDir(t)
  const script = join(dir, 't.php')
  writeFileSync(script, `<?php
if (isset($_GET['r'])) { ini_set('default_mimetype', ''); header('Location: /elsewhere', true, 200); echo 'dropped'; flush(); exit; }
echo 'pid ', getmypid();
`)
  const { a, b, body } = await oneWorkerPool(t, dir)
  const env = { SCRIPT_FILENAME: script }
  const r1 = record()
  a.dispatch(makeExchange({ method: 'PUT', query: 'r=1', body, contentLength: PARTIAL_BODY_LENGTH, env }), r1.handler)
  const first = await r1.done
  t.same({ redirect: first.redirect, status: first.status, error: first.error?.code }, { redirect: '/elsewhere', status: null, error: undefined }, 'a local redirect')
  const r2 = record()
  b.dispatch(makeExchange({ env }), r2.handler)
  const second = await within(r2.done, 30_000)
  t.equal(second?.status, 200, 'the one worker serves another client')
  const r3 = record()
  a.dispatch(makeExchange({ env }), r3.handler)
  const third = await within(r3.done, 30_000)
  t.equal(third?.status, 200, 'and the first client\'s next request')
})
