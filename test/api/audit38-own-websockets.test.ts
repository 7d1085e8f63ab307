/**
 * docs/getting-started.md, "WebSockets of your own": the snippet, taken from the markdown and run
 * from a project against the built package as a user runs it, serves both the app's own WebSocket
 * (`/chat`) and a proxied one (`/api/*`) on one server, on every Node (with and without
 * `shouldUpgradeCallback`), answers plain requests, and SIGTERM ends it (exit 0, nothing left).
 */
import t from 'tap'
import { createServer } from 'node:http'
import { readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { WebSocket, WebSocketServer } from 'ws'
import { guardLeaks } from '../helpers/leaks.js'
import { closeServer, listen } from '../helpers/servers.js'
import { ensureBuilt, root } from '../cli/run.js'
import { answering, freePort, project, run, stops, text } from '../docs/snippets.js'

const guide = readFileSync(join(root, 'docs/getting-started.md'), 'utf8')
const START = "import http from 'node:http'\nimport { WebSocketServer } from 'ws'"
const blocks = [...guide.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]).filter((b) => b.startsWith(START))

/** One message through a WebSocket, with a deadline; the socket closed either way. */
function roundTrip (url: string, message: string): Promise<string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url)
    const timer = setTimeout(() => { ws.terminate(); resolve('no answer within 10 s') }, 10_000)
    ws.on('open', () => ws.send(message))
    ws.on('message', (data) => { clearTimeout(timer); ws.close(); resolve(String(data)) })
    ws.on('unexpected-response', (_req, res) => { clearTimeout(timer); ws.terminate(); resolve(`refused ${res.statusCode ?? 0}`) })
    ws.on('error', (err) => { clearTimeout(timer); resolve(`error ${err.message}`) })
  })
}

await ensureBuilt()

t.test('the snippet: the app\'s own WebSocket and a proxied one on one server', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  t.equal(blocks.length, 1, 'one such block in getting-started.md')
  // The upstream on "3000": a WebSocket echo that says it is the upstream, and plain answers.
  const upstream = createServer((req, res) => res.end(`upstream saw ${req.url ?? ''}\n`))
  const wss = new WebSocketServer({ server: upstream })
  wss.on('connection', (ws, req) => ws.on('message', (m) => ws.send(`upstream ${req.url ?? ''}: ${String(m)}`)))
  const up = await listen(upstream)
  t.teardown(async () => { for (const ws of wss.clients) ws.terminate(); wss.close(); await closeServer(upstream) })

  const dir = project(t)
  symlinkSync(join(root, 'node_modules', 'ws'), join(dir, 'node_modules', 'ws'))
  const port = await freePort()
  writeFileSync(join(dir, 'server.mjs'), (blocks[0] ?? '').replaceAll('3000', String(up)).replaceAll('8080', String(port)))
  const r = run(t, dir, ['server.mjs'])
  const base = `http://127.0.0.1:${port}`
  await answering(`${base}/`, r)

  t.equal(await text(`${base}/`), 'served by node:http itself\n', 'a plain request falls through to the app')
  t.equal(await text(`${base}/api/x`), 'upstream saw /api/x\n', 'a plain request to /api/ is proxied')
  t.equal(await roundTrip(`ws://127.0.0.1:${port}/chat`, 'hi'), 'chat: hi', 'the app\'s own WebSocket')
  t.equal(await roundTrip(`ws://127.0.0.1:${port}/api/live`, 'hi'), 'upstream /api/live: hi', 'a proxied WebSocket')
  // Node 20: refused by proxy.upgrade; with shouldUpgradeCallback, a plain request the app answers.
  t.match(await roundTrip(`ws://127.0.0.1:${port}/elsewhere`, 'hi'), /^refused (404|200)$/, 'an Upgrade to neither: no WebSocket')
  await stops(t, r, 'SIGTERM')
})
