/**
 * A backend's stderr on its way to the log: a FastCGI backend's FCGI_STDERR (a raw socket peer
 * sending crafted records) and a CGI script's stderr pipe (a real perl script).
 * - Past the byte cap the rest is dropped, and the log says so (a marker), for FastCGI as for CGI.
 * - A UTF-8 character split between two records (or two pipe reads) is logged whole, not as two
 *   U+FFFD with its bytes lost.
 */
import t from 'tap'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { captureLogger, cgiProxy } from '../cgi/harness.js'
import { respond, startFake } from '../fastcgi/helpers/fake.js'
import { rec } from '../fastcgi/helpers/records.js'
import { PHP_CGI, havePeer, startPhpCgi, tempDir } from '../fastcgi/helpers/peers.js'

const E_ACUTE = Buffer.from('é', 'utf8') // c3 a9

t.test('FastCGI: STDERR past stderrLimit is dropped with a marker in the log, not silently', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-loghyg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const fake = await startFake(t, dir, {
    onRequest: (req) => {
      // 3 records of 40 bytes against a limit of 100: the third is cut after 20.
      req.sock.write(Buffer.concat([rec(7, req.id, 'a'.repeat(39) + '\n'), rec(7, req.id, 'b'.repeat(39) + '\n'), rec(7, req.id, 'c'.repeat(39) + '\n'), rec(7, req.id, 'd'.repeat(39) + '\n')]))
      respond(req, 'done')
    },
  })
  const { logger, lines } = captureLogger()
  const { url } = await proxyServer(t, { logger, routes: [{ protocol: 'fastcgi', backends: [fake.endpoint.id], scriptFilename: join(dir, 'app'), options: { stderrLimit: 100 } }] })
  const r = await get(`${url}/x`)
  t.same([r.status, r.body.toString()], [200, 'done'])
  const stderr = lines.filter((l) => l.obj.stream === 'stderr').map((l) => l.msg)
  t.same(stderr.slice(0, 3), ['a'.repeat(39), 'b'.repeat(39), 'c'.repeat(20)], 'the first 100 bytes, as they came')
  t.equal(stderr.length, 4, 'then one marker, once')
  t.equal(stderr[3], '[stderr truncated after 100 bytes]', 'the marker says the rest was dropped and where')
})

t.test('FastCGI: a UTF-8 character split between two STDERR records is logged whole', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-loghyg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const fake = await startFake(t, dir, {
    onRequest: (req) => {
      // "caf" + c3 | a9 + " ok\n": php-cgi cuts its records by size, wherever a character ends.
      req.sock.write(Buffer.concat([
        rec(7, req.id, Buffer.concat([Buffer.from('café '), Buffer.from('caf'), E_ACUTE.subarray(0, 1)])),
        rec(7, req.id, Buffer.concat([E_ACUTE.subarray(1), Buffer.from(' ok\n')])),
      ]))
      respond(req, 'done')
    },
  })
  const { logger, lines } = captureLogger()
  const { url } = await proxyServer(t, { logger, routes: [{ protocol: 'fastcgi', backends: [fake.endpoint.id], scriptFilename: join(dir, 'app') }] })
  const r = await get(`${url}/x`)
  t.equal(r.status, 200)
  const text = lines.filter((l) => l.obj.stream === 'stderr').map((l) => l.msg).join('')
  t.notOk(text.includes('\ufffd'), `no replacement character: ${JSON.stringify(text)}`)
  t.equal(text, 'café café ok', 'every byte logged, the character whole')
})

// Writes a line, then the start of another ending in the first byte of "é", then waits for the
// request body (sent only once the first line was logged, so the rest is a pipe read of its own),
// then the second byte and the rest of the line.
const SPLIT = `#!/usr/bin/perl
$| = 1;
syswrite(STDERR, "first\\ncaf\\xc3");
my $line = <STDIN>;
syswrite(STDERR, "\\xa9 ok\\n");
print "Content-Type: text/plain\\r\\n\\r\\ndone";
`

