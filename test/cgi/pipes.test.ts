/**
 * CGI over pipes through the whole pipeline (createProxy → cgi adapter → SpawnManager pipe spawn →
 * real /bin/sh and perl scripts): RELIABILITY §2.13 and ACCEPTANCE J (AC-91..95), with the C/D
 * cases that concern CGI (AC-29..32, 37, 39, 42..47).
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { get, rawRequest } from '../helpers/servers.js'
import { guardLeaks, openFds, processGroup, waitFor } from '../helpers/leaks.js'
import { fetchRaw, parseEnv, writeScripts } from './harness.js'
import { standardProxy } from './fixtures.js'

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex')
const gone = (pgid: number): boolean => processGroup(pgid).every((p) => p.state === 'Z')

t.test('AC-29/30/31/37: meta-variables, cwd, no argv from the query', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t)
  const r = await get(`${p.url}/cgi-bin/env.sh/a/b?x=1&y=%20`, { headers: { host: 'h.example:8080' } })
  t.equal(r.status, 200)
  const env = parseEnv(r.body.toString())
  t.match(env, {
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_PROTOCOL: 'HTTP/1.1',
    REQUEST_METHOD: 'GET',
    SCRIPT_NAME: '/cgi-bin/env.sh',
    SCRIPT_FILENAME: join(p.cgiDir, 'env.sh'),
    PATH_INFO: '/a/b',
    QUERY_STRING: 'x=1&y=%20',
    SERVER_NAME: 'h.example',
    SERVER_PORT: String(p.port),
    REMOTE_ADDR: '127.0.0.1',
    REQUEST_SCHEME: 'http'
  })
  t.ok(env.REMOTE_PORT, 'REMOTE_PORT set')
  t.match(env.SERVER_SOFTWARE, /^proxycore\//)
  t.notOk('CONTENT_LENGTH' in env || 'CONTENT_TYPE' in env, 'no CONTENT_* without a body')
  t.notOk('PROXYCORE_SECRET_TEST' in env, 'nothing from the host environment but PATH')
  t.notOk('PATH_TRANSLATED' in env, 'no PATH_TRANSLATED (php-cgi with cgi.fix_pathinfo=0 would run it)')

  const bare = parseEnv((await get(`${p.url}/cgi-bin/env.sh`)).body.toString())
  t.equal(bare.QUERY_STRING, '', '§4.1.7: QUERY_STRING always set')
  t.notOk('PATH_INFO' in bare || 'PATH_TRANSLATED' in bare, '§4.1.6: no PATH_TRANSLATED without PATH_INFO')
  t.equal(parseEnv((await get(`${p.url}/cgi-bin/env.sh?a+b=%2B`)).body.toString()).QUERY_STRING, 'a+b=%2B', 'raw')
  t.equal(parseEnv((await get(`${p.url}/cgi-bin/env.sh/A%20B/C`)).body.toString()).PATH_INFO, '/A B/C', 'decoded, case kept')

  const head = await fetchRaw(`${p.url}/cgi-bin/env.sh`, { method: 'HEAD' })
  t.same([head.status, head.body.length, head.headers['content-type']], [200, 0, 'text/plain'], 'HEAD: body discarded (§4.3.3)')

  for (const q of ['-s', 'a+b']) {
    const a = (await get(`${p.url}/cgi-bin/sub/argv.sh?${q}`)).body.toString()
    t.match(a, `pwd=${join(p.cgiDir, 'sub')}\n`, 'cwd is the script directory (RFC 3875 §7.2)')
    t.match(a, 'argc=0\nargv=\n', `no argv from ?${q} (CVE-2012-1823)`)
  }
})

t.test('AC-39: Proxy header never becomes HTTP_PROXY; only fds 0-2 (AC-95)', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t)
  const r = await get(`${p.url}/cgi-bin/env.sh`, { headers: { proxy: 'http://127.0.0.1:9/', 'x-ok': '1' } })
  const env = parseEnv(r.body.toString())
  t.notOk('HTTP_PROXY' in env, 'httpoxy')
  t.equal(env.HTTP_X_OK, '1')

  const fds = (await get(`${p.url}/cgi-bin/fds.sh`, { method: 'POST', body: 'x' })).body.toString()
  const entries = [...fds.matchAll(/ (\d+) -> (.*)$/gm)].map((m) => [Number(m[1]), m[2]] as const)
  t.same(entries.filter(([fd]) => fd <= 2).map(([, target]) => /^(pipe|socket):/.test(target)), [true, true, true], 'fds 0-2 are the exchange\'s pipes')
  const bodiless = (await get(`${p.url}/cgi-bin/fds.sh`)).body.toString()
  t.match(bodiless, / 0 -> \/dev\/null$/m, 'no body: stdin is /dev/null, as lighttpd\'s mod_cgi gives it')
  // Anything else may only be what this host itself inherited without CLOEXEC (tap's own pipes):
  // that part needs the fd-closing helper of AC-24. Never a descriptor the host opened.
  const inherited = inheritedFds()
  const extra = entries.filter(([fd, target]) => fd > 2 && !/^\/proc\/\d+\/fd$/.test(target) && inherited.get(fd) !== target)
  t.same(extra, [], 'no listening socket, client socket, log or backend fd of the host')
})

/** The host's fds without FD_CLOEXEC: the only ones exec passes on. */
function inheritedFds (): Map<number, string> {
  const out = new Map<number, string>()
  for (const [fd, target] of openFds()) {
    try {
      const flags = /^flags:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))
      if (flags !== null && (parseInt(flags[1], 8) & 0o2000000) === 0) out.set(fd, target)
    } catch {}
  }
  return out
}

