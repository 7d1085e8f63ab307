/**
 * The access log's JSON lines carry what the client sent: node hands a header value over one char
 * per byte (latin1), so a User-Agent or Referer sent as UTF-8 bytes is written as the characters
 * they are (`é`, not `Ã©`); bytes that are not valid UTF-8, and a backslash, are the text `\xHH`
 * (as the combined format writes them), and characters that end a line for some readers (NEL, U+2028) are `\uXXXX`.
 * Through the real `proxycore serve` with `accessLog: { format: json }`, and through the embedder
 * module (createAccessLog) for the byte-level cases, next to the combined line of the same request.
 */
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { createAccessLog, type AccessLogFormat } from '../../src/status/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'
import { serveKilled } from '../cli/run.js'

const bytes = (...parts: Array<string | number[]>): Buffer =>
  Buffer.concat(parts.map((p) => typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p)))

/** A raw request whose User-Agent (and Referer) are the exact bytes given. */
const head = (path: string, ua: Buffer, referer?: Buffer): Buffer => Buffer.concat([
  Buffer.from(`GET ${path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\nUser-Agent: `, 'latin1'), ua,
  ...(referer !== undefined ? [Buffer.from('\r\nReferer: ', 'latin1'), referer] : []),
  Buffer.from('\r\n\r\n', 'latin1'),
])

/** Every separator a line reader may split on (Python's str.splitlines: \n \r \v \f \x1c-\x1e NEL U+2028 U+2029). */
const LINE_ENDS = /\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]/u

