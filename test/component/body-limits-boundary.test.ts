/**
 * maxBodySize at its boundary, through the real pipeline for every protocol family: an HTTP
 * backend (node:http), a CGI sh script, php-cgi over FastCGI and uWSGI over SCGI.
 *
 * - a body of exactly maxBodySize bytes arrives whole (sha256 compared at the backend), with a
 *   Content-Length and chunked with chunks that do not line up with the limit;
 * - one byte more is 413 ERR_BODY_TOO_LARGE: a Content-Length one before any byte is read, a
 *   chunked one when the byte that crosses the limit arrives. The backend of a spooling protocol
 *   (CGI, FastCGI, SCGI) never sees such a request; an HTTP backend, which gets a chunked body
 *   streamed, never sees more than the limit nor the body's end;
 * - maxBodySize 0 means no limit (docs/reference/config-keys.md).
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer } from '../helpers/servers.js'
import { cgiProxy, tempDir, writeScripts } from '../cgi/harness.js'
import { havePeer as haveFcgiPeer, PHP_CGI, startPhpCgi } from '../fastcgi/helpers/peers.js'
import { ECHO_APP, startUwsgi, uwsgiSkip } from '../scgi/uwsgi-peer.js'

const LIMIT = 200_000

interface Answer { status: number, body: string, error: string | null }

function bytes (n: number): Buffer {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 7 + (i >> 8)) & 0xff
  return b
}

function sha (b: Buffer): string {
  return createHash('sha256').update(b).digest('hex')
}

/**
 * POST `body` to `url`: with a Content-Length (`chunk` 0), or chunked in pieces of `chunk` bytes,
 * each written after the previous one was flushed. Bounded by a 20 s deadline.
 */
function post (url: string, body: Buffer, chunk: number): Promise<Answer> {
  return new Promise((resolve) => {
    let settled = false
    const done = (a: Answer): void => { if (!settled) { settled = true; clearTimeout(deadline); resolve(a) } }
    const headers: Record<string, string> = chunk === 0 ? { 'content-length': String(body.length) } : { 'transfer-encoding': 'chunked' }
    const req = request(url, { method: 'POST', headers, agent: false }, (res) => {
      let text = ''
      res.setEncoding('latin1')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => { done({ status: res.statusCode ?? 0, body: text, error: null }); req.destroy() })
      res.on('error', (err) => done({ status: res.statusCode ?? 0, body: text, error: err.message }))
    })
    const deadline = setTimeout(() => { done({ status: 0, body: '', error: 'no answer within 20 s' }); req.destroy() }, 20_000)
    req.on('error', (err) => done({ status: 0, body: '', error: err.message }))
    if (chunk === 0) { req.end(body); return }
    const send = (off: number): void => {
      if (settled || req.destroyed) return
      if (off >= body.length) { req.end(); return }
      req.write(body.subarray(off, off + chunk), () => send(off + chunk))
    }
    send(0)
  })
}

const exact = bytes(LIMIT)
const over = bytes(LIMIT + 1)
// Chunk sizes that cross the limit inside a chunk (7 777 does not divide 200 000) and with the
// last byte alone in its chunk (LIMIT + 1 sent as 100 000 + 100 000 + 1).
const CASES: Array<[string, number]> = [['Content-Length', 0], ['chunked 7777', 7777], ['chunked 100000', 100_000]]

t.test('HTTP backend', async (t) => {
  guardLeaks(t)
  const seen: Array<{ bytes: number, ended: boolean, sha: string }> = []
  const up = await backend(t, (req, res) => {
    const rec = { bytes: 0, ended: false, sha: '' }
    seen.push(rec)
    const h = createHash('sha256')
    req.on('data', (c: Buffer) => { rec.bytes += c.length; h.update(c) })
    req.on('end', () => { rec.ended = true; rec.sha = h.digest('hex'); res.end(`${rec.bytes} ${rec.sha}`) })
  })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [up.address], maxBodySize: LIMIT }] })
  for (const [name, chunk] of CASES) {
    seen.length = 0
    const ok = await post(`${url}/x`, exact, chunk)
    t.same(ok, { status: 200, body: `${LIMIT} ${sha(exact)}`, error: null }, `${name}: exactly the limit arrives whole`)
    seen.length = 0
    const no = await post(`${url}/x`, over, chunk)
    t.equal(no.status, 413, `${name}: one byte over is 413`, { no })
    t.match(no.body, /ERR_BODY_TOO_LARGE/)
    t.notOk(seen.some((s) => s.ended), `${name}: the backend never got the end of the over-limit body`, { seen })
    t.ok(seen.every((s) => s.bytes <= LIMIT), `${name}: nor more than the limit`, { seen })
    if (chunk === 0) t.same(seen, [], 'a Content-Length over the limit never reaches the backend')
  }
})

t.test('maxBodySize 0 is unlimited (HTTP backend)', async (t) => {
  guardLeaks(t)
  const up = await backend(t, (req, res) => {
    const h = createHash('sha256')
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length; h.update(c) })
    req.on('end', () => res.end(`${n} ${h.digest('hex')}`))
  })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [up.address], maxBodySize: 0 }] })
  const big = bytes(3 * 1024 * 1024 + 5)
  for (const chunk of [0, 65536]) {
    t.same(await post(`${url}/x`, big, chunk), { status: 200, body: `${big.length} ${sha(big)}`, error: null }, `chunk ${chunk}: a 3 MiB body passes`)
  }
})

