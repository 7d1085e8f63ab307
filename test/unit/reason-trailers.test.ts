/** filterTrailers and reasonPhrase (src/core/headers.ts): trailer hygiene and reason phrases. */
import t from 'tap'
import { filterTrailers, reasonPhrase } from '../../src/core/headers.js'

t.test('filterTrailers drops hop-by-hop, Connection-listed and RFC 9110 §6.5.1 fields', async (t) => {
  const head = ['Content-Type', 'text/plain', 'Connection', 'X-Hop, keep-alive', 'connection', 'x-other']
  const trailers = [
    'X-Checksum', 'a', 'x-hop', '1', 'X-Other', '2', 'Keep-Alive', 't', 'TE', 'trailers', 'Trailer', 'X',
    'Transfer-Encoding', 'chunked', 'Content-Length', '9', 'Host', 'h', 'Set-Cookie', 's=1', 'Location', '/x',
    'Content-Type', 'x/y', 'Content-Encoding', 'gzip', 'Cache-Control', 'no-store', 'WWW-Authenticate', 'Basic',
    'Server-Timing', 'db;dur=53', 'x-checksum', 'b',
  ]
  t.same(filterTrailers(trailers, head), ['X-Checksum', 'a', 'Server-Timing', 'db;dur=53', 'x-checksum', 'b'])
  t.same(filterTrailers(['Grpc-Status', '0'], []), ['Grpc-Status', '0'], 'no Connection in the head')
  t.same(filterTrailers([], head), [])
})

t.test('reasonPhrase: what node:http can write, the backend bytes kept', async (t) => {
  for (const ok of ['', 'OK', 'Not Found', 'tab\there', 'a~!']) t.equal(reasonPhrase(ok), ok, JSON.stringify(ok))
  for (const bad of ['O\x01K', 'a\x7f', 'a\rb', 'a\nb', 'a\0']) t.equal(reasonPhrase(bad), null, JSON.stringify(bad))
  t.equal(reasonPhrase('\u00e9t\u00e9'), '\xc3\xa9t\xc3\xa9', 'UTF-8 decoded by undici: its bytes again, one char each')
  t.equal(reasonPhrase('\ufffdt\ufffd'), '', 'bytes that were not UTF-8 are lost: no phrase')
  t.equal(reasonPhrase('\u4e2d'), '\xe4\xb8\xad')
})