t.test('AC-32: bodies become CONTENT_LENGTH (plain, chunked, empty)', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t)
  const body = randomBytes(1024 * 1024)
  const plain = await get(`${p.url}/cgi-bin/sha.sh`, { method: 'POST', body })
  t.equal(plain.body.toString(), `len=1048576\n${sha(body)}  -\n`)

  const chunked = await new Promise<string>((resolve, reject) => {
    const req = request(`${p.url}/cgi-bin/sha.sh`, { method: 'POST', agent: false }, (res) => {
      let text = ''
      res.on('data', (c: Buffer) => { text += c.toString() })
      res.on('end', () => resolve(text))
    })
    req.on('error', reject)
    for (let off = 0; off < body.length;) {
      const n = 1024 + (off % 7168)
      req.write(body.subarray(off, off + n))
      off += n
    }
    req.end()
  })
  t.equal(chunked, `len=1048576\n${sha(body)}  -\n`, 'chunked body spooled by the core: CONTENT_LENGTH recalculated (§4.2)')

  const empty = await get(`${p.url}/cgi-bin/sha.sh`, { method: 'POST', headers: { 'content-length': '0' } })
  t.match(empty.body.toString(), /^len=0\n/, 'an empty body is still a body')
  t.match((await get(`${p.url}/cgi-bin/sha.sh`)).body.toString(), /^len=unset\n/, 'GET without body: no CONTENT_LENGTH')

  const gz = await rawRequest(p.port, 'POST /cgi-bin/sha.sh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n')
  t.match(gz, /^HTTP\/1\.1 (400|501) /, 'unsupported coding refused before any script runs (AC-32c asks 501; the core answers 400)')
})

t.test('RFC 3875 §3.4: no deadlock when a script writes 1 MiB before reading a 1 MiB body', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t)
  const body = randomBytes(1024 * 1024)
  const r = await get(`${p.url}/cgi-bin/write-first.sh`, { method: 'POST', body })
  t.equal(r.status, 200)
  t.equal(r.body.length, 1024 * 1024 + 64 + 4)
  t.ok(r.body.subarray(0, 1024 * 1024).every((b) => b === 0), '1 MiB written first')
  t.equal(r.body.subarray(1024 * 1024).toString(), `${sha(body)}  -\n`, 'then the whole body read')

  const pl = await get(`${p.url}/perl/echo.pl`, { method: 'POST', body })
  t.equal(pl.body.length, 2 * 1024 * 1024, 'perl: 1 MiB out, then the body echoed')
  t.equal(sha(pl.body.subarray(1024 * 1024)), sha(body))
})

t.test('large bodies both ways, streamed (8 MiB echo, sha256 at each end)', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t)
  const body = randomBytes(8 * 1024 * 1024)
  const r = await get(`${p.url}/cgi-bin/cat.sh`, { method: 'POST', body })
  t.equal(r.status, 200)
  t.equal(r.body.length, body.length)
  t.equal(sha(r.body), sha(body))
})

