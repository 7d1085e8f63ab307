import t from 'tap'
import { CgiBodyFramer, isBodyless } from '../../src/core/cgi/response-body.js'
import type { CgiHead } from '../../src/core/cgi/response-head.js'

const head = (status: number, contentLength: number | null): CgiHead => ({ status, headers: [], contentLength })

t.test('a Content-Length frames the body: bytes past it dropped, EOF before it is an error', async (t) => {
  const f = CgiBodyFramer.forResponse(head(200, 5), 'GET')
  t.equal(f.complete, false)
  t.equal(f.take(Buffer.from('hel')).toString(), 'hel')
  t.not(f.eof(), null, 'short')
  t.equal(f.eof()?.code, 'ERR_BACKEND_CLOSED')
  t.equal(f.take(Buffer.from('lo world')).toString(), 'lo', 'the rest is dropped')
  t.equal(f.complete, true)
  t.equal(f.eof(), null)
})

t.test('without a Content-Length the body runs to EOF', async (t) => {
  const f = CgiBodyFramer.forResponse(head(200, null), 'GET')
  t.equal(f.take(Buffer.from('abc')).toString(), 'abc')
  t.equal(f.complete, false)
  t.equal(f.eof(), null)
})

// RFC 9110 §6.4.1 / §9.3.2, RFC 3875 §4.3.3.
for (const [method, status, cl] of [['HEAD', 200, 11], ['HEAD', 200, null], ['GET', 204, null], ['GET', 304, 11], ['POST', 304, null], ['HEAD', 404, 9]] as const) {
  t.test(`${method} → ${status}${cl === null ? '' : ` with Content-Length ${cl}`}: complete at the head`, async (t) => {
    t.equal(isBodyless(method, status), true)
    const f = CgiBodyFramer.forResponse(head(status, cl), method)
    t.equal(f.complete, true, 'complete before any body byte')
    t.equal(f.eof(), null, 'EOF without a body is a clean end')
    t.equal(f.take(Buffer.from('stray bytes')).length, 0, 'body bytes are dropped')
  })
}

t.test('other statuses and methods expect a body', async (t) => {
  for (const [m, s] of [['GET', 200], ['POST', 201], ['GET', 205], ['GET', 404], ['OPTIONS', 200]] as const) t.equal(isBodyless(m, s), false, `${m} ${s}`)
})
