/**
 * proxycore behind a lenient request parser (RELIABILITY: never enable insecureHTTPParser; the
 * library must refuse to run behind one). llhttp's lenient flags let a client smuggle a second
 * request past the proxy inside the first one's body.
 * - A node:http server made with `insecureHTTPParser: true`: every request is refused with 500
 *   ERR_INSECURE_PARSER, and no byte reaches a backend.
 * - node run with `--insecure-http-parser` (command line or NODE_OPTIONS): createProxy refuses to
 *   start, and so does `proxycore serve`.
 * - Should a lenient parser's request get through all the same, Content-Length together with
 *   Transfer-Encoding is still a 400 (node's strict parser 400s it itself).
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createProxy, silentLogger } from '../../src/index.js'
import { checkRequestFraming, insecureParserFlag } from '../../src/core/headers.js'
import { guardLeaks } from '../helpers/leaks.js'
import { closeServer, listen, rawBackend, rawRequest } from '../helpers/servers.js'
import { runCli } from '../cli/run.js'

guardLeaks(t)

t.test('a server made with insecureHTTPParser: every request is a 500 ERR_INSECURE_PARSER, none reaches the backend', async (t) => {
  const received: string[] = []
  const be = await rawBackend(t, (s) => {
    s.on('data', (d: Buffer) => {
      received.push(d.toString('latin1'))
      if (d.includes('\r\n\r\n')) s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
    })
  })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: [be.address] }] })
  const codes: Array<string | null> = []
  proxy.events.on('request:end', (e) => { codes.push(e.error) })
  const server = createServer({ insecureHTTPParser: true }, proxy.handler)
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })

  // The smuggling shape, and a plain GET: both refused.
  const smuggle = await rawRequest(port, 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n')
  t.match(smuggle, /^HTTP\/1\.1 500 Internal Server Error\r\n/, 'the smuggling shape: 500')
  t.match(smuggle, /ERR_INSECURE_PARSER\n$/, 'stable code, and nothing after it: the connection is closed')
  const plain = await rawRequest(port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(plain, /^HTTP\/1\.1 500 [^]*ERR_INSECURE_PARSER/, 'a plain GET too')
  t.same(received, [], 'no byte reached the backend')
  t.equal(codes[0], 'ERR_INSECURE_PARSER')
})

t.test('--insecure-http-parser: createProxy and proxycore serve refuse to start', async (t) => {
  t.ok(insecureParserFlag(['--insecure-http-parser'], ''), 'on the command line')
  t.ok(insecureParserFlag([], '--max-old-space-size=64 --insecure-http-parser'), 'in NODE_OPTIONS')
  t.ok(insecureParserFlag([], '"--import=file:///x.mjs" "--insecure-http-parser"'), 'in NODE_OPTIONS, quoted')
  t.notOk(insecureParserFlag(['--trace-gc'], '--max-old-space-size=64 --insecure-http-parser-x'), 'not otherwise')
  t.notOk(insecureParserFlag(), 'not in this test process')

  const dir = mkdtempSync(join(tmpdir(), 'pc-lenient-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, 'listen: 127.0.0.1:0\nroutes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n')
  const r = await runCli(['serve', file], { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --insecure-http-parser`, PROXYCORE_LOG_FORMAT: 'json' })
  t.equal(r.code, 1, 'exit 1')
  t.match(r.stderr, /ERR_INSECURE_PARSER/, 'the log names the code')
})

t.test('Content-Length with Transfer-Encoding is a 400 should a lenient parser pass one on', async (t) => {
  const req = (raw: string[]): IncomingMessage => {
    const headers: Record<string, string> = {}
    for (let i = 0; i < raw.length; i += 2) headers[raw[i].toLowerCase()] = raw[i + 1]
    return { rawHeaders: raw, headers, httpVersionMajor: 1, httpVersionMinor: 1, socket: {} } as unknown as IncomingMessage
  }
  for (const raw of [['Content-Length', '4', 'Transfer-Encoding', 'chunked'], ['Transfer-Encoding', 'chunked', 'Content-Length', '4']]) {
    t.equal(checkRequestFraming(req(raw))?.code, 'ERR_BAD_REQUEST', raw.join(' '))
  }
  t.equal(checkRequestFraming(req(['Transfer-Encoding', 'chunked'])), null, 'chunked alone is fine')
})

t.test('an embedder server with maxHeadersCount: a request at that many lines is 431 ERR_TOO_MANY_HEADERS, fewer pass', async (t) => {
  // node:http drops the lines past maxHeadersCount unseen (Content-Length included): a request that
  // reaches the cap may have lost its framing, so it is refused, not forwarded short of its body.
  const received: string[] = []
  const be = await rawBackend(t, (s) => {
    s.on('data', (d: Buffer) => {
      received.push(d.toString('latin1'))
      if (d.includes('\r\n\r\n')) s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok')
    })
  })
  const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: [be.address] }] })
  const server = createServer(proxy.handler)
  server.maxHeadersCount = 20
  const port = await listen(server)
  t.teardown(async () => { await closeServer(server); await proxy.close(1000) })
  const lines = (n: number): string => Array.from({ length: n }, (_, i) => `X-H${i}: v\r\n`).join('')
  // Host + 18 + Connection = 20 lines, Content-Length the 21st: node drops it.
  const cut = await rawRequest(port, `POST /x HTTP/1.1\r\nHost: a\r\n${lines(18)}Connection: close\r\nContent-Length: 5\r\n\r\nhello`)
  // Node 20 drops the lines past the count unseen (proxycore refuses: ERR_TOO_MANY_HEADERS); from
  // Node 22 on, node:http answers 431 itself, with no body.
  t.match(cut, /^HTTP\/1\.1 431 /, 'at the cap: 431')
  t.ok(/ERR_TOO_MANY_HEADERS\n$/.test(cut) || /\r\n\r\n$/.test(cut), 'by proxycore or by node:http itself', { cut })
  t.same(received, [], 'no byte reached the backend')
  const fine = await rawRequest(port, `POST /x HTTP/1.1\r\nHost: a\r\n${lines(16)}Connection: close\r\nContent-Length: 5\r\n\r\nhello`)
  t.match(fine, /^HTTP\/1\.1 200 /, 'under it: forwarded')
  t.match(received.join(''), /\r\n\r\nhello$/, 'with its body')
})
