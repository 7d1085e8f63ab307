/**
 * Max-Forwards on an `http` route (RFC 9110 §7.6.2): an intermediary receiving OPTIONS or TRACE
 * with Max-Forwards MUST check and update it before forwarding, and at 0 MUST NOT forward the
 * request but answer as its final recipient. It used to be forwarded unchanged. Now: OPTIONS at 0
 * is a 200 (no body, no Allow), TRACE at 0 a 501 (never a reflection of the request: Cross-Site
 * Tracing), neither reaching the backend; above 0 the backend gets the value decremented (once,
 * a retry on another backend included); a value that is not 1*DIGIT, or two fields, is a 400
 * ERR_BAD_REQUEST. Other methods pass it unchanged (the field MAY be ignored for them). A CGI
 * script is the origin's application, not a next hop: it sees HTTP_MAX_FORWARDS as sent.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { deadPort } from '../helpers/ports.js'
import { backend, get, proxyServer, rawRequest } from '../helpers/servers.js'

guardLeaks(t)

async function counting (t: { teardown (fn: () => void | Promise<void>): void }): Promise<{ address: string, seen: Array<{ method: string, maxForwards: string | undefined }> }> {
  const seen: Array<{ method: string, maxForwards: string | undefined }> = []
  const be = await backend(t, (req, res) => {
    const mf = req.headers['max-forwards']
    seen.push({ method: req.method ?? '', maxForwards: typeof mf === 'string' ? mf : undefined })
    res.setHeader('Allow', 'GET, HEAD, OPTIONS')
    res.end('backend')
  })
  return { address: be.address, seen }
}

t.test('at 0, OPTIONS and TRACE are answered by proxycore, never forwarded', async (t) => {
  const be = await counting(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address], via: 'edge-1' }] })
  const codes: Array<string | null> = []
  proxy.events.on('request:end', (e) => { codes.push(e.error) })
  const options = await get(`http://127.0.0.1:${port}/x`, { method: 'OPTIONS', headers: { 'max-forwards': '0' } })
  t.equal(options.status, 200)
  t.equal(options.body.length, 0)
  t.equal(options.headers.allow, undefined, 'no Allow: proxycore cannot speak for the backend\'s resource')
  t.match(options.headers.via ?? '', /1\.1 edge-1$/, 'the answering hop names itself in Via')
  const trace = await get(`http://127.0.0.1:${port}/x`, { method: 'TRACE', headers: { 'max-forwards': '0', cookie: 'session=secret' } })
  t.equal(trace.status, 501)
  t.notMatch(trace.body.toString(), /secret/, 'nothing of the request is reflected')
  t.equal(be.seen.length, 0, 'the backend got neither')
  // Leading zeros are still 0; OWS around the value is not part of it.
  const zeros = await rawRequest(port, 'OPTIONS /x HTTP/1.1\r\nHost: a\r\nMax-Forwards:  000 \r\nConnection: close\r\n\r\n')
  t.match(zeros, /^HTTP\/1\.1 200 /)
  t.equal(be.seen.length, 0)
  const tenZeros = await get(`http://127.0.0.1:${port}/x`, { method: 'TRACE', headers: { 'max-forwards': '0000000000' } })
  t.equal(tenZeros.status, 501, 'ten zeros are 0 too')
  t.equal(be.seen.length, 0)
  t.same(codes, [null, null, null, null], 'answers, not errors')
})

t.test('above 0 the backend gets the value decremented; other methods pass it unchanged', async (t) => {
  const be = await counting(t)
  const { port } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const cases: Array<[string, string, string]> = [
    ['OPTIONS', '5', '4'], ['TRACE', '1', '0'], ['OPTIONS', '012', '11'],
    ['TRACE', '123456789012345678901', '999999999'], ['OPTIONS', '00000000007', '6'],
    ['GET', '0', '0'], ['POST', '3', '3'],
  ]
  for (const [method, sent, expected] of cases) {
    const r = await get(`http://127.0.0.1:${port}/y`, { method, headers: { 'max-forwards': sent } })
    t.equal(r.status, 200, `${method} ${sent}`)
    t.same(be.seen.at(-1), { method, maxForwards: expected }, `${method} with Max-Forwards ${sent}: the backend sees ${expected}`)
  }
  const none = await get(`http://127.0.0.1:${port}/y`, { method: 'OPTIONS' })
  t.equal(none.status, 200)
  t.same(be.seen.at(-1), { method: 'OPTIONS', maxForwards: undefined }, 'without the field, nothing is added')
  t.equal(none.headers.allow, 'GET, HEAD, OPTIONS', 'the backend\'s answer')
  t.equal(be.seen.length, cases.length + 1)
})

t.test('a value that is not a number, or two fields: 400 ERR_BAD_REQUEST, nothing forwarded', async (t) => {
  const be = await counting(t)
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const codes: Array<string | null> = []
  proxy.events.on('request:end', (e) => { codes.push(e.error) })
  for (const head of ['Max-Forwards: -1', 'Max-Forwards: 1x', 'Max-Forwards: ', 'Max-Forwards: 1\r\nMax-Forwards: 1']) {
    const answer = await rawRequest(port, `TRACE /z HTTP/1.1\r\nHost: a\r\n${head}\r\nConnection: close\r\n\r\n`)
    t.match(answer, /^HTTP\/1\.1 400 /, JSON.stringify(head))
    t.match(answer, /ERR_BAD_REQUEST/)
  }
  t.equal(be.seen.length, 0)
  t.same(codes, ['ERR_BAD_REQUEST', 'ERR_BAD_REQUEST', 'ERR_BAD_REQUEST', 'ERR_BAD_REQUEST'])
  // The proxy still serves on.
  t.equal((await get(`http://127.0.0.1:${port}/z`, { method: 'OPTIONS', headers: { 'max-forwards': '2' } })).status, 200)
  t.same(be.seen, [{ method: 'OPTIONS', maxForwards: '1' }])
})

t.test('a retry on another backend after a connect failure decrements the client\'s value once', async (t) => {
  const be = await counting(t)
  const dead = await deadPort()
  const { port, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [`127.0.0.1:${dead}`, be.address], retries: 2 }] })
  const disabled: string[] = []
  proxy.events.on('backend:disabled', (e) => { disabled.push(e.backend) })
  for (let i = 0; i < 4; i++) {
    const r = await get(`http://127.0.0.1:${port}/r`, { method: 'OPTIONS', headers: { 'max-forwards': '5' } })
    t.equal(r.status, 200)
  }
  t.equal(be.seen.length, 4)
  t.same(be.seen.map((s) => s.maxForwards), ['4', '4', '4', '4'])
  t.ok(disabled.includes(`127.0.0.1:${dead}`), `a request went to the dead backend first and was retried: ${JSON.stringify(disabled)}`)
})

t.test('a CGI script is the origin: it sees Max-Forwards as sent, 0 included', async (t) => {
  const docroot = mkdtempSync(join(tmpdir(), 'pc-audit37-mf-'))
  t.teardown(() => rmSync(docroot, { recursive: true, force: true }))
  writeFileSync(join(docroot, 'mf.sh'), "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"$REQUEST_METHOD mf=$HTTP_MAX_FORWARDS\"\n", { mode: 0o755 })
  const { port } = await proxyServer(t, { spawns: { cgi: { socketType: 'pipe' } }, routes: [{ protocol: 'cgi', spawn: 'cgi', docroot }] })
  const r = await get(`http://127.0.0.1:${port}/mf.sh`, { method: 'OPTIONS', headers: { 'max-forwards': '0' } })
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'OPTIONS mf=0\n')
})
