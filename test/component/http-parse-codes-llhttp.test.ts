/**
 * What a response llhttp (undici's parser) refuses maps to: bytes that are not HTTP at all (a
 * FastCGI, TLS or SSH peer on an `http` route) are ERR_PROTOCOL ("check the route uses the right
 * protocol"); a malformed HTTP head is ERR_BAD_RESPONSE. undici 7.30 builds its HTTPParserError
 * without the `HPE_` code (it looks the error number up in a name→number table), so the mapping
 * decides by the error's identity and llhttp's error kind; the log names llhttp's error.
 * A real backend does not send these: raw TCP fakes write the bytes.
 */
import t from 'tap'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, rawBackend } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

interface Line { obj: Record<string, unknown>, msg: string }
function recordingLogger (): { lines: Line[], logger: Record<'debug' | 'info' | 'warn' | 'error', (o: object, m?: string) => void> } {
  const lines: Line[] = []
  const push = (obj: object, msg?: string): void => { lines.push({ obj: obj as Record<string, unknown>, msg: msg ?? '' }) }
  return { lines, logger: { debug: push, info: push, warn: push, error: push } }
}
const mentions = (lines: Line[], re: RegExp): boolean => lines.some((l) => re.test(l.msg) || re.test(JSON.stringify(l.obj)))

const cases: Array<{ name: string, bytes: string | Buffer, code: string, hpe: RegExp, cut?: true }> = [
  { name: 'a header name with a space', bytes: 'HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n', code: 'ERR_BAD_RESPONSE', hpe: /HPE_INVALID_HEADER_TOKEN/ },
  { name: 'a status code with a letter', bytes: 'HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n', code: 'ERR_BAD_RESPONSE', hpe: /HPE_INVALID_STATUS/ },
  { name: 'HTTP/9.9', bytes: 'HTTP/9.9 200 OK\r\nContent-Length: 0\r\n\r\n', code: 'ERR_BAD_RESPONSE', hpe: /HPE_INVALID_VERSION/ },
  { name: 'LF line ends', bytes: 'HTTP/1.1 200 OK\nContent-Length: 0\n\n', code: 'ERR_BAD_RESPONSE', hpe: /HPE_[A-Z_]+/ },
  { name: 'a control character in a field value', bytes: 'HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n', code: 'ERR_BAD_RESPONSE', hpe: /HPE_INVALID_HEADER_TOKEN/ },
  { name: 'a bad chunk size (in the body)', bytes: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', code: 'ERR_BAD_RESPONSE', hpe: /HPE_INVALID_CHUNK_SIZE/, cut: true },
  { name: 'text that is not HTTP', bytes: 'hello\r\n\r\n', code: 'ERR_PROTOCOL', hpe: /HPE_INVALID_CONSTANT/ },
  { name: 'a FastCGI record (a FastCGI peer on an http route)', bytes: Buffer.from([1, 6, 0, 1, 0, 13, 3, 0, ...Buffer.from('Status: 200\r\n'), 0, 0, 0]), code: 'ERR_PROTOCOL', hpe: /HPE_INVALID_CONSTANT/ },
  { name: 'a TLS alert (an https peer)', bytes: Buffer.from([0x15, 3, 1, 0, 2, 2, 70]), code: 'ERR_PROTOCOL', hpe: /HPE_INVALID_CONSTANT/ },
]

for (const c of cases) {
  t.test(`${c.name}: ${c.cut === true ? 'the response cut,' : '502'} ${c.code}`, async (t) => {
    const be = await rawBackend(t, (s) => { s.once('data', () => { s.end(c.bytes) }) })
    const log = recordingLogger()
    const { url, proxy } = await proxyServer(t, { logger: log.logger, routes: [{ protocol: 'http', backends: [be.address], retries: 0 }] })
    const ends: Array<string | null> = []
    proxy.events.on('request:end', (e) => ends.push(e.error))
    if (c.cut === true) {
      // In the body: the 200 went out, the client connection is cut.
      await t.rejects(get(`${url}/`), 'the client\'s response is cut')
    } else {
      const r = await get(`${url}/`)
      t.equal(r.status, 502)
      t.match(r.body.toString(), c.code, 'the client\'s 502 names the code')
    }
    t.ok(await waitFor(() => ends.length === 1), 'request:end')
    t.same(ends, [c.code], 'request:end carries the code')
    t.ok(await waitFor(() => mentions(log.lines, c.hpe)), `the log names llhttp's error (${String(c.hpe)})`)
  })
}