t.test('CGI: a UTF-8 character split between two stderr reads is logged whole', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-loghyg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const docroot = join(dir, 'cgi-bin')
  mkdirSync(docroot)
  writeFileSync(join(docroot, 'split.pl'), SPLIT)
  chmodSync(join(docroot, 'split.pl'), 0o755)
  // Streamed (not spooled): the script runs, and writes its first part, before the body is whole.
  const p = await cgiProxy(t, { cgi: { socketType: 'pipe' } }, [{ match: { prefix: '/c/' }, protocol: 'cgi', spawn: 'cgi', docroot, stripPrefix: true, requestBuffering: false }])
  const body = await new Promise<string>((resolve, reject) => {
    const req = request(`${p.url}/c/split.pl`, { method: 'POST', agent: false, headers: { 'content-length': 3 } }, (res) => {
      let s = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { s += c })
      res.on('end', () => resolve(s))
    })
    req.on('error', reject)
    req.write('x')
    // The first half reached the proxy (the line before it was logged) before the rest is written.
    void waitFor(() => p.lines.some((l) => l.obj.stream === 'stderr'), 10_000).then(() => req.end('y\n'))
  })
  t.equal(body, 'done')
  t.ok(await waitFor(() => p.lines.filter((l) => l.obj.stream === 'stderr').map((l) => l.msg).join('').includes('ok'), 10_000), 'the second part was logged')
  const text = p.lines.filter((l) => l.obj.stream === 'stderr').map((l) => l.msg).join('')
  t.notOk(text.includes('\ufffd'), `no replacement character: ${JSON.stringify(text)}`)
  t.same(p.lines.filter((l) => l.obj.stream === 'stderr').map((l) => l.msg), ['first', 'café ok'], 'every byte logged, the character whole')
})

const PHP = `<?php
$n = (int)$_GET['n'];
error_log($_GET["p"] . str_repeat("\\u{e9}", $n) . " end");
echo 'logged';
`

t.test('php-cgi: a long error_log() of multi-byte characters is one entry cut without splitting a character, and capped with a marker', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-loghyg-')
  writeFileSync(join(dir, 'log.php'), PHP)
  const php = await startPhpCgi(t, dir, 2) // one per proxy below: each keeps its connection
  const { logger, lines } = captureLogger()
  // "x" and 40000 x "é" is 80001 bytes: php-cgi sends it in STDERR records cut by size, in the
  // middle of a character. The core logs it as the one line it is: its first 4096 bytes, less the
  // half "é" the cap falls in, then "…" (test/component/stderr-lines.test.ts has lines that straddle
  // records whole).
  const { url } = await proxyServer(t, { logger, routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${php.socketPath}`], docroot: dir, options: { stderrLimit: 1 << 20 } }] })
  const r = await get(`${url}/log.php?p=x&n=40000`)
  t.same([r.status, r.body.toString()], [200, 'logged'])
  const logged = lines.filter((l) => l.obj.stream === 'stderr').map((l) => l.msg)
  t.same(logged, ['x' + '\u00e9'.repeat(2047) + '…'], 'one entry: 4095 bytes, no U+FFFD, then the ellipsis')

  // Capped at 1000 bytes, in the middle of the 500th "é": the half character at the cut is left out, then the marker.
  const capped = captureLogger()
  const small = await proxyServer(t, { logger: capped.logger, routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${php.socketPath}`], docroot: dir, options: { stderrLimit: 1000 } }] })
  t.equal((await get(`${small.url}/log.php?p=x&n=3000`)).status, 200)
  const got = capped.lines.filter((l) => l.obj.stream === 'stderr').map((l) => l.msg)
  t.equal(got.at(-1), '[stderr truncated after 1000 bytes]', 'the marker comes last')
  const kept = got.slice(0, -1).join('')
  t.notOk(kept.includes('\ufffd'), 'no replacement character at the cut')
  t.ok(Buffer.byteLength(kept) === 999, 'the 999 bytes before the cut character logged')
})

t.test('a stderr write longer than a log line: the cut at 4096 bytes never splits a UTF-8 character', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-loghyg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const fake = await startFake(t, dir, {
    onRequest: (req) => {
      // é takes bytes 4095 and 4096 (0-based): the line cap falls between them.
      req.sock.write(rec(7, req.id, Buffer.concat([Buffer.from('a'.repeat(4095)), E_ACUTE, Buffer.from('b'.repeat(100))])))
      respond(req, 'done')
    },
  })
  const { logger, lines } = captureLogger()
  const { url } = await proxyServer(t, { logger, routes: [{ protocol: 'fastcgi', backends: [fake.endpoint.id], scriptFilename: join(dir, 'app') }] })
  const r = await get(`${url}/x`)
  t.same([r.status, r.body.toString()], [200, 'done'])
  const stderr = lines.filter((l) => l.obj.stream === 'stderr').map((l) => l.msg)
  t.equal(stderr.length, 1)
  t.notOk(stderr[0].includes('\ufffd'), 'no replacement character')
  t.equal(stderr[0], 'a'.repeat(4095) + '…', 'the half character is left out, then the ellipsis')
})
