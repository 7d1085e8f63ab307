/**
 * CLI failures an operator meets: `serve` on a port another process holds (was "start failed" with
 * the error's stack in the log), and `status` against a server that never answers (waited forever)
 * or that is not proxycore (a JSON.parse or TypeError message). Each is one line naming the cause.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { runCli } from './run.js'

function tmp (t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pc-operator-errors-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function listen<S extends Server | HttpServer> (t: { teardown: (fn: () => Promise<void>) => void }, s: S): Promise<number> {
  const sockets = new Set<Socket>()
  s.on('connection', (c: Socket) => { sockets.add(c); c.on('close', () => sockets.delete(c)) })
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const c of sockets) c.destroy()
    await new Promise<void>((resolve) => s.close(() => resolve()))
  })
  return (s.address() as AddressInfo).port
}

const noStack = /\n\s+at |"stack"|Error: /

t.test('serve: listen address in use is one line with the address, exit 1, no stack', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const port = await listen(t, createServer())
  const file = join(tmp(t), 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:${port}\nroutes: []\n`)
  const r = await runCli(['serve', file], { PROXYCORE_LOG_FORMAT: 'json' })
  t.equal(r.code, 1)
  const lines = r.stderr.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
  const err = lines.find((l) => l.level === 50)
  t.equal(err?.msg, `cannot listen on 127.0.0.1:${port}: address already in use (another process listens there; stop it or change \`listen\`)`)
  t.equal(err?.code, 'EADDRINUSE')
  t.notMatch(r.stderr, noStack)
})

t.test('status: a server that never answers is given up after --timeout, exit 1', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const port = await listen(t, createServer(() => { /* accept, never answer */ }))
  const started = Date.now()
  const r = await runCli(['status', `127.0.0.1:${port}`, '--timeout=500ms'])
  t.equal(r.code, 1)
  t.equal(r.stderr, `proxycore status: no answer from http://127.0.0.1:${port}/server-status within 500 ms (is it proxycore? --timeout=30s waits longer)\n`)
  t.ok(Date.now() - started < 10_000, 'returned well before the default timeout')
  const bad = await runCli(['status', `127.0.0.1:${port}`, '--timeout=soon'])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /^proxycore: status: --timeout needs a duration above 0 like "10s" or "500ms": "--timeout=soon"\n/)
})

t.test('status: a server that is not proxycore is named as such, exit 1, no stack', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const port = await listen(t, createHttpServer((req, res) => {
    if (req.url?.startsWith('/html') === true) { res.setHeader('content-type', 'text/html'); res.end('<html>hello</html>'); return }
    res.setHeader('content-type', 'application/json')
    res.end('{"ok":true}')
  }))
  const html = await runCli(['status', `http://127.0.0.1:${port}/html`])
  t.equal(html.code, 1)
  t.equal(html.stderr, `proxycore status: http://127.0.0.1:${port}/html?format=json is not a proxycore status page: the answer is not JSON (content-type text/html)\n`)
  const json = await runCli(['status', `127.0.0.1:${port}`])
  t.equal(json.code, 1)
  t.equal(json.stderr, `proxycore status: http://127.0.0.1:${port}/server-status?format=json is not a proxycore status page: the JSON has no software, routes and spawns\n`)
  t.notMatch(html.stderr + json.stderr, /Unexpected token|Cannot read properties|\n\s+at /)
})
