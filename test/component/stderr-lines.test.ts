/**
 * Backend stderr reaches the log one entry per line, whatever the writes or records it came in: a
 * line written in two writes (a shell CGI script, php-cgi cutting its STDERR records by size, a
 * fake sending 1-byte records) is one entry, a write holding three lines is three. The line not
 * ended yet is held per exchange and logged when the exchange ends, however it ends (a complete
 * response, a backend reset, a client gone, a retry to another backend). Real peers where one can
 * do it; a raw FastCGI fake for the splits no real peer makes on demand.
 */
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { captureLogger, cgiProxy, tempDir, writeScripts, type LogLine } from '../cgi/harness.js'
import { respond, startFake, type FakeRequest } from '../fastcgi/helpers/fake.js'
import { endBody, rec } from '../fastcgi/helpers/records.js'
import { PHP_CGI, PHP_FPM, havePeer, startPhpCgi, startPhpFpm } from '../fastcgi/helpers/peers.js'
import type { RouteConfig } from '../../src/config/schema.js'

const STDERR = 7
const stderrOf = (lines: LogLine[]): string[] => lines.filter((l) => l.obj.stream === 'stderr').map((l) => l.msg)

/** A FastCGI fake answering every request with `answer`, behind a proxy whose log is captured. */
async function fakeProxy (t: Test, answer: (req: FakeRequest, n: number) => void, route: Partial<RouteConfig> = {}, fakes = 1) {
  const dir = tempDir(t, 'pc-stderr-lines-')
  let n = 0
  const started = []
  for (let i = 0; i < fakes; i++) started.push(await startFake(t, dir, { tcp: true, onRequest: (req) => answer(req, n++) }))
  const { logger, lines } = captureLogger()
  const { url } = await proxyServer(t, { logger, routes: [{ protocol: 'fastcgi', backends: started.map((f) => f.endpoint.id), scriptFilename: join(dir, 'app'), options: { discovery: false }, ...route } as RouteConfig] })
  return { url, lines, fakes: started }
}

t.test('FastCGI fake: one line sent as 1-byte STDERR records is one entry', async (t) => {
  guardLeaks(t)
  const { url, lines } = await fakeProxy(t, (req) => {
    // 212 bytes, "é" cut in two records every time: the held start grows past its first room.
    req.sock.write(Buffer.concat([...Buffer.from(`hello world ${'é'.repeat(100)}\n`)].map((b) => rec(STDERR, req.id, Buffer.from([b])))))
    respond(req, 'done')
  })
  const r = await get(`${url}/x`)
  t.same([r.status, r.body.toString()], [200, 'done'])
  t.same(stderrOf(lines), [`hello world ${'é'.repeat(100)}`])
})

t.test('FastCGI fake: a record of three lines is three entries (CRLF, blank lines skipped)', async (t) => {
  guardLeaks(t)
  const { url, lines } = await fakeProxy(t, (req) => {
    req.sock.write(rec(STDERR, req.id, 'first\nsecond\r\n\n\r\nthird\n'))
    respond(req, 'done')
  })
  t.equal((await get(`${url}/x`)).status, 200)
  const entries = lines.filter((l) => l.obj.stream === 'stderr')
  t.same(entries.map((l) => l.msg), ['first', 'second', 'third'])
  t.ok(entries.every((l) => l.level === 'warn' && l.obj.route === '0' && typeof l.obj.id === 'number'), 'warn, with route and id, as before')
})

t.test('FastCGI fake: a partial line is logged once, whole, when the request ends', async (t) => {
  guardLeaks(t)
  const { url, lines } = await fakeProxy(t, (req) => {
    req.sock.write(Buffer.concat([rec(STDERR, req.id, 'one\npar'), rec(STDERR, req.id, 'tial')]))
    respond(req, 'done')
  })
  t.equal((await get(`${url}/x`)).status, 200)
  t.same(stderrOf(lines), ['one', 'partial'])
})

