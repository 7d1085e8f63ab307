import t, { type Test } from 'tap'
import { CgiResponseParser, type CgiHead, type CgiResponseParserOptions as CgiParserOptions } from '../../src/core/cgi/response-head.js'
import { ERRORS, type ErrorCode } from '../../src/core/errors.js'

type Outcome = { head: CgiHead, rest: string } | { code: ErrorCode } | { pending: true }

/** Feed `input` in the given pieces; the outcome must not depend on where the cuts are. */
function feed (pieces: Buffer[], opts: CgiParserOptions): Outcome {
  const p = new CgiResponseParser(opts)
  for (let i = 0; i < pieces.length; i++) {
    const r = p.push(pieces[i])
    if ('error' in r) return { code: r.error.code }
    if (r.done) return { head: r.head, rest: Buffer.concat([r.rest, ...pieces.slice(i + 1)]).toString('latin1') }
  }
  return { pending: true }
}

/** Whole, split at every single byte boundary, and byte by byte: all the same outcome. */
function everySplit (t: Test, input: string, opts: CgiParserOptions): Outcome {
  const buf = Buffer.from(input, 'latin1')
  const whole = feed([buf], opts)
  for (let cut = 1; cut < buf.length; cut++) {
    t.same(feed([buf.subarray(0, cut), buf.subarray(cut)], opts), whole, `split at ${cut}`, { diagnostic: false })
  }
  t.same(feed([...buf].map((b) => Buffer.from([b])), opts), whole, 'byte by byte')
  return whole
}

const base = { maxHeadSize: 1024 }

const good: Array<[string, string, Partial<CgiParserOptions>, Partial<CgiHead> & { rest?: string }]> = [
  ['LF lines, default 200', 'Content-Type: text/html\n\nbody', {}, { status: 200, headers: ['Content-Type', 'text/html'], rest: 'body', contentLength: null }],
  ['CRLF lines', 'Content-Type: text/html\r\nX-A: 1\r\n\r\nbody', {}, { status: 200, headers: ['Content-Type', 'text/html', 'X-A', '1'], rest: 'body' }],
  ['mixed line ends', 'Content-Type: a\r\nX-A: 1\n\r\nB', {}, { headers: ['Content-Type', 'a', 'X-A', '1'], rest: 'B' }],
  ['Status with reason (AC-44)', 'Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope', {}, { status: 404, statusText: 'Not Found', headers: ['Content-Type', 'text/plain'], rest: 'nope' }],
  ['Status without reason, no Content-Type (AC-44)', 'Status: 200\n\n', {}, { status: 200, headers: [], rest: '' }],
  ['lowercase status field', 'status: 201 Created\n\n', {}, { status: 201, statusText: 'Created' }],
  ['local redirect (§6.2.2)', 'Location: /cgi-bin/other.sh?x=1\n\n', {}, { status: 302, localRedirect: '/cgi-bin/other.sh?x=1', headers: ['Location', '/cgi-bin/other.sh?x=1'] }],
  ['client redirect (§6.2.3, AC-46)', 'Location: http://x.example/\n\nignored', {}, { status: 302, headers: ['Location', 'http://x.example/'] }],
  ['network-path Location is not local', 'Location: //evil.example/\n\n', {}, { status: 302, headers: ['Location', '//evil.example/'] }],
  ['redirect with document (§6.2.4)', 'Status: 301 Moved\nLocation: /new\nContent-Type: text/html\n\nsee', {}, { status: 301, statusText: 'Moved', headers: ['Location', '/new', 'Content-Type', 'text/html'], rest: 'see' }],
  ['Location + Content-Type is still a local redirect (httpd, lighttpd; php-cgi always adds Content-Type)', 'Location: /x\nContent-Type: text/html\n\n', {}, { status: 302, localRedirect: '/x' }],
  // Upgrade is left to the core's response filter (core/headers.ts), which drops it on every status
  // but 426 (RFC 9110 §15.5.22: a 426 carries it; test/core/audit37-hdr-426.test.ts end to end).
  ['hop-by-hop dropped (§6.3.4), Upgrade left to the filter', 'Connection: close, X-Hop\nKeep-Alive: 5\nX-Hop: 1\nUpgrade: h2c\nTrailer: X\nProxy-Connection: k\nX-CGI-Debug: 1\nX-Keep: 1\n\n', {}, { headers: ['Upgrade', 'h2c', 'X-Keep', '1'] }],
  ['a Connection-listed Upgrade dropped, but not from a 426', 'Connection: upgrade\nUpgrade: websocket\nX-Keep: 1\n\n', {}, { headers: ['X-Keep', '1'] }],
  ['a 426 keeps its Upgrade, Connection-listed or not', 'Status: 426 Upgrade Required\nConnection: upgrade\nUpgrade: websocket\n\n', {}, { status: 426, headers: ['Upgrade', 'websocket'] }],
  ['Content-Length reported', 'Content-Type: a\nContent-Length: 8\n\n12345678', {}, { contentLength: 8, headers: ['Content-Type', 'a', 'Content-Length', '8'], rest: '12345678' }],
  ['204 loses its Content-Length (RFC 9110 §8.6)', 'Status: 204 No Content\nContent-Length: 11\nX-A: 1\n\n', {}, { status: 204, contentLength: null, headers: ['X-A', '1'] }],
  ['304 keeps its Content-Length (RFC 9110 §8.6)', 'Status: 304 Not Modified\nContent-Length: 11\n\n', {}, { status: 304, contentLength: 11, headers: ['Content-Length', '11'] }],
  ['Set-Cookie kept (AC-42 g)', 'Content-Type: text/html\r\nSet-Cookie: ok=1\r\n\r\n', {}, { headers: ['Content-Type', 'text/html', 'Set-Cookie', 'ok=1'] }],
  ['repeated ordinary field kept', 'Set-Cookie: a=1\nSet-Cookie: b=2\n\n', {}, { headers: ['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2'] }],
  ['value whitespace trimmed, obs-text kept', 'X-A: \t caf\xe9 \t\n\n', {}, { headers: ['X-A', 'caf\xe9'] }],
  ['NPH status line (AC-47)', 'HTTP/1.1 304 Not Modified\r\n\r\n', { nph: true }, { status: 304, statusText: 'Not Modified', headers: [] }],
  ['SCGI HTTP status line (AC-88)', 'HTTP/1.1 201 Created\r\nContent-Type: a\r\n\r\nx', { acceptStatusLine: true }, { status: 201, headers: ['Content-Type', 'a'], rest: 'x' }],
  ['SCGI Status field (AC-88)', 'Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n42', { acceptStatusLine: true }, { status: 200, rest: '42' }]
]