t.test('proxycore serve, accessLog json: UTF-8 user agent and referer as characters, one line per request', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-access-utf8-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const be = await backend(t, (_req, res) => { res.end('hello') })
  const file = join(dir, 'proxycore.yaml')
  const log = join(dir, 'access.log')
  writeFileSync(file, `listen: 127.0.0.1:0
accessLog: { path: access.log, format: json }
routes:
  - { name: app, match: { prefix: /app/ }, protocol: http, backends: ['127.0.0.1:${be.port}'] }
`)
  const { s } = await serveKilled(t, file)
  const port = Number(new URL(s.url).port)

  const sent: Array<{ path: string, ua: Buffer, referer?: Buffer, status: RegExp }> = [
    { path: '/app/1', ua: bytes('Mozilla/5.0 café ☃ 😀'), referer: bytes('http://r/ünï'), status: /^HTTP\/1\.1 200 / },
    // Not UTF-8: a latin1 é alone, a sequence cut short, then valid UTF-8 again.
    { path: '/app/2', ua: bytes('lat', [0xe9], 'n ', [0xe2, 0x98], ' ok é'), status: /^HTTP\/1\.1 200 / },
    // NEL (U+0085) and LINE SEPARATOR (U+2028) as UTF-8: a line end to some readers.
    { path: '/app/3', ua: bytes('a\u0085b\u2028c'), referer: bytes('t\tab'), status: /^HTTP\/1\.1 200 / },
    // A request no route takes: the proxy's own 404 is logged the same way.
    { path: '/elsewhere', ua: bytes('ü404'), status: /^HTTP\/1\.1 404 / },
    // Percent-encoded UTF-8 in the target stays as sent (nginx logs $request unchanged too).
    { path: '/app/caf%C3%A9', ua: bytes('x'), status: /^HTTP\/1\.1 200 / },
  ]
  for (const r of sent) t.match(await rawRequest(port, head(r.path, r.ua, r.referer)), r.status, r.path)
  // Raw non-ASCII bytes in the request target: node's parser refuses them (400, HPE_INVALID_URL)
  // before any request exists, so the line has an empty url; nothing else to decode there.
  t.match(await rawRequest(port, Buffer.concat([Buffer.from('GET /caf'), Buffer.from([0xc3, 0xa9]), Buffer.from(' HTTP/1.1\r\nHost: h\r\n\r\n')])), /^HTTP\/1\.1 400 /)

  const read = (): string => existsSync(log) ? readFileSync(log, 'utf8') : ''
  t.ok(await waitFor(() => read().split('\n').filter((l) => l !== '').length >= sent.length + 1, 20_000), 'every request logged')
  const text = read()
  t.ok(Buffer.from(text, 'utf8').equals(readFileSync(log)), 'the file is valid UTF-8')
  const rows = text.split('\n').filter((l) => l !== '')
  t.equal(rows.length, sent.length + 1)
  t.equal(text.split(LINE_ENDS).filter((l) => l !== '').length, rows.length, 'no value breaks a line for a reader that splits on NEL or U+2028')
  const objs = rows.map((l) => JSON.parse(l) as Record<string, unknown>)
  const by = (url: string): Record<string, unknown> | undefined => objs.find((o) => o.url === url)
  t.match(by('/app/1'), { userAgent: 'Mozilla/5.0 café ☃ 😀', referer: 'http://r/ünï', status: 200 })
  t.equal(by('/app/2')?.userAgent, 'lat\\xE9n \\xE2\\x98 ok é', 'invalid bytes as \\xHH, valid ones as characters')
  t.match(by('/app/3'), { userAgent: 'a\u0085b\u2028c', referer: 't\tab' })
  t.match(rows.find((l) => l.includes('"/app/3"')), /"userAgent":"a\\u0085b\\u2028c"/, 'NEL and U+2028 written as \\u escapes')
  t.match(by('/elsewhere'), { userAgent: 'ü404', status: 404 })
  t.match(by('/app/caf%C3%A9'), { status: 200 })
  t.match(by(''), { status: 400, method: '' })

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('createAccessLog: JSON decodes UTF-8 per value; combined keeps \\xHH per byte', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => { res.end('ok') })
  const { proxy, port } = await proxyServer(t, { routes: [{ name: 'be', protocol: 'http', backends: [be.address] }] })
  const outs = new Map<AccessLogFormat, () => string[]>()
  for (const format of ['json', 'combined'] as AccessLogFormat[]) {
    const stream = new PassThrough()
    let text = ''
    stream.setEncoding('utf8').on('data', (c: string) => { text += c })
    const log = createAccessLog(proxy.events, { format, stream })
    t.teardown(() => log.close())
    outs.set(format, () => text.split('\n').filter((l) => l !== ''))
  }
  // [sent bytes, JSON value, combined text]
  const cases: Array<[Buffer, string, string]> = [
    [bytes('é'), 'é', '\\xC3\\xA9'],
    [bytes('😀'), '😀', '\\xF0\\x9F\\x98\\x80'],
    [bytes('U+FFFF:\uffff'), 'U+FFFF:\uffff', 'U+FFFF:\\xEF\\xBF\\xBF'],
    // Overlong "/" (C0 AF), a UTF-16 surrogate (ED A0 80), above U+10FFFF (F4 90 80 80): not UTF-8.
    [bytes([0xc0, 0xaf]), '\\xC0\\xAF', '\\xC0\\xAF'],
    [bytes([0xed, 0xa0, 0x80]), '\\xED\\xA0\\x80', '\\xED\\xA0\\x80'],
    [bytes([0xf4, 0x90, 0x80, 0x80]), '\\xF4\\x90\\x80\\x80', '\\xF4\\x90\\x80\\x80'],
    // A stray continuation byte before a valid character; a lead byte at the very end.
    [bytes([0x80], 'ß', [0xc3]), '\\x80ß\\xC3', '\\x80\\xC3\\x9F\\xC3'],
    // A quote is JSON-escaped and reads back as itself; a backslash is \x5C, as in combined, so the
    // text `\xFF` a client sends and the byte FF stay distinct (test/docs/reference-status-claims.test.ts).
    [bytes('q"\\é'), 'q"\\x5Cé', 'q\\x22\\x5C\\xC3\\xA9'],
  ]
  for (const [i, [ua]] of cases.entries()) {
    t.match(await rawRequest(port, head(`/c/${i}`, ua, ua)), /^HTTP\/1\.1 200 /)
  }
  const json = outs.get('json') as () => string[]
  const combined = outs.get('combined') as () => string[]
  t.ok(await waitFor(() => json().length >= cases.length && combined().length >= cases.length, 10_000))
  for (const [i, [ua, value, text]] of cases.entries()) {
    const o = json().map((l) => JSON.parse(l) as { url: string, userAgent: string, referer: string }).find((x) => x.url === `/c/${i}`)
    t.equal(o?.userAgent, value, `json user agent ${ua.toString('hex')}`)
    t.equal(o?.referer, value, `json referer ${ua.toString('hex')}`)
    const line = combined().find((l) => l.includes(`"GET /c/${i} `)) ?? ''
    t.ok(line.includes(`"${text}" "${text}"`), `combined ${ua.toString('hex')}: ${line}`)
  }
})