t.test('FastCGI fake: a partial line before a backend reset is logged, before the error line', async (t) => {
  guardLeaks(t)
  const { url, lines } = await fakeProxy(t, (req) => {
    req.sock.write(Buffer.concat([rec(STDERR, req.id, 'dying '), rec(STDERR, req.id, 'words')]), () => req.sock.resetAndDestroy())
  })
  const r = await get(`${url}/x`)
  t.equal(r.status, 502)
  t.same(stderrOf(lines), ['dying words'])
  // An RST right after the data is seen as a reset or as a close, as the kernel delivers it.
  const order = lines.filter((l) => l.obj.stream === 'stderr' || /^ERR_BACKEND_(RESET|CLOSED)$/.test(String(l.obj.code))).map((l) => l.obj.stream ?? 'error')
  t.same(order, ['stderr', 'error'], 'the backend\'s last words come before the error they explain')
})

t.test('FastCGI fake: a partial line is logged when the client goes away mid-response', async (t) => {
  guardLeaks(t)
  const { url, lines } = await fakeProxy(t, (req) => {
    // The head and a first body chunk, then nothing: the client leaves.
    req.sock.write(Buffer.concat([rec(STDERR, req.id, 'client '), rec(STDERR, req.id, 'left'), rec(6, req.id, 'Content-Type: text/plain\r\n\r\nfirst')]))
  })
  await new Promise<void>((resolve, reject) => {
    const q = request(`${url}/x`, { agent: false }, (res) => {
      res.once('data', () => { q.destroy(); resolve() })
    })
    q.on('error', (err) => { if (!q.destroyed) reject(err) })
    q.end()
  })
  t.ok(await waitFor(() => stderrOf(lines).length > 0, 10_000), 'logged once the exchange ended')
  t.same(stderrOf(lines), ['client left'])
})

t.test('FastCGI fake: a retried request keeps each backend\'s partial line apart', async (t) => {
  guardLeaks(t)
  const { url, lines, fakes } = await fakeProxy(t, (req, n) => {
    if (n === 0) {
      // FCGI_OVERLOADED: the core tries the other backend.
      req.sock.write(Buffer.concat([rec(STDERR, req.id, 'first '), rec(STDERR, req.id, 'backend'), rec(3, req.id, endBody(0, 2))]))
      return
    }
    req.sock.write(Buffer.concat([rec(STDERR, req.id, 'second '), rec(STDERR, req.id, 'backend')]))
    respond(req, 'done')
  }, { retries: 1 }, 2)
  const r = await get(`${url}/x`)
  t.same([r.status, r.body.toString()], [200, 'done'])
  t.equal(fakes[0].requests.length + fakes[1].requests.length, 2, 'both backends were asked')
  t.same(stderrOf(lines), ['first backend', 'second backend'])
})

t.test('FastCGI fake: 150 lines in 3 records give 100 entries and one marker', async (t) => {
  guardLeaks(t)
  const { url, lines } = await fakeProxy(t, (req) => {
    const records = [0, 1, 2].map((k) => rec(STDERR, req.id, Array.from({ length: 50 }, (_, i) => `line ${k * 50 + i}\n`).join('')))
    req.sock.write(Buffer.concat(records))
    respond(req, 'done')
  })
  t.equal((await get(`${url}/x`)).status, 200)
  const got = stderrOf(lines)
  t.equal(got.length, 101, '100 lines, then one marker')
  t.same(got.slice(0, 100), Array.from({ length: 100 }, (_, i) => `line ${i}`))
  t.equal(got[100], '[stderr: more than 100 lines, the rest of this request\'s is dropped]')
})

t.test('FastCGI fake: a line longer than 4096 bytes over several records: one entry cut with …, the rest of the line dropped', async (t) => {
  guardLeaks(t)
  const e = Buffer.from('é')
  const { url, lines } = await fakeProxy(t, (req) => {
    const records = [
      ...Array.from({ length: 4 }, () => rec(STDERR, req.id, 'a'.repeat(1000))),
      // é takes bytes 4095 and 4096 (0-based) of the line: the cap falls inside it.
      rec(STDERR, req.id, Buffer.concat([Buffer.from('a'.repeat(95)), e, Buffer.from('b'.repeat(3000))])),
      rec(STDERR, req.id, 'still the same line\nnext line\n'),
    ]
    req.sock.write(Buffer.concat(records))
    respond(req, 'done')
  })
  t.equal((await get(`${url}/x`)).status, 200)
  t.same(stderrOf(lines), ['a'.repeat(4095) + '…', 'next line'])
})

