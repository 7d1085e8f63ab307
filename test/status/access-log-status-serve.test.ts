/**
 * Requests answered by the status handler reach `proxycore serve`'s access log like any other
 * (nginx logs stub_status requests, Apache its server-status ones): the page, its JSON, HEAD,
 * /metrics, a bad `format`, and the 403s of a client outside `status.allow` — with the client
 * resolved through trustedProxies, `route=status` / `route=metrics` and no upstream. They count in
 * proxycore_responses_total under those routes (docs/reference/status.md says why).
 */
import t from 'tap'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { get } from '../helpers/servers.js'
import { serveKilled } from '../cli/run.js'
import { parseProm } from './harness.js'

const config = (dir: string, format: string): string => `listen: 127.0.0.1:0
trustedProxies: [127.0.0.1]
status: { allow: [127.0.0.1] }
accessLog: { path: access.log, format: ${format} }
routes:
  - { name: files, match: { prefix: / }, protocol: static, docroot: ${JSON.stringify(dir)} }
`

const lines = (file: string): string[] => existsSync(file) ? readFileSync(file, 'latin1').split('\n').filter((l) => l !== '') : []

/** A request through the servers.ts helper, its body as text. */
async function ask (url: string, opts: { method?: string, headers?: Record<string, string> } = {}): Promise<{ status: number, body: string }> {
  const r = await get(url, opts)
  return { status: r.status, body: r.body.toString() }
}

const STAMP = String.raw`\[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000\]`
const TAIL = (route: string, code = '-'): string => String.raw` route=${route} upstream=- upstream_status=- rt=\d+\.\d{3} uht=- code=${code}$`

t.test('serve, combined: page, JSON, HEAD, metrics, bad format and 403s each leave a line', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tempDir(t, 'pc-status-log-')
  writeFileSync(join(dir, 'hello.txt'), 'hello')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, config(dir, 'combined'))
  const log = join(dir, 'access.log')
  const { s } = await serveKilled(t, file)

  const page = await ask(`${s.url}/server-status`, { headers: { 'user-agent': 'probe/1' } })
  t.equal(page.status, 200)
  const json = await ask(`${s.url}/server-status?format=json`)
  t.equal(json.status, 200)
  t.equal((await ask(`${s.url}/server-status`, { method: 'HEAD' })).status, 200)
  const metrics = await ask(`${s.url}/metrics`)
  t.equal(metrics.status, 200)
  const bad = await ask(`${s.url}/server-status?format=xml`)
  t.equal(bad.status, 400)
  // A trusted front (the test, on 127.0.0.1) forwarding for a client outside allow: 403, logged
  // with that client, as the proxy logs it.
  const denied = await ask(`${s.url}/server-status`, { headers: { 'x-forwarded-for': '203.0.113.7', 'user-agent': 'scanner' } })
  t.equal(denied.status, 403)
  t.equal((await ask(`${s.url}/metrics`, { headers: { 'x-forwarded-for': '203.0.113.8' } })).status, 403)
  t.equal((await ask(`${s.url}/hello.txt`)).status, 200)

  t.ok(await waitFor(() => lines(log).length >= 8, 20_000), 'eight lines')
  const got = lines(log)
  t.equal(got.length, 8, got.join('\n'))
  const line = (re: string): void => {
    const found = got.some((l) => new RegExp(re).test(l))
    t.ok(found, `a line like ${re}`)
    if (!found) t.comment(got.join('\n'))
  }
  const bytes = (b: string): number => Buffer.byteLength(b)
  line(String.raw`^127\.0\.0\.1 - - ${STAMP} "GET /server-status HTTP/1\.1" 200 ${bytes(page.body)} "-" "probe/1"${TAIL('status')}`)
  line(String.raw`^127\.0\.0\.1 - - ${STAMP} "GET /server-status\?format=json HTTP/1\.1" 200 ${bytes(json.body)} "-" "-"${TAIL('status')}`)
  line(String.raw`^127\.0\.0\.1 - - ${STAMP} "HEAD /server-status HTTP/1\.1" 200 - "-" "-"${TAIL('status')}`)
  line(String.raw`^127\.0\.0\.1 - - ${STAMP} "GET /metrics HTTP/1\.1" 200 ${bytes(metrics.body)} "-" "-"${TAIL('metrics')}`)
  line(String.raw`^127\.0\.0\.1 - - ${STAMP} "GET /server-status\?format=xml HTTP/1\.1" 400 ${bytes(bad.body)} "-" "-"${TAIL('status', 'ERR_BAD_REQUEST')}`)
  line(String.raw`^203\.0\.113\.7 - - ${STAMP} "GET /server-status HTTP/1\.1" 403 14 "-" "scanner"${TAIL('status')}`)
  line(String.raw`^203\.0\.113\.8 - - ${STAMP} "GET /metrics HTTP/1\.1" 403 14 "-" "-"${TAIL('metrics')}`)
  line(String.raw`^127\.0\.0\.1 - - ${STAMP} "GET /hello\.txt HTTP/1\.1" 200 5 "-" "-" route=files `)

  // Counted like any response: the page three times, /metrics once before this scrape, a 400 and two 403s.
  const m = parseProm((await ask(`${s.url}/metrics`)).body).values
  t.equal(m.get('proxycore_responses_total{route="status",status="200"}'), 3)
  t.equal(m.get('proxycore_responses_total{route="status",status="400"}'), 1)
  t.equal(m.get('proxycore_responses_total{route="status",status="403"}'), 1)
  t.equal(m.get('proxycore_responses_total{route="metrics",status="200"}'), 1)
  t.equal(m.get('proxycore_responses_total{route="metrics",status="403"}'), 1)
  t.equal(m.get('proxycore_request_failures_total{route="status",code="ERR_BAD_REQUEST"}'), 1)
  t.equal(m.get('proxycore_responses_total{route="files",status="200"}'), 1)
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('serve, json: the same fields as a proxied request, id 0, no upstream', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = tempDir(t, 'pc-status-logj-')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, config(dir, 'json'))
  const log = join(dir, 'access.log')
  const { s } = await serveKilled(t, file)
  const json = await ask(`${s.url}/server-status?format=json`, { headers: { referer: 'http://r/', 'user-agent': 'ua' } })
  t.equal(json.status, 200)
  t.equal((await ask(`${s.url}/metrics`, { headers: { forwarded: 'for=198.51.100.2' } })).status, 200, 'forwarded header not trusted (x-forwarded-for is the header): the peer is the client')
  t.equal((await ask(`${s.url}/server-status`, { headers: { 'x-forwarded-for': '198.51.100.3, 127.0.0.1' } })).status, 403)
  t.ok(await waitFor(() => lines(log).length >= 3, 20_000), 'three lines')
  const objs = lines(log).map((l) => JSON.parse(l) as Record<string, unknown>)
  t.match(objs.find((o) => o.url === '/server-status?format=json'), {
    client: '127.0.0.1', method: 'GET', httpVersion: '1.1', status: 200, bytes: Buffer.byteLength(json.body), referer: 'http://r/', userAgent: 'ua',
    route: 'status', upstream: null, upstreamStatus: null, headMs: null, error: null, id: 0,
  })
  t.match(objs.find((o) => o.url === '/metrics'), { client: '127.0.0.1', status: 200, route: 'metrics', upstream: null })
  t.match(objs.find((o) => o.url === '/server-status'), { client: '198.51.100.3', status: 403, bytes: 14, route: 'status' }, 'resolved past the trusted hop')
  for (const o of objs) t.type(o.totalMs, 'number')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})
