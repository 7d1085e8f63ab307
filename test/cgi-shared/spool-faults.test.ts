/**
 * Faults around the spooled request body of the CGI family, through the real pipeline (a CGI
 * route with sh scripts):
 *
 * - a chunked upload to a script that does not exist is answered 404 at once, before its body is
 *   read or spooled, and leaves no spool fd behind;
 * - a spool directory whose filesystem fills up (a 1 MiB tmpfs) answers 507 ERR_SPOOL_NO_SPACE,
 *   never a short stdin for the script nor silence for the client; a body that fits still works;
 * - the pump that feeds a body to a backend calls a short source of ours an internal error.
 *
 * The tmpfs needs root (CI runs as root): skipped with the reason elsewhere, a failure under CI=true.
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmdirSync } from 'node:fs'
import { request } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { pumpBody } from '../../src/core/body-pump.js'
import { ProxyError } from '../../src/core/errors.js'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { cgiProxy, tempDir, writeScripts } from '../cgi/harness.js'

const SCRIPTS = {
  'count.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nwc -c | tr -d ' '\n",
}

function spoolFds (): string[] {
  return [...openFds().values()].filter((p) => p.includes('proxycore-spool-'))
}

interface Answer { status: number, body: string }

/**
 * A chunked POST: `chunks` chunks of `size` bytes, the next one written only after the previous
 * one was flushed. With `waitForAnswer`, only the first chunk is sent until the response arrives.
 */
function chunkedPost (port: number, path: string, chunks: number, size: number, waitForAnswer = false): Promise<Answer | Error> {
  return new Promise((resolve) => {
    let answered = false
    const deadline = setTimeout(() => { resolve(new Error('no answer within 10 s')); req.destroy() }, 10_000)
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked' } }, (res) => {
      answered = true
      let body = ''
      res.setEncoding('latin1')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => { clearTimeout(deadline); resolve({ status: res.statusCode ?? 0, body }); req.destroy() })
      res.on('error', (err) => { clearTimeout(deadline); resolve(err) })
    })
    req.on('error', (err) => { if (!answered) { clearTimeout(deadline); resolve(err) } })
    const send = (i: number): void => {
      if (answered && waitForAnswer) return
      if (i === chunks) { req.end(); return }
      if (waitForAnswer && i === 1) return // the rest only if the proxy needs it: it must not
      req.write(Buffer.alloc(size, 65), () => send(i + 1))
    }
    send(0)
  })
}

t.test('pumpBody: a source of ours ending short is internal, its own error code is kept', async (t) => {
  const fails: ProxyError[] = []
  const sink = new PassThrough()
  sink.resume()
  pumpBody(Readable.from([Buffer.from('abc')]), 10, sink, { endSink: true, onFail: (e) => fails.push(e) })
  await waitFor(() => fails.length === 1, 2000)
  t.equal(fails[0]?.code, 'ERR_INTERNAL', 'a clean end before CONTENT_LENGTH bytes (a client never ends short)')

  const src = new PassThrough()
  pumpBody(src, 10, sink, { endSink: true, onFail: (e) => fails.push(e) })
  src.destroy(new ProxyError('ERR_SPOOL_NO_SPACE'))
  await waitFor(() => fails.length === 2, 2000)
  t.equal(fails[1]?.code, 'ERR_SPOOL_NO_SPACE', 'a coded failure of the source keeps its code')

  const client = new PassThrough()
  pumpBody(client, 10, sink, { endSink: true, onFail: (e) => fails.push(e) })
  client.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }))
  await waitFor(() => fails.length === 3, 2000)
  t.equal(fails[2]?.code, 'ERR_CLIENT_ABORTED', 'the client stream failing is the client leaving')
  sink.destroy()
})

