/**
 * docs/reference/cli.md read as a new operator, on the real CLI (`node dist/cli/main.js`), where no
 * test in test/cli/ already asserts the claim: the bare command's exit code, `check`'s output as the
 * doc prints it, the `listening` line, `proxycore status` against a proxycore that refuses (403,
 * not in `status.allow`) or a wrong path (404), and SIGINT's exit 0.
 */
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createServer as createNetServer } from 'node:net'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, listen } from '../helpers/servers.js'
import { createServer as createHttpServer } from 'node:http'
import { root, runCli, serveKilled } from '../cli/run.js'

/** The doc with its line breaks as spaces, so a claim wrapped over two lines still matches. */
const doc = readFileSync(join(root, 'docs/reference/cli.md'), 'utf8').replace(/\s*\n\s*/g, ' ')

function scratch (t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pc-cli-claims-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('proxycore without a command prints the usage on stdout and exits 2', async (t) => {
  t.match(doc, /`proxycore` without a command prints the same usage and exits 2/)
  const r = await runCli([])
  t.equal(r.code, 2)
  t.match(r.stdout, /^proxycore \S+ — /)
  t.match(r.stdout, /proxycore serve \[config\]/)
})

t.test('check prints problems as the doc shows them, and a valid config as `<file>: ok (...)`', async (t) => {
  const dir = scratch(t)
  const bad = join(dir, 'proxycore.yaml')
  writeFileSync(bad, `listen: 127.0.0.1:0
spawns:
  app: { binPath: [/bin/true], socketName: 127.0.0.1:0 }
  php: { binPath: [/bin/true], socketName: 127.0.0.1:0 }
routes:
  - { match: { prefix: /x/ }, protocol: http, spawn: ph, stripPrefx: true }
`)
  const r = await runCli(['check', bad])
  t.equal(r.code, 2)
  // The doc's two example lines, with this file's line:column.
  const lines = r.stderr.split('\n')
  t.ok(lines.some((l) => /^\S+proxycore\.yaml:\d+:\d+: \/routes\/0\/spawn: no spawn named "ph" \(expected app \| php\)$/.test(l)), r.stderr)
  t.ok(lines.some((l) => /^\S+proxycore\.yaml:\d+:\d+: \/routes\/0\/stripPrefx: unknown key "stripPrefx" \(did you mean "stripPrefix"\?\)$/.test(l)), r.stderr)
  t.match(doc, /\/routes\/0\/spawn: no spawn named "ph" \(expected app \| php\)/)
  const good = join(dir, 'good.yaml')
  writeFileSync(good, "listen: 127.0.0.1:0\nroutes:\n  - { match: { prefix: /x/ }, protocol: http, backends: ['127.0.0.1:1'] }\n")
  const ok = await runCli(['check', good])
  t.equal(ok.code, 0)
  t.equal(ok.stdout, `${good}: ok (1 route(s), 0 spawn(s), 1 file(s))\n`)
  t.equal(ok.stderr, '')
})

t.test('serve: the listening line, status refused (403) or at a wrong path (404) says why, SIGINT exits 0', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = scratch(t)
  const be = await backend(t, (_req, res) => { res.end('hello') })
  const file = join(dir, 'proxycore.yaml')
  // Status mounted, but 127.0.0.1 is not allowed: what an operator gets running `status` from a
  // host that is not in the list.
  writeFileSync(file, `listen: 127.0.0.1:0
status: { allow: [10.0.0.0/8] }
routes:
  - { name: app, match: { prefix: /app/ }, protocol: http, backends: ['${be.address}'] }
`)
  const { s } = await serveKilled(t, file)
  const listening = s.logs().filter((l) => l.msg === 'listening')
  t.equal(listening.length, 1)
  t.equal(listening[0].address, s.url, '{"msg":"listening","address":"http://127.0.0.1:<port>"}')
  t.match(s.url, /^http:\/\/127\.0\.0\.1:\d+$/)

  const refused = await runCli(['status', s.url])
  t.equal(refused.code, 1)
  t.equal(refused.stderr, `proxycore status: ${s.url}/server-status?format=json: HTTP 403 Forbidden (is this host in the server's status.allow?)\n`)
  const wrong = await runCli(['status', `${s.url}/wrong`])
  t.equal(wrong.code, 1)
  t.equal(wrong.stderr, `proxycore status: ${s.url}/wrong?format=json is not a proxycore status page: HTTP 404 (a wrong path, or no status in its config?)\n`)
  t.match(doc, /`<url> is not a proxycore status page: …`/)
  t.match(doc, /HTTP 403 Forbidden \(is this host in the server's status\.allow\?\)/)

  s.child.kill('SIGINT')
  t.equal(await s.exited, 0, 'SIGINT: drained and stopped, exit 0')
  t.ok(s.logs().some((l) => l.msg === 'stopped'))
})

/**
 * Ports the Fetch standard calls "bad" (a browser's port blocking): fetch() refuses them with
 * "bad port" before connecting, yet a proxycore may well listen on one.
 */
const FETCH_BAD_PORTS = [10080, 6000, 6665, 6666, 6667, 6668, 6669, 6697, 5060, 5061, 4190, 4045, 3659, 2049, 1719, 1720, 1723]

async function freeBadPort (): Promise<number | undefined> {
  for (const port of FETCH_BAD_PORTS) {
    const srv = createNetServer()
    const ok = await new Promise<boolean>((resolve) => { srv.once('error', () => resolve(false)); srv.listen(port, '127.0.0.1', () => resolve(true)) })
    if (ok) { await new Promise<void>((resolve) => srv.close(() => resolve())); return port }
  }
  return undefined
}

t.test('status works on any port proxycore listens on, and asks for JSON even when the URL says format=html', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const port = await freeBadPort()
  if (port === undefined) { t.comment('skipped: every candidate port is in use here'); return }
  const dir = scratch(t)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:${port}\nstatus: {}\nroutes: []\n`)
  const { s } = await serveKilled(t, file)
  t.equal(s.url, `http://127.0.0.1:${port}`)
  t.match(doc, /Any port works, including those browsers block/)
  const r = await runCli(['status', `127.0.0.1:${port}`])
  t.equal(r.code, 0, `port ${port}: ${r.stderr}`)
  t.match(r.stdout, /^proxycore\S* +up [\d.]+s/)
  // The page URL as a browser shows it, ?format=html and all: the command still gets the JSON.
  const html = await runCli(['status', `${s.url}/server-status?format=html`])
  t.equal(html.code, 0, html.stderr)
  t.match(html.stdout, /ROUTE\s+PROTOCOL/)
  // Behind a front server that redirects (http to https, a moved path): the redirect is followed.
  const front = createHttpServer((_req, res) => { res.writeHead(302, { location: `${s.url}/server-status` }); res.end() })
  const frontPort = await listen(front, t)
  const moved = await runCli(['status', `127.0.0.1:${frontPort}`])
  t.equal(moved.code, 0, moved.stderr)
  t.match(moved.stdout, /ROUTE\s+PROTOCOL/)
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})
