/**
 * `proxycore serve` drains bounded by drainTimeout (docs/guides/operators.md, Stop): a backend that
 * holds a request forever does not hold SIGTERM — when the drain ends the client gets 503
 * ERR_SHUTTING_DOWN and proxycore exits 0, which systemd's TimeoutStopSec relies on — and a reload
 * lets the old generation's WebSockets run until its drain ends instead of dropping them at once.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import { WebSocket, WebSocketServer } from 'ws'
import { serve } from './run.js'

t.test('SIGTERM with a request held by a hung backend exits once drainTimeout ends', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-stop-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let held = 0
  const backend = createServer(() => { held++ /* never answers */ })
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { backend.closeAllConnections(); backend.close(() => resolve()) }))
  const port = (backend.address() as AddressInfo).port
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0
drainTimeout: 500ms
routes:
  - { name: app, protocol: http, backends: ['127.0.0.1:${port}'], timeouts: { headers: 10m } }
`)
  const s = await serve(file)
  t.teardown(() => { try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {} })
  const reply = new Promise<{ status: number, body: string }>((resolve, reject) => {
    const req = request(`${s.url}/hang`, { agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })
  t.ok(await waitFor(() => held === 1), 'the backend holds the request')
  s.child.kill('SIGTERM')
  let code: number | null | undefined
  void s.exited.then((c) => { code = c })
  // Generous: the drain is 500 ms; without the bound it would never exit.
  const r0 = reply.catch((err: Error) => ({ status: 0, body: err.message }))
  if (!await waitFor(() => code !== undefined, 20_000)) {
    t.fail('proxycore exited though the backend never answered')
    return
  }
  t.equal(code, 0)
  const r = await r0
  t.equal(r.status, 503)
  t.match(r.body, /ERR_SHUTTING_DOWN/)
  t.ok(await waitFor(() => processGroup(s.child.pid as number).length === 0), 'CLI process group empty')
})

t.test('a reload keeps an open WebSocket of the old generation working until its drainTimeout', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-reload-ws-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const backend = createServer((_req, res) => res.end('plain'))
  const wss = new WebSocketServer({ server: backend })
  const sockets: WebSocket[] = []
  wss.on('connection', (ws) => { sockets.push(ws); ws.on('message', (d, binary) => ws.send(d, { binary })) })
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { for (const s of sockets) s.terminate(); wss.close(); backend.closeAllConnections(); backend.close(() => resolve()) }))
  const port = (backend.address() as AddressInfo).port
  const file = join(dir, 'proxycore.yaml')
  const config = (name: string): void => writeFileSync(file, `listen: 127.0.0.1:0
drainTimeout: 2s
routes:
  - { name: ${name}, protocol: http, backends: ['127.0.0.1:${port}'] }
`)
  config('v1')
  const s = await serve(file)
  t.teardown(() => { try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {} })
  const ws = await new Promise<WebSocket>((resolve, reject) => {
    const w = new WebSocket(s.url.replace('http://', 'ws://') + '/chat')
    w.once('open', () => resolve(w))
    w.once('error', reject)
  })
  ws.on('error', () => {})
  t.teardown(() => { ws.terminate() })
  let closed = false
  ws.once('close', () => { closed = true })
  const echo = (text: string): Promise<string> => new Promise((resolve, reject) => {
    if (closed) { reject(new Error('the tunnel was closed')); return }
    ws.once('message', (d) => resolve(d.toString()))
    ws.once('close', () => reject(new Error('closed before the echo')))
    ws.send(text)
  })
  t.equal(await echo('before'), 'before')
  config('v2')
  const mark = s.logs().length
  s.child.kill('SIGHUP')
  await s.waitLog('reloaded', mark)
  t.equal(await echo('after the reload'), 'after the reload', 'the old generation\'s tunnel still carries messages')
  t.ok(await waitFor(() => closed, 20_000), 'and is closed once the old generation\'s drainTimeout ends')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processGroup(s.child.pid as number).length === 0), 'CLI process group empty')
})