t.test('AC-92: exit conditions', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t)
  const a = await get(`${p.url}/cgi-bin/empty.sh`)
  t.equal(a.status, 502, '(a) no output at all → 502 (§6.1)')
  t.match(a.body.toString(), 'ERR_CGI_EXIT')
  const partial = await get(`${p.url}/cgi-bin/partial.sh`)
  t.equal(partial.status, 502, 'output ended inside the head → 502')
  t.match(partial.body.toString(), 'ERR_CGI_EXIT')

  const b = await fetchRaw(`${p.url}/cgi-bin/fail-after.sh`)
  t.equal(b.status, 200, '(b) exit 1 after a whole response: the response stands')
  t.equal(b.body.toString(), 'body')
  t.ok(b.complete)
  t.ok(await waitFor(() => p.lines.some((l) => l.level === 'warn' && l.obj.code === 1)), 'exit code 1 logged')

  const c = await fetchRaw(`${p.url}/cgi-bin/killself.sh`)
  t.equal(c.status, 200)
  t.notOk(c.complete, '(c) killed by SIGKILL mid-body → the client response is cut, no final chunk')

  const d = await fetchRaw(`${p.url}/cgi-bin/ctonly.sh`)
  t.equal(d.status, 200, '(d) only Content-Type → 200 with an empty body')
  t.equal(d.body.length, 0)
  t.ok(d.complete)
})

t.test('AC-91: 1 MiB of stderr neither blocks the script nor floods the log', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t)
  const r = await get(`${p.url}/cgi-bin/stderr.sh`)
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'ok')
  const stderrLines = () => p.lines.filter((l) => l.obj.stream === 'stderr')
  // stderr is drained on its own pipe: its last lines may arrive after the response ended.
  t.ok(await waitFor(() => stderrLines().some((l) => l.msg.includes('[stderr truncated after 65536 bytes]'))), 'truncation marker')
  const logged = stderrLines()
  const bytes = logged.reduce((n, l) => n + l.msg.length, 0)
  t.ok(bytes > 0 && bytes < 80 * 1024, `stderr log capped (${bytes} bytes logged)`)
})

t.test('AC-91: a stderr stream that ends inside a UTF-8 character is logged whole (U+FFFD), not cut', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t)
  // The last stderr byte is the first of "é" (c3): no later read completes it.
  writeScripts(p.cgiDir, { 'cut.sh': '#!/bin/sh\nprintf "caf\\303" >&2\nprintf "Content-Type: text/plain\\r\\n\\r\\nok"\n' })
  const r = await get(`${p.url}/cgi-bin/cut.sh`)
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'ok')
  const stderr = (): string => p.lines.filter((l) => l.obj.stream === 'stderr').map((l) => l.msg).join('')
  // stderr is drained on its own pipe and may end after the response: wait for its last byte.
  t.ok(await waitFor(() => stderr().includes('\ufffd')), `the held byte is logged when stderr ends (${JSON.stringify(stderr())})`)
  t.equal(stderr(), 'caf\ufffd')
})

// AC-12 (CGI part): a client abort stops the script's backgrounded sleep with its group.
t.test('AC-94: a client abort kills the whole process group', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t)
  const { pgid, received } = await new Promise<{ pgid: number, received: number }>((resolve, reject) => {
    const req = request(`${p.url}/cgi-bin/big.sh`, { agent: false }, (res) => {
      let received = 0
      res.on('data', (c: Buffer) => {
        received += c.length
        if (received >= 10 * 1024) { req.destroy(); resolve({ pgid: Number(res.headers['x-pid']), received }) }
      })
    })
    req.on('error', (err) => { if (!req.destroyed) reject(err) })
    req.end()
  })
  t.ok(received >= 10 * 1024)
  t.ok(pgid > 0)
  const started = Date.now()
  t.ok(await waitFor(() => gone(pgid), 5000), 'script and its backgrounded sleep are gone')
  t.ok(Date.now() - started < 3000, `group stopped in ${Date.now() - started} ms`)
})