t.test('chunked upload to a missing script: 404 before the body, no spool fd left', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, SCRIPTS)
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: dir, match: { prefix: '/' } }])

  const early = await chunkedPost(p.port, '/missing.sh', 128, 64 * 1024, true)
  t.notOk(early instanceof Error, 'answered while only the first chunk was sent', { early })
  t.equal((early as Answer).status, 404)

  for (let i = 0; i < 3; i++) {
    const r = await chunkedPost(p.port, '/missing.sh', 128, 64 * 1024)
    if (!(r instanceof Error)) t.equal(r.status, 404, '8 MiB sent whole: still 404')
    t.same(spoolFds(), [], 'no spool fd open once the 404 is in')
  }
  const ok = await chunkedPost(p.port, '/count.sh', 128, 64 * 1024)
  t.same(ok, { status: 200, body: `${8 * 1024 * 1024}\n` }, 'a script that exists still gets the spooled body')
})

t.test('the environment refused after the body was spooled (a Host routing takes but RFC 3875 SERVER_NAME does not): no spool fd left', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, SCRIPTS)
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: dir, match: { prefix: '/' } }])
  const body = Buffer.alloc(256 * 1024, 65)
  let fdsAtAnswer: string[] = []
  const raw = await new Promise<string>((resolve) => {
    const s = connect({ host: '127.0.0.1', port: p.port })
    let out = ''
    const deadline = setTimeout(() => s.destroy(), 10_000)
    s.on('data', (d: Buffer) => {
      out += d.toString('latin1')
      // Checked while the connection is still open: the fd must go with the answer, not with the socket.
      if (/\r\n\r\n[\s\S]*ERR_/.test(out)) { clearTimeout(deadline); fdsAtAnswer = spoolFds(); s.destroy() }
    })
    s.on('error', () => {})
    s.on('close', () => resolve(out))
    s.write(`POST /count.sh HTTP/1.1\r\nHost: a~b\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n`)
    s.write(body)
    s.write('\r\n0\r\n\r\n')
  })
  t.match(raw, /^HTTP\/1\.1 400 /, 'the bad Host is refused', { raw: raw.slice(0, 200) })
  t.ok(await waitFor(() => spoolFds().length === 0, 1000), 'the spooled body\'s fd is closed', { fdsAtAnswer, now: spoolFds() })
})

/** Mount a tmpfs of `size`; false (skip or CI failure) when this host cannot. */
function smallTmpfs (t: Test, size: string): string | null {
  const why = process.getuid?.() !== 0 ? 'mounting a tmpfs needs root' : null
  const dir = mkdtempSync(join(tmpdir(), 'pc-spool-full-'))
  let err = why
  if (err === null) {
    try { execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' }) } catch (e) { err = `mount failed: ${String((e as { stderr?: Buffer }).stderr ?? e)}` }
  }
  if (err !== null) {
    rmdirSync(dir)
    if (process.env.CI === 'true') t.fail(err)
    else t.plan(0, err)
    return null
  }
  t.teardown(() => { execFileSync('umount', [dir]); rmdirSync(dir) })
  return dir
}

t.test('spool filesystem full: 507 ERR_SPOOL_NO_SPACE, never a short body', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, SCRIPTS)
  const small = smallTmpfs(t, '1m')
  if (small === null) return
  // The spool's directory is os.tmpdir(), which reads TMPDIR on each call.
  const saved = process.env.TMPDIR
  process.env.TMPDIR = small
  t.teardown(() => { if (saved === undefined) delete process.env.TMPDIR; else process.env.TMPDIR = saved })
  const p = await cgiProxy(t, { sh: {} }, [{ protocol: 'cgi', spawn: 'sh', docroot: dir, match: { prefix: '/' } }])

  const fits = await chunkedPost(p.port, '/count.sh', 10, 48 * 1024)
  t.same(fits, { status: 200, body: `${10 * 48 * 1024}\n` }, 'a body that fits arrives whole')
  for (const n of [22, 40]) {
    const full = await chunkedPost(p.port, '/count.sh', n, 48 * 1024)
    t.notOk(full instanceof Error, `${n * 48} KiB: answered`, { full })
    t.equal((full as Answer).status, 507, 'Insufficient Storage')
    t.match((full as Answer).body, /ERR_SPOOL_NO_SPACE/)
  }
  t.ok(await waitFor(() => spoolFds().length === 0, 5000), 'every spool fd closed')
  const again = await chunkedPost(p.port, '/count.sh', 10, 48 * 1024)
  t.same(again, { status: 200, body: `${10 * 48 * 1024}\n` }, 'the space comes back with the fds')
})