for (const [name, input, opts, want] of good) {
  t.test(name, async (t) => {
    const out = everySplit(t, input, { ...base, ...opts })
    if (!('head' in out)) return t.fail(`expected a head, got ${JSON.stringify(out)}`)
    const { rest, ...head } = want
    t.match(out.head, head)
    if (want.headers !== undefined) t.same(out.head.headers, want.headers)
    if (rest !== undefined) t.equal(out.rest, rest)
    if (!('localRedirect' in want)) t.notOk('localRedirect' in out.head, 'no local redirect')
  })
}

const malformed: Array<[string, string, Partial<CgiParserOptions>, ErrorCode]> = [
  ['Status: 30 (AC-44)', 'Status: 30\n\n', {}, 'ERR_BAD_RESPONSE'],
  ['Status: 1000', 'Status: 1000\n\n', {}, 'ERR_BAD_RESPONSE'],
  ['Status: abc', 'Status: abc\n\n', {}, 'ERR_BAD_RESPONSE'],
  ['Status: 099', 'Status: 099 x\n\n', {}, 'ERR_BAD_RESPONSE'],
  ['Status: 600', 'Status: 600 x\n\n', {}, 'ERR_BAD_RESPONSE'],
  // RFC 9110 §15.2: interim, never the final response a CGI head stands for.
  ['Status: 100', 'Status: 100 Continue\n\nbody', {}, 'ERR_BAD_RESPONSE'],
  ['Status: 101', 'Status: 101 Switching Protocols\nContent-Type: a\n\n', {}, 'ERR_BAD_RESPONSE'],
  ['Status: 103', 'Status: 103 Early Hints\nLink: </a.css>; rel=preload\n\n', {}, 'ERR_BAD_RESPONSE'],
  ['Status: 199', 'Status: 199\n\n', {}, 'ERR_BAD_RESPONSE'],
  ['NPH status line 100', 'HTTP/1.1 100 Continue\r\n\r\n', { nph: true }, 'ERR_BAD_RESPONSE'],
  ['SCGI status line 103', 'HTTP/1.1 103 Early Hints\r\n\r\n', { acceptStatusLine: true }, 'ERR_BAD_RESPONSE'],
  ['two Status lines', 'Status: 200\nStatus: 404\n\n', {}, 'ERR_BAD_RESPONSE'],
  ['two Location lines', 'Location: /a\nLocation: /b\n\n', {}, 'ERR_BAD_RESPONSE'],
  ['two Content-Type lines', 'Content-Type: a\ncontent-type: b\n\n', {}, 'ERR_BAD_RESPONSE'],
  ['bare CR in a value (AC-42 a)', 'X-A: a\rSet-Cookie: s=1\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['NUL in a value (AC-42 b)', 'X-B: b\0c\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['no colon (AC-42 c)', 'NoColonLine\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['space in name (AC-42 d)', 'Bad Name: x\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['space before colon', 'X-A : x\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['empty name', ': x\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['continuation line (AC-42 e)', 'X-C: c\n folded\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['tab continuation line', 'X-C: c\n\tfolded\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['Transfer-Encoding: gzip (AC-43 c)', 'Transfer-Encoding: gzip\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['Transfer-Encoding: chunked (AC-43 d)', 'Transfer-Encoding: chunked\n\n0\r\n\r\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['CL and TE (AC-43 e)', 'Content-Length: 5\nTransfer-Encoding: chunked\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['Content-Length: 5, 5 (AC-43 f)', 'Content-Length: 5, 5\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['two Content-Length lines', 'Content-Length: 5\nContent-Length: 5\n\n', {}, 'ERR_BAD_RESPONSE'],
  ['Content-Length: -1', 'Content-Length: -1\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['empty head', '\r\nbody', {}, 'ERR_BAD_RESPONSE'],
  ['NPH without status line (AC-47)', 'Content-Type: a\n\n', { nph: true }, 'ERR_BAD_RESPONSE'],
  ['NPH status 30 (AC-47)', 'HTTP/1.1 30 FooBar\r\n\r\n', { nph: true }, 'ERR_BAD_RESPONSE'],
  ['NPH HTTP/2 status line', 'HTTP/2 200 OK\r\n\r\n', { nph: true }, 'ERR_BAD_RESPONSE'],
  ['NPH bare CR in header (AC-47 d)', 'HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n', { nph: true }, 'ERR_BAD_RESPONSE_HEADER'],
  ['NPH status line then Status field', 'HTTP/1.1 200 OK\r\nStatus: 404\r\n\r\n', { nph: true }, 'ERR_BAD_RESPONSE'],
  ['status line not accepted by default', 'HTTP/1.1 200 OK\r\n\r\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['control char in reason', 'Status: 200 O\x01K\n\n', {}, 'ERR_BAD_RESPONSE_HEADER'],
  ['head too large without LF', 'X-A: ' + 'a'.repeat(2000), {}, 'ERR_RESPONSE_HEAD_TOO_LARGE'],
  ['head too large across lines (AC-42 f)', 'X-A: 1\n'.repeat(200) + '\n', {}, 'ERR_RESPONSE_HEAD_TOO_LARGE']
]

for (const [name, input, opts, want] of malformed) {
  t.test(`malformed: ${name}`, async (t) => {
    const out = everySplit(t, input, { ...base, ...opts })
    t.same(out, { code: want })
    t.equal(ERRORS[want].status, 502, 'maps to 502')
  })
}

t.test('a head exactly at the size limit passes, one byte more fails', async (t) => {
  const head = 'X-A: ' + 'a'.repeat(10) + '\n\n' // 17 bytes
  t.ok('head' in feed([Buffer.from(head)], { maxHeadSize: 17 }))
  t.same(feed([Buffer.from(head)], { maxHeadSize: 16 }), { code: 'ERR_RESPONSE_HEAD_TOO_LARGE' })
})

t.test('end() before the head is complete', async (t) => {
  const empty = new CgiResponseParser(base)
  t.equal(empty.end().code, 'ERR_BACKEND_CLOSED', 'nothing at all: backend closed')
  const partial = new CgiResponseParser(base)
  t.same(partial.push(Buffer.from('Content-Type: a\n')), { done: false })
  t.equal(partial.end().code, 'ERR_BAD_RESPONSE', 'headers without the blank line (AC-88)')
  const noLf = new CgiResponseParser(base)
  noLf.push(Buffer.from('Content-Ty'))
  t.equal(noLf.end().code, 'ERR_BAD_RESPONSE')
  const failed = new CgiResponseParser(base)
  failed.push(Buffer.from('Bad Name: x\n'))
  t.equal(failed.end().code, 'ERR_BAD_RESPONSE_HEADER', 'end() repeats the first error')
  t.equal(failed.end().phase, 'head')
})

t.test('the parser stops at the first error and stays stopped', async (t) => {
  const p = new CgiResponseParser(base)
  const r = p.push(Buffer.from('Status: 9\n'))
  t.ok('error' in r)
  const again = p.push(Buffer.from('Content-Type: a\n\n'))
  t.ok('error' in again && again.error.code === 'ERR_BAD_RESPONSE')
})