t.test('FastCGI fake: a line of exactly 4096 bytes before its CRLF is whole; one byte more is cut', async (t) => {
  guardLeaks(t)
  const { url, lines } = await fakeProxy(t, (req) => {
    req.sock.write(Buffer.concat([
      rec(STDERR, req.id, 'a'.repeat(4000)), rec(STDERR, req.id, 'a'.repeat(96) + '\r\n'),
      rec(STDERR, req.id, 'b'.repeat(4096)), rec(STDERR, req.id, '\r\n'),
      rec(STDERR, req.id, 'c'.repeat(4000)), rec(STDERR, req.id, 'c'.repeat(96) + '\rc\n'),
    ]))
    respond(req, 'done')
  })
  t.equal((await get(`${url}/x`)).status, 200)
  t.same(stderrOf(lines), ['a'.repeat(4096), 'b'.repeat(4096), 'c'.repeat(4096) + '…'])
})

t.test('FastCGI fake: the stderrLimit marker is an entry of its own, after the cut line', async (t) => {
  guardLeaks(t)
  const { url, lines } = await fakeProxy(t, (req) => {
    req.sock.write(rec(STDERR, req.id, 'abc\ndefghijklmnop\n'))
    respond(req, 'done')
  }, { options: { discovery: false, stderrLimit: 10 } })
  t.equal((await get(`${url}/x`)).status, 200)
  t.same(stderrOf(lines), ['abc', 'defghi', '[stderr truncated after 10 bytes]'])
})

t.test('FastCGI fake: the 100-line marker comes once, also when the byte-cap marker follows the 101st line', async (t) => {
  guardLeaks(t)
  const { url, lines } = await fakeProxy(t, (req) => {
    // 100 lines (390 bytes), then a line cut by stderrLimit 400: its start is the 101st line.
    req.sock.write(rec(STDERR, req.id, Array.from({ length: 100 }, (_, i) => `l${i}\n`).join('') + 'partial-partial-partial'))
    respond(req, 'done')
  }, { options: { discovery: false, stderrLimit: 400 } })
  t.equal((await get(`${url}/x`)).status, 200)
  const got = stderrOf(lines)
  t.equal(got.length, 101, `100 lines, then one marker: ${JSON.stringify(got.slice(99))}`)
  t.equal(got[100], '[stderr: more than 100 lines, the rest of this request\'s is dropped]')
})

// Writes a line in two writes the proxy reads apart: "abc" before the head and a first body chunk,
// "def\n" only once the client, which got them, sent its body line. Then three lines in one write.
const SPLIT_SH = `#!/bin/sh
printf 'abc' >&2
printf 'Content-Type: text/plain\\r\\n\\r\\nfirst\\n'
read line
printf 'def\\n' >&2
printf 'one\\ntwo\\r\\n\\nthree\\n' >&2
printf 'tail' >&2
printf 'done\\n'
`

t.test('CGI shell script: a line in two writes is one entry, a write of three lines is three', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tempDir(t, 'pc-stderr-lines-')
  const docroot = join(dir, 'cgi-bin')
  writeScripts(docroot, { 'split.sh': SPLIT_SH })
  // Streamed, not spooled: the script runs before its body is complete.
  const p = await cgiProxy(t, { cgi: { socketType: 'pipe' } }, [{ match: { prefix: '/c/' }, protocol: 'cgi', spawn: 'cgi', docroot, stripPrefix: true, requestBuffering: false }])
  const body = await new Promise<string>((resolve, reject) => {
    const q = request(`${p.url}/c/split.sh`, { method: 'POST', agent: false, headers: { 'content-length': 3 } }, (res) => {
      let s = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => {
        // The head and "first" left the proxy after it read "abc" (written before them).
        if (s === '') q.end('go\n')
        s += c
      })
      res.on('end', () => resolve(s))
    })
    q.on('error', reject)
    q.flushHeaders()
  })
  t.equal(body, 'first\ndone\n')
  // stderr has its own pipe: wait for its last bytes rather than assume they came before the end.
  t.ok(await waitFor(() => stderrOf(p.lines).join('\n').includes('tail'), 10_000), 'the partial last line is logged')
  t.same(stderrOf(p.lines), ['abcdef', 'one', 'two', 'three', 'tail'])
})