t.test('CGI (sh script, spooled chunked bodies)', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  const marks = tempDir(t, 'pc-marks-')
  const ran = join(marks, 'ran')
  writeScripts(dir, {
    'sum.sh': `#!/bin/sh\necho x >> '${ran}'\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nwc -c | tr -d ' \\n'\nprintf ' %s' "$CONTENT_LENGTH"\n`,
    'sha.sh': `#!/bin/sh\necho x >> '${ran}'\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nsha256sum | cut -d' ' -f1 | tr -d '\\n'\n`,
  })
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: dir, match: { prefix: '/' }, maxBodySize: LIMIT }])
  const runs = (): number => existsSync(ran) ? readFileSync(ran, 'latin1').length / 2 : 0
  for (const [name, chunk] of CASES) {
    const before = runs()
    t.same(await post(`${p.url}/sha.sh`, exact, chunk), { status: 200, body: sha(exact), error: null }, `${name}: exactly the limit arrives whole`)
    t.same(await post(`${p.url}/sum.sh`, exact, chunk), { status: 200, body: `${LIMIT} ${LIMIT}`, error: null }, `${name}: CONTENT_LENGTH is the limit`)
    const no = await post(`${p.url}/sha.sh`, over, chunk)
    t.equal(no.status, 413, `${name}: one byte over is 413`, { no })
    t.match(no.body, /ERR_BODY_TOO_LARGE/)
    t.equal(runs(), before + 2, `${name}: no script ran for the over-limit body`)
  }
  t.ok(p.lines.some((l) => l.obj.code === 'ERR_BODY_TOO_LARGE' && l.msg.includes(`over ${LIMIT} bytes (maxBodySize)`)), 'the log names the limit that applied: maxBodySize')
})

t.test('CGI: with no maxBodySize, a chunked body over spoolLimit is a 413 whose log names spoolLimit', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, { 'sha.sh': `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nsha256sum | cut -d' ' -f1 | tr -d '\\n'\n` })
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: dir, match: { prefix: '/' }, maxBodySize: 0, spoolLimit: LIMIT }])
  const no = await post(`${p.url}/sha.sh`, over, 7777)
  t.equal(no.status, 413, 'over spoolLimit is 413', { no })
  const line = p.lines.find((l) => l.obj.code === 'ERR_BODY_TOO_LARGE')
  t.ok(line !== undefined, 'logged')
  t.match(line?.msg, `over ${LIMIT} bytes (spoolLimit)`, 'the log names spoolLimit, not maxBodySize (which is unlimited here)')
})

t.test('FastCGI (php-cgi)', async (t) => {
  if (!haveFcgiPeer(t, PHP_CGI)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-fcgi-limits-')
  writeScripts(dir, {
    'sha.php': `<?php\nfile_put_contents('${join(dir, 'ran')}', 'x', FILE_APPEND);\n$in = file_get_contents('php://input');\nheader('Content-Type: text/plain');\necho strlen($in), ' ', $_SERVER['CONTENT_LENGTH'] ?? '-', ' ', hash('sha256', $in);\n`,
  }, 0o644)
  const peer = await startPhpCgi(t, dir, 2)
  const { url } = await proxyServer(t, { routes: [{ protocol: 'fastcgi', backends: [`unix:${peer.socketPath}`], docroot: dir, match: { extension: '.php' }, maxBodySize: LIMIT }] })
  const runs = (): number => existsSync(join(dir, 'ran')) ? readFileSync(join(dir, 'ran'), 'latin1').length : 0
  for (const [name, chunk] of CASES) {
    const before = runs()
    t.same(await post(`${url}/sha.php`, exact, chunk), { status: 200, body: `${LIMIT} ${LIMIT} ${sha(exact)}`, error: null }, `${name}: exactly the limit arrives whole`)
    const no = await post(`${url}/sha.php`, over, chunk)
    t.equal(no.status, 413, `${name}: one byte over is 413`, { no })
    t.match(no.body, /ERR_BODY_TOO_LARGE/)
    t.equal(runs(), before + 1, `${name}: PHP never ran for the over-limit body`)
  }
})

t.test('SCGI (uWSGI)', { skip: uwsgiSkip() }, async (t) => {
  guardLeaks(t)
  const peer = await startUwsgi('scgi', ECHO_APP)
  t.teardown(() => peer.stop())
  const { url } = await proxyServer(t, { routes: [{ protocol: 'scgi', backends: [`unix:${peer.socketPath}`], scriptFilename: '/app', maxBodySize: LIMIT }] })
  for (const [name, chunk] of CASES) {
    const ok = await post(`${url}/x`, exact, chunk)
    t.equal(ok.status, 200, `${name}: exactly the limit is accepted`, { ok })
    const out = JSON.parse(ok.body) as { env: Record<string, string>, body_len: number, body_sha256: string }
    t.same([out.env.CONTENT_LENGTH, out.body_len, out.body_sha256], [String(LIMIT), LIMIT, sha(exact)], `${name}: and arrives whole`)
    const no = await post(`${url}/x`, over, chunk)
    t.equal(no.status, 413, `${name}: one byte over is 413`, { no })
    t.match(no.body, /ERR_BODY_TOO_LARGE/)
  }
})
