/**
 * CGI response heads as fcgiwrap passes a shell script's bytes through FCGI_STDOUT (libfcgi cuts
 * them into records of its own size): bare LF, a head of only `Status:` or only `Location:`,
 * `Status: 200` without a reason, a continuation line, a head longer than one record, STDOUT and
 * STDERR interleaved, a non-zero exit after a whole answer, no output at all.
 */
import t from 'tap'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import { header, makeExchange, record, testContext, unixEndpoint } from './helpers/harness.js'
import { FCGIWRAP, havePeer, startFcgiwrap, tempDir } from './helpers/peers.js'

t.test('fcgiwrap: CGI heads through FCGI_STDOUT', async (t) => {
  if (!havePeer(t, FCGIWRAP)) return
  guardLeaks(t)
  const dir = tempDir(t)
  const script = join(dir, 'h.sh')
  writeFileSync(script, [
    '#!/bin/sh',
    'case "$QUERY_STRING" in',
    '  s200) printf "Status: 200\\n\\nbody" ;;',
    '  s204) printf "Status: 204\\n\\n" ;;',
    '  loc) printf "Location: /other?x=1\\n\\n" ;;',
    '  absloc) printf "Location: http://example.com/x\\n\\n" ;;',
    '  cont) printf "Content-Type: text/plain\\nX-A: a\\n b\\n\\nbody" ;;',
    '  mixed) printf "Content-Type: text/plain\\r\\nX-B: 1\\n\\r\\nbody" ;;',
    // 400 fields of ~108 bytes: a 43 KB head, several STDOUT records (libfcgi writes 8 KiB ones).
    '  big) printf "Content-Type: text/plain\\n"; i=0; while [ $i -lt 400 ]; do printf "X-H%d: %0100d\\n" $i $i; i=$((i+1)); done; printf "\\nbig" ;;',
    '  inter) printf "Content-Type: text/plain\\n\\n"; i=0; while [ $i -lt 200 ]; do echo "out$i"; echo "err$i" >&2; i=$((i+1)); done ;;',
    '  exit3) printf "Content-Type: text/plain\\n\\nfull"; exit 3 ;;',
    '  none) exit 0 ;;',
    'esac',
    '',
  ].join('\n'))
  chmodSync(script, 0o755)
  const wrap = await startFcgiwrap(t, dir, 1)
  const client = new FastcgiClient(unixEndpoint(wrap.socketPath), { ...FASTCGI_DEFAULTS, discovery: false }, testContext())
  t.teardown(() => client.destroy())
  const ask = (query: string) => {
    const r = record()
    client.dispatch(makeExchange({ query, env: { SCRIPT_FILENAME: script, SCRIPT_NAME: '/h.sh', DOCUMENT_ROOT: dir } }), r.handler)
    return r.done
  }
  const s200 = await ask('s200')
  t.same([s200.status, s200.statusText, s200.body.toString(), s200.ended], [200, undefined, 'body', true], 'Status: 200 without a reason, bare LF, no Content-Type')
  const s204 = await ask('s204')
  t.same([s204.status, s204.body.length, s204.ended], [204, 0, true], 'a head of only Status')
  const loc = await ask('loc')
  t.same([loc.redirect, loc.status], ['/other?x=1', null], 'only a local Location: a local redirect (RFC 3875 §6.2.2)')
  const absloc = await ask('absloc')
  t.same([absloc.status, header(absloc, 'location')], [302, 'http://example.com/x'], 'only an absolute Location: 302 (§6.2.3)')
  const cont = await ask('cont')
  t.equal(cont.error?.code, 'ERR_BAD_RESPONSE_HEADER', 'a continuation line is refused')
  t.match(cont.error?.message, /continuation/)
  const mixed = await ask('mixed')
  t.same([mixed.status, header(mixed, 'x-b'), mixed.body.toString()], [200, '1', 'body'], 'CRLF and LF mixed, blank line CRLF')
  const big = await ask('big')
  t.equal(big.status, 200, big.error?.message ?? 'a 43 KB head')
  t.equal(big.headers.length / 2, 401, 'all 400 fields of a 43 KB head')
  t.equal(header(big, 'x-h399'), '399'.padStart(100, '0'))
  t.equal(big.body.toString(), 'big')
  const inter = await ask('inter')
  const lines = Array.from({ length: 200 }, (_, i) => i)
  t.equal(inter.body.toString(), lines.map((i) => `out${i}\n`).join(''), 'STDOUT alone in the body')
  t.equal(inter.stderr, lines.map((i) => `err${i}\n`).join(''), 'STDERR alone to onStderr')
  const exit3 = await ask('exit3')
  t.same([exit3.status, exit3.body.toString(), exit3.ended, exit3.error], [200, 'full', true, null], 'a non-zero exit after a whole answer: still whole')
  const none = await ask('none')
  t.equal(none.status, 502, 'no output: fcgiwrap\'s own 502 passes through')
  t.equal((await ask('s200')).status, 200, 'the connection is still good')
})
