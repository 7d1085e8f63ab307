/**
 * php-fpm with `pm.max_requests`: a worker that has served its quota closes the kept-alive
 * connection right after its last END_REQUEST. A request sent on that connection meanwhile is lost
 * unread. A GET is sent again (the keep-alive race rule); a request whose body has begun cannot be,
 * so it must never be the one that finds out: it goes on a connection that has served nothing yet.
 */
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import { makeExchange, record, testContext, unixEndpoint } from './helpers/harness.js'
import { PHP_FIXTURE, PHP_FPM, havePeer, startPhpFpm, tempDir } from './helpers/peers.js'

for (const maxConnections of [4, null]) {
  t.test(`php-fpm recycling its workers (pm.max_requests = 5), maxConnections ${maxConnections}`, async (t) => {
    if (!havePeer(t, PHP_FPM)) return
    await recycling(t, maxConnections)
  })
}

async function recycling (t: Test, maxConnections: number | null): Promise<void> {
  guardLeaks(t)
  const dir = tempDir(t)
  writeFileSync(join(dir, 't.php'), PHP_FIXTURE)
  const fpm = await startPhpFpm(t, dir, 4, 'pm.max_requests = 5')
  const ctx = testContext()
  const client = new FastcgiClient(unixEndpoint(fpm.socketPath), { ...FASTCGI_DEFAULTS, maxConnections }, ctx)
  t.teardown(() => client.destroy())
  const ask = (method: string, body: Buffer | null) => {
    const r = record()
    client.dispatch(makeExchange({ method, query: 'echo=1', body, env: { SCRIPT_FILENAME: join(dir, 't.php') } }), r.handler)
    return r.done
  }
  const body = Buffer.alloc(2000, 0x61)
  // Eight rounds of 40 at once: every worker is replaced ~16 times under the proxy's connections.
  for (let round = 0; round < 8; round++) {
    const all = await Promise.all(Array.from({ length: 40 }, (_, i) => i % 2 === 0 ? ask('POST', body) : ask('GET', null)))
    const failed = all.filter((x) => x.status !== 200).map((x) => x.error?.code ?? x.status)
    t.same(failed, [], `round ${round + 1}: all 40 answered 200`)
    const posts = all.filter((_, i) => i % 2 === 0)
    t.ok(posts.every((x) => /^POST 2000 2000 /.test(x.body.toString())), `round ${round + 1}: every POST body arrived whole`)
  }
}
