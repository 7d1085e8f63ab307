/**
 * Backend stderr reaches the log capped in lines as well as bytes. php-cgi gathers a request's
 * error_log() calls into one STDERR record, so a backend writing one 1-byte STDERR record at a time
 * is a fault only a fake can produce. Stderr is logged by line (test/component/stderr-lines.test.ts),
 * so the cap counts lines: 300 one-letter lines, each sent as two 1-byte records, would make 300 log
 * lines of one request without it (RELIABILITY: diagnostics are rate- and size-limited).
 */
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { captureLogger } from '../cgi/harness.js'
import { respond, startFake } from './helpers/fake.js'
import { rec } from './helpers/records.js'

t.test('300 lines sent as 600 one-byte STDERR records give 100 log lines and one marker', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-stderr-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const fake = await startFake(t, dir, {
    onRequest: (req) => {
      const loud = req.params.get('REQUEST_URI') === '/loud'
      const records = loud ? Array.from({ length: 600 }, (_, i) => rec(7, req.id, i % 2 === 1 ? '\n' : String.fromCharCode(97 + ((i / 2) % 26)))) : [rec(7, req.id, 'just one')]
      req.sock.write(Buffer.concat(records))
      respond(req, 'done')
    },
  })
  const { logger, lines } = captureLogger()
  const { url } = await proxyServer(t, { logger, routes: [{ protocol: 'fastcgi', backends: [fake.endpoint.id], scriptFilename: join(dir, 'app') }] })
  const r = await get(`${url}/loud`)
  t.same([r.status, r.body.toString()], [200, 'done'])
  const stderr = lines.filter((l) => l.obj.stream === 'stderr')
  t.equal(stderr.length, 101, '100 lines, then one marker')
  t.same(stderr.slice(0, 3).map((l) => l.msg), ['a', 'b', 'c'], 'a line each')
  t.match(stderr.at(-1)?.msg, /the rest of this request's is dropped/)
  await get(`${url}/quiet`)
  t.ok(lines.some((l) => l.obj.stream === 'stderr' && l.msg === 'just one'), 'the cap is per request')
})