t.test('AC-93: core timeouts stop the group (head timeout → 504, idle timeout → cut)', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t, [], { timeouts: { headers: '300ms', idle: '300ms' } })
  const started = Date.now()
  const a = await get(`${p.url}/cgi-bin/slowhead.sh`)
  t.equal(a.status, 504, '(a) no head in time')
  t.ok(Date.now() - started < 3000)
  const pid = Number(readFileSync(join(p.cgiDir, 'slowhead.pid'), 'utf8'))
  t.ok(await waitFor(() => gone(pid), 5000), '(a) group gone, marker sleep included')

  const b = await fetchRaw(`${p.url}/cgi-bin/slowbody.sh`)
  t.equal(b.status, 200)
  t.equal(b.body.toString(), 'first')
  t.notOk(b.complete, '(b) idle body → response cut')
  t.ok(await waitFor(() => gone(Number(b.headers['x-pid'])), 5000), '(b) group gone')
})

t.test('AC-42/43/44/46: what a script prints in its head', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t)
  const cases: Array<[string, number, string | null]> = [
    ['cr', 502, null], ['nocolon', 502, null], ['badname', 502, null], ['fold', 502, null], ['huge', 502, null],
    ['te', 502, null], ['status30', 502, null], ['twostatus', 502, null],
    ['status404', 404, 'nope'], ['noct', 200, ''], ['cl-long', 200, 'zzzzz'], ['doc301', 301, 'moved'], ['abs', 302, '']
  ]
  for (const [q, status, body] of cases) {
    const r = await fetchRaw(`${p.url}/cgi-bin/resp.sh?${q}`)
    t.equal(r.status, status, `${q} → ${status}`)
    if (body !== null) t.equal(r.body.toString(), body, `${q} body`)
    t.notOk(r.headers['set-cookie'], `${q}: no injected header`)
  }
  const cookie = await fetchRaw(`${p.url}/cgi-bin/resp.sh?cookie`)
  t.same([cookie.status, cookie.headers['set-cookie']], [200, ['ok=1']], 'valid CRLF head')
  t.equal((await fetchRaw(`${p.url}/cgi-bin/resp.sh?noct`)).headers['content-type'], undefined, 'AC-44: no content type invented (§6.3.1)')
  t.equal((await fetchRaw(`${p.url}/cgi-bin/resp.sh?abs`)).headers.location, 'http://x.example/', 'AC-46: §6.2.3 client redirect')
  const short = await fetchRaw(`${p.url}/cgi-bin/resp.sh?cl-short`)
  t.notOk(short.complete, 'AC-43b: Content-Length longer than the output → response cut')
})

t.test('AC-45: local redirects are off by default (302), and stay inside their route when on', async (t) => {
  guardLeaks(t)
  const off = await standardProxy(t)
  const r = await get(`${off.url}/cgi-bin/resp.sh?local`, { method: 'POST', body: 'abc' })
  t.equal(r.status, 302, 'off (CVE-2024-38476): the client gets a 302 (RFC 3875 §6.2.3)')
  t.equal(r.headers.location, '/perl/hello.pl?from=sh', 'Location unchanged')
  const login = await get(`${off.url}/cgi-bin/resp.sh?localcookie`)
  t.equal(login.status, 302)
  t.same([login.headers.location, login.headers['set-cookie'], login.headers['cache-control']], ['/home', ['sid=abc'], 'no-store'], 'off: the script\'s other fields go with the 302 (a login\'s cookie)')
  t.equal(login.body.toString(), 'Redirecting\n', 'and its body')
  const on = await standardProxy(t, [], { localRedirects: true })
  const same = await get(`${on.url}/cgi-bin/resp.sh?localsame`, { method: 'POST', body: 'abc' })
  t.equal(same.status, 200)
  t.equal(same.body.toString(), 'method=GET len=unset rs=200 ru=/cgi-bin/resp.sh rq=localsame\n', 're-processed as a GET without body; REDIRECT_* from the proxy')
  const away = await get(`${on.url}/cgi-bin/resp.sh?local`)
  t.equal(away.status, 404, 'never into another route')
  t.match(away.body.toString(), 'ERR_NO_ROUTE')
  const loop = await get(`${on.url}/cgi-bin/resp.sh?loop`)
  t.equal(loop.status, 500)
  t.match(loop.body.toString(), 'ERR_REDIRECT_LOOP')
  // Both refusals are logged as failed exchanges are: the script is at fault (nginx logs a cycle).
  const logged = (code: string) => on.lines.filter((l) => l.obj.code === code && l.obj.route !== undefined)
  t.same(logged('ERR_REDIRECT_LOOP').map((l) => l.level), ['error'], 'the loop: one error line')
  t.match(logged('ERR_REDIRECT_LOOP')[0]?.msg, /more than 10 local redirects, the last to \/cgi-bin\/resp\.sh\?loop/)
  t.same(logged('ERR_NO_ROUTE').map((l) => l.level), ['warn'], 'leaving the route: one warn line')
})