// Answers with a Content-Length (the exchange ends with its last byte), then waits (bounded) for the
// test to create \`go\` before writing to stderr: lines that come after the end of the exchange.
const lateSh = (go: string): string => `#!/bin/sh
printf 'Content-Type: text/plain\\r\\nContent-Length: 2\\r\\n\\r\\nok'
i=0
while [ ! -e '${go}' ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done
printf 'late one\\nlate two\\nunended' >&2
`

t.test('CGI shell script: stderr written after the response ended is logged by line, its unended line at once', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tempDir(t, 'pc-stderr-lines-')
  const docroot = join(dir, 'cgi-bin')
  const go = join(dir, 'go')
  writeScripts(docroot, { 'late.sh': lateSh(go) })
  const p = await cgiProxy(t, { cgi: { socketType: 'pipe' } }, [{ match: { prefix: '/c/' }, protocol: 'cgi', spawn: 'cgi', docroot, stripPrefix: true }])
  const r = await get(`${p.url}/c/late.sh`)
  t.same([r.status, r.body.toString()], [200, 'ok'])
  t.same(stderrOf(p.lines), [], 'nothing yet')
  writeFileSync(go, '')
  // No later end comes for a finished exchange: the unended line must not wait for one.
  t.ok(await waitFor(() => stderrOf(p.lines).length >= 3, 10_000), 'logged')
  t.same(stderrOf(p.lines), ['late one', 'late two', 'unended'])
})

t.test('php-cgi: error_log() lines cut across STDERR records (and inside characters) are one entry each', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-stderr-lines-')
  // 40 lines of about 610 bytes: php-cgi sends them in records cut by its 8 KiB buffer, wherever it fills.
  writeFileSync(join(dir, 'log.php'), '<?php for ($i = 0; $i < 40; $i++) error_log("line $i " . str_repeat("\\u{e9}", 300)); echo "logged";')
  const php = await startPhpCgi(t, dir, 1)
  const { logger, lines } = captureLogger()
  const { url } = await proxyServer(t, { logger, routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${php.socketPath}`], docroot: dir }] })
  const r = await get(`${url}/log.php`)
  t.same([r.status, r.body.toString()], [200, 'logged'])
  t.same(stderrOf(lines), Array.from({ length: 40 }, (_, i) => `line ${i} ${'é'.repeat(300)}`))
})

t.test('php-fpm: an uncaught exception (a message of several lines) is one entry per line', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-stderr-lines-')
  writeFileSync(join(dir, 'boom.php'), '<?php\nerror_log("before");\nthrow new Exception("boom");\n')
  const fpm = await startPhpFpm(t, dir, 1)
  const { logger, lines } = captureLogger()
  const { url } = await proxyServer(t, { logger, routes: [{ match: { extension: '.php' }, protocol: 'fastcgi', backends: [`unix:${fpm.socketPath}`], docroot: dir }] })
  const r = await get(`${url}/boom.php`)
  t.equal(r.status, 500)
  // php-fpm joins a request's messages with "; " in its STDERR records; the fatal error's text has
  // its own newlines (the stack trace).
  const got = stderrOf(lines)
  t.ok(got.every((l) => !l.includes('\n')), `no entry holds a newline: ${JSON.stringify(got)}`)
  t.match(got[0], /^PHP message: before; PHP message: PHP Fatal error: +Uncaught Exception: boom in .*boom\.php:3$/)
  t.same(got.slice(1), ['Stack trace:', '#0 {main}', `  thrown in ${join(dir, 'boom.php')} on line 3`])
})