t.test('AC-47: NPH scripts (opt-in per route)', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t)
  t.equal((await fetchRaw(`${p.url}/nph/nph-ok.sh`)).status, 304)
  t.equal((await fetchRaw(`${p.url}/nph/nph-bad.sh`)).status, 502, 'status 30 → 502 (lighttpd #14)')
  const ok = await fetchRaw(`${p.url}/nph/nph-200.sh`)
  t.same([ok.status, ok.body.toString(), ok.headers['content-type']], [200, 'nph body', 'text/plain'])
  const port = Number(new URL(p.url).port)
  const nphRaw = await rawRequest(port, 'GET /nph/nph-200.sh HTTP/1.1\r\nHost: a\r\n\r\n')
  t.match(nphRaw, /^HTTP\/1\.1 200[^]*\r\nConnection: close\r\n[^]*nph body/i, 'RFC 3875 §5.2: the client connection closes after an NPH response (keep-alive request)')
  const plainRaw = await rawRequest(port, 'GET /nph/env.sh HTTP/1.1\r\nHost: a\r\n\r\n', /\r\nConnection: keep-alive\r\n/i)
  t.match(plainRaw, /\r\nConnection: keep-alive\r\n/i, 'plain CGI on the same route keeps the connection')
  t.notOk(/keep-alive/i.test(String(ok.headers['keep-alive'] ?? '')), 'the script\'s Connection header is not forwarded')
  t.equal((await fetchRaw(`${p.url}/cgi-bin/nph-ok.sh`)).status, 502, 'without nph: the status line is a malformed CGI head')
  t.equal((await fetchRaw(`${p.url}/nph/env.sh`)).status, 200, 'scripts without the nph- prefix stay plain CGI')
})

t.test('spawn failures → 502 ERR_CGI_SPAWN', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t, [
    { match: { prefix: '/ghost/' }, protocol: 'cgi', spawn: 'ghost' }
  ])
  writeScripts(p.cgiDir, { 'noexec.sh': '#!/bin/sh\necho hi\n' }, 0o644)
  const eacces = await get(`${p.url}/cgi-bin/noexec.sh`)
  t.equal(eacces.status, 502, 'EACCES')
  t.match(eacces.body.toString(), 'ERR_CGI_SPAWN')
  const ghost = await get(`${p.url}/ghost/x`)
  t.equal(ghost.status, 502, 'a route without a process starter')
  t.match(ghost.body.toString(), 'ERR_CGI_SPAWN')
})

t.test('concurrency cap is the core\'s route maxConcurrent/queue', async (t) => {
  guardLeaks(t)
  const p = await standardProxy(t, [], { maxConcurrent: 1, queue: 0, requestBuffering: false })
  let release = (): void => {}
  const first = new Promise<string>((resolve, reject) => {
    const req = request(`${p.url}/cgi-bin/hold.sh`, { method: 'POST', agent: false, headers: { 'content-length': '1' } }, (res) => {
      let text = ''
      res.on('data', (c: Buffer) => { text += c.toString() })
      res.on('end', () => resolve(text))
    })
    req.on('error', reject)
    req.flushHeaders()
    release = () => { req.end('x') }
  })
  // The held script is running (it waits for its one body byte): the route is at maxConcurrent.
  t.ok(await waitFor(() => p.manager.status().find((s) => s.name === 'cgi')?.pipeChildren === 1, 5000))
  const second = get(`${p.url}/cgi-bin/env.sh`)
  const refused = await second
  t.equal(refused.status, 503, 'second request while the first script runs: queue 0 → 503')
  t.ok(refused.headers['retry-after'], 'with Retry-After')
  release()
  t.equal(await first, 'held')
})
